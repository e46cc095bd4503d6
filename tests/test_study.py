"""The deep-network study: lr selection on held-out data, pooling over seeds, the reproduction rule,
and the trained class-mean geometry against the UFM (ncmse.study, ncmse.mean_geometry)."""

import math

import pytest
import torch
from offline_data import DATA_ROOT
from offline_data import needs_fashion as needs_data

import ncmse.data
import ncmse.study as study
from ncmse import etf, minimizers, stats, variants
from ncmse.cache import ResultsCache
from ncmse.config import RunConfig
from ncmse.mean_geometry import class_mean_geometry
from ncmse.profiles import d_grid, profile_config, study_settings
from ncmse.ufm import UFM
from ncmse.variants import CE, MSE, Variant


def test_rescaled_variants_are_the_papers_sweeps():
    vs = variants.rescaled_variants()
    assert vs[0] == MSE and len(vs) == 8 and len(set(vs)) == 8
    assert {(v.alpha, v.M) for v in vs} == {(1, 1), (5, 1), (15, 1), (20, 1), (1, 3), (1, 5), (1, 7), (1, 10)}
    assert Variant("rmse", 5.0, 1.0).label == "RMSE α=5, M=1" and CE.label == "CE"
    c = Variant("rmse", 5.0, 1.0).config(profile_config("smoke"), d=3)
    assert (c.loss, c.alpha, c.M, c.d) == ("rmse", 5.0, 1.0, 3) and Variant.of(c) == Variant("rmse", 5.0, 1.0)


def _fake(variant, d, lr=0.1, seed=0, test=0.5, train=0.9, live=None, where="test", relu=True):
    return {"config": {"loss": variant.loss, "alpha": variant.alpha, "M": variant.M, "d": d, "lr": lr,
                       "seed": seed, "feature_relu": relu},
            "test": {"accuracy": test}, "train": {"accuracy": train, "live_units": d if live is None else live},
            "evaluated_on": where}


def test_lr_rule_best_heldout_accuracy_per_side_ties_to_smaller(monkeypatch):
    table = {(MSE, 0.01): (0.60, 0.80), (MSE, 0.1): (0.50, 0.85), (MSE, 1.0): (0.40, 0.90),
             (CE, 0.01): (0.70, 0.70), (CE, 0.1): (0.80, 0.80), (CE, 1.0): (0.80, 0.70)}   # acc at d=2, d=16

    def fake_sweep(configs, **kw):
        assert all(c.holdout_per_class == 7 and c.test_per_class is None and c.nc_epochs == () for c in configs)
        return [_fake(Variant.of(c), c.d, c.lr, test=table[(Variant.of(c), c.lr)][c.d == 16], where="holdout")
                for c in configs]

    monkeypatch.setattr(study, "sweep", fake_sweep)
    choice = study.tune_lr(profile_config("smoke"), [MSE, CE], lrs=(1.0, 0.1, 0.01), ds=(2, 16),
                           holdout_per_class=7)
    assert choice[MSE].by_d == {2: 0.01, 16: 1.0} and choice[MSE].edge == (2, 16)
    assert choice[CE].by_d == {2: 0.1, 16: 0.1} and choice[CE].edge == ()       # tie at d=2 → 0.1 < 1.0
    assert math.isclose(choice[MSE].scores[16][0.1], 0.85) and all(c.tuned for c in choice.values())
    assert math.isclose(choice[MSE].edge_margin(2), 0.10) and math.isclose(choice[MSE].edge_margin(16), 0.05)
    assert choice[CE].edge_margin(2) == 0.0
    # a run uses the lr of its side of K−1 = 9
    assert [choice[MSE].lr(d, 10) for d in (1, 4, 8, 9, 10, 512)] == [0.01, 0.01, 0.01, 1.0, 1.0, 1.0]
    runs = study.configs(profile_config("smoke"), choice, [MSE, CE], ds=(4, 64), seeds=(0, 1))
    assert [(c.loss, c.d, c.seed, c.lr) for c in runs[:4]] == [("mse", 4, 0, 0.01), ("mse", 4, 1, 0.01),
                                                                ("mse", 64, 0, 1.0), ("mse", 64, 1, 1.0)]
    fixed = study.tune_lr(profile_config("smoke"), [MSE], lrs=(0.05,), ds=(), holdout_per_class=None)
    assert fixed[MSE].lr(5, 10) == fixed[MSE].lr(512, 10) == 0.05 and not fixed[MSE].tuned
    with pytest.raises(ValueError, match="holdout"):
        study.tune_lr(profile_config("smoke"), [MSE], lrs=(0.05, 0.1), ds=(4,), holdout_per_class=None)
    monkeypatch.setattr(study, "sweep", lambda configs, **kw: [_fake(MSE, c.d, c.lr) for c in configs])
    with pytest.raises(RuntimeError, match="held-out"):
        study.tune_lr(profile_config("smoke"), [MSE], lrs=(0.05, 0.1), ds=(4,), holdout_per_class=3)


def test_pick_rescaled():
    a, b = Variant("rmse", 5.0, 1.0), Variant("rmse", 1.0, 3.0)
    choices = {MSE: study.LRChoice(MSE, {4: 0.1}, {4: {0.1: 0.99}}, (), True),
               a: study.LRChoice(a, {4: 0.3, 16: 0.1}, {4: {0.1: 0.9, 0.3: 0.6}, 16: {0.1: 0.9, 0.3: 0.8}},
                                 (), True),
               b: study.LRChoice(b, {4: 0.3, 16: 0.3}, {4: {0.1: 0.5, 0.3: 0.7}, 16: {0.1: 0.5, 0.3: 0.7}},
                                 (), True)}
    assert study.pick_rescaled(choices) == b     # 0.7 at its chosen lr at d=4 beats 0.6; MSE is not rescaled
    assert study.pick_rescaled(choices, fixed=(1, 5)) == Variant("rmse", 1.0, 5.0)
    with pytest.raises(ValueError, match="fixed"):
        study.pick_rescaled({MSE: choices[MSE]})


def test_pooling_comparison_and_verdict():
    res = []
    for seed, noise in enumerate((-0.01, 0.0, 0.01)):
        for d, mse, ce in ((2, 0.40, 0.84), (9, 0.86, 0.865), (64, 0.865, 0.86)):
            res += [_fake(MSE, d, seed=seed, test=mse + noise), _fake(CE, d, seed=seed, test=ce - noise)]
    pooled = stats.pool_seeds(res)
    row = next(r for r in pooled if r["variant"] == MSE and r["d"] == 2)
    assert row["n"] == 3 and row["seeds"] == [0, 1, 2]
    assert math.isclose(row["test_mean"], 0.40) and math.isclose(row["test_std"], 0.01)
    comp = stats.compare(pooled, MSE, CE, K=10)
    assert [r["d"] for r in comp] == [2, 9, 64] and [r["below"] for r in comp] == [True, False, False]
    assert comp[0]["clear"] and math.isclose(comp[0]["gap"], 0.44)
    assert not comp[1]["clear"] and not comp[2]["clear"]
    v = stats.verdict(comp)
    assert v.reproduced and v.sentence("MSE", "CE").startswith("reproduced")
    # MSE clearly ahead at d ≥ K−1 does not contradict the claim ("MSE is not worse there") …
    better = [_fake(MSE, 64, seed=s, test=0.95) for s in range(3)] + \
        [r for r in res if not (r["config"]["loss"] == "mse" and r["config"]["d"] == 64)]
    assert stats.verdict(stats.compare(stats.pool_seeds(better), MSE, CE, K=10)).reproduced
    # … CE clearly ahead there breaks it
    res.append(_fake(CE, 64, seed=3, test=0.99))
    res = [r for r in res if not (r["config"]["loss"] == "ce" and r["config"]["d"] == 64 and r["config"]["seed"] < 3)]
    res += [_fake(CE, 64, seed=s, test=0.99) for s in range(3)]
    v = stats.verdict(stats.compare(stats.pool_seeds(res), MSE, CE, K=10))
    assert v.below and not v.above and v.sentence("MSE", "CE").startswith("not reproduced")
    with pytest.raises(ValueError, match="both sides"):
        stats.verdict([r for r in comp if r["below"]])


def test_recovery_levels():
    R = Variant("rmse", 5.0, 1.0)

    def pooled(rmse_acc):
        res = []
        for seed, noise in enumerate((-0.01, 0.0, 0.01)):
            res += [_fake(MSE, 4, seed=seed, test=0.60 + noise), _fake(CE, 4, seed=seed, test=0.85 + noise),
                    _fake(R, 4, seed=seed, test=rmse_acc + noise)]
        return stats.pool_seeds(res)

    assert stats.recovery(pooled(0.605), R, d=4, K=10) == "does not recover"
    assert stats.recovery(pooled(0.75), R, d=4, K=10) == "partly recovers"
    assert stats.recovery(pooled(0.845), R, d=4, K=10) == "recovers"
    with pytest.raises(ValueError, match="d = 16"):
        stats.recovery(pooled(0.7), R, d=16, K=10)


def test_history_band():
    runs = [{"history": [{"epoch": 1, "NC1": 2.0}, {"epoch": 2}, {"epoch": 3, "NC1": 1.0}]},
            {"history": [{"epoch": 1, "NC1": 4.0}, {"epoch": 2, "NC1": 3.0}, {"epoch": 3, "NC1": 0.5}]}]
    assert stats.history_band(runs, "NC1") == ([1, 3], [3.0, 0.75], [2.0, 0.5], [4.0, 1.0])


def _result_from_ufm(K, d, S=None, seed=0):
    ufm = UFM(K=K, n=3, d=d, lambda_W=5e-4, lambda_H=5e-4)
    W, H, b = minimizers.global_minimizer(ufm, S=S)
    mu = H.reshape(d, K, 3).mean(2).T                                    # class means (K, d)
    shift = torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    logits = W @ mu.T + b[:, None]
    own = (logits.argmax(0) == torch.arange(K)).double()
    return {"train": {"class_means": (mu + shift).tolist(), "global_mean": (mu.mean(0) + shift).tolist(),
                      "per_class_accuracy": own.tolist()},
            "test": {"per_class_accuracy": own.tolist()},
            "W": W.tolist(), "b": (b - W @ shift).tolist()}


def test_geometry_of_the_ufm_minimizer_is_its_own_prediction():
    K, d = 10, 3
    S = etf.random_subspace(K, d, generator=torch.Generator().manual_seed(5))
    g = class_mean_geometry(_result_from_ufm(K, d, S))
    assert torch.allclose(g["eigenvalues"], torch.ones(d, dtype=torch.float64), atol=1e-10)
    assert g["projector_error"] < 1e-10
    assert torch.allclose(g["P_S"], S @ S.T, atol=1e-10)
    assert torch.allclose(g["lengths"], g["lengths_ufm"], atol=1e-10)
    assert torch.allclose(g["cosines"], g["cosines_ufm"], atol=1e-10)
    assert torch.equal(g["lost"], g["lost_ufm"]) and bool(g["lost_ufm"].any())
    assert torch.equal(g["train_accuracy"] == 0, g["lost"])
    # at d ≥ K−1 the prediction is the simplex ETF: equal lengths, cosines −1/(K−1), nothing lost
    e = class_mean_geometry(_result_from_ufm(K, 12))
    assert torch.allclose(e["lengths_ufm"], torch.ones(K, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(e["cosines"], torch.full_like(e["cosines"], -1 / (K - 1)), atol=1e-10)
    assert not bool(e["lost"].any()) and e["projector_error"] < 1e-10


def test_geometry_detects_a_non_projector_and_dead_units():
    r = _result_from_ufm(6, 2)
    mu = torch.tensor(r["train"]["class_means"])
    mu[:, 0] *= 3.0                                                      # unequal eigenvalues
    r["train"]["class_means"] = mu.tolist()
    r["train"]["global_mean"] = mu.mean(0).tolist()
    g = class_mean_geometry(r)
    assert g["projector_error"] > 0.1 and float(g["eigenvalues"].max() / g["eigenvalues"].min()) > 5
    mu[:, 1] = 0.0                                                       # a dead unit: rank 1 < min(d, K−1)
    r["train"]["class_means"], r["train"]["global_mean"] = mu.tolist(), mu.mean(0).tolist()
    with pytest.raises(ValueError, match="dead"):
        class_mean_geometry(r)


@needs_data
def test_tuning_trains_on_heldout_training_images_and_never_loads_the_test_split(tmp_path, monkeypatch):
    real = ncmse.data.load_dataset

    def guarded(name, split, **kw):
        assert split == "train", "the test split was loaded while tuning"
        return real(name, split, **kw)

    monkeypatch.setattr("ncmse.train.load_dataset", guarded)
    base = profile_config("smoke")
    choice = study.tune_lr(base, [MSE], lrs=(0.01, 0.1), ds=(4,), holdout_per_class=10,
                           cache=ResultsCache(tmp_path / "results"), progress=False, data_root=DATA_ROOT)
    assert choice[MSE].tuned and set(choice[MSE].scores[4]) == {0.01, 0.1}
    cached = [p for p in (tmp_path / "results").glob("*.json")]
    assert len(cached) == 2


@needs_data
def test_run_study_second_call_trains_nothing(tmp_path):
    kw = dict(cache=ResultsCache(tmp_path / "results"), progress=False, data_root=DATA_ROOT, grid=(4, 16),
              overrides={"seeds": (0,), "alphas": (1, 5), "Ms": (1,), "lrs": (0.03, 0.1)})
    R = study.run_study("smoke", **kw)
    assert R.rescaled == [Variant("rmse", 5.0, 1.0)] and R.rmse == R.rescaled[0]
    assert len(R.runs) == 6 and len(R.rescaled_runs) == 2 and len(R.linear_runs) == 4
    unique = {RunConfig.from_dict(r["config"]).key() for r in R.all_runs}
    assert sum(not r["cached"] for r in R.all_runs) == len(unique) == 10    # the d-sweep's RMSE is reused
    for r in R.all_runs:
        c = r["config"]
        assert c["lr"] == R.choices[Variant.of(c)].lr(c["d"], R.K) and r["evaluated_on"] == "test"
    assert all(not r["config"]["feature_relu"] for r in R.linear_runs)
    # NC curves only where the chapter draws them: the d-sweep's losses at nc_ds, not the linear runs
    first_epoch = {r["config"]["feature_relu"]: r["history"][0] for r in R.all_runs}
    assert "NC1" in first_epoch[True] and "NC1" not in first_epoch[False]
    assert all("NC1" in r["history"][-1] for r in R.all_runs)          # every run measures NC at its end
    n_files = len(list((tmp_path / "results").glob("*.json")))
    again = study.run_study("smoke", **kw)
    assert all(r["cached"] for r in again.all_runs)
    assert len(list((tmp_path / "results").glob("*.json"))) == n_files        # tuning runs were cached too
    assert [r["test"]["accuracy"] for r in again.all_runs] == [r["test"]["accuracy"] for r in R.all_runs]


def test_curves_only_where_drawn_keeps_training_and_drops_intermediate_nc():
    base = profile_config("cpu")
    assert base.nc_epochs
    rmse = Variant("rmse", 5.0, 1.0)
    keep = dict(nc_ds=(4, 16), variants=(MSE, CE, rmse))
    assert study.curves_only_where_drawn(base.replace(d=4), **keep) == base.replace(d=4)
    assert study.curves_only_where_drawn(rmse.config(base, d=16), **keep).nc_epochs == base.nc_epochs
    others = (base.replace(d=9), base.replace(d=4, feature_relu=False), Variant("rmse", 1.0, 3.0).config(base, d=4))
    for other in others:
        got = study.curves_only_where_drawn(other, **keep)
        assert got.nc_epochs == () and got.replace(nc_epochs=base.nc_epochs) == other


def test_a_study_without_the_feature_relu_compares_and_draws_its_own_runs():
    """The long CIFAR-10 study's base run has linear features: its runs are compared with each other and
    keep their NC curves, while a pool of both kinds must say which one it compares."""
    linear = [_fake(v, d, seed=s, test=t + 0.01 * s, relu=False) for v, t in ((MSE, 0.4), (CE, 0.6))
              for d in (4, 16) for s in range(2)]
    comp = stats.compare(stats.pool_seeds(linear), MSE, CE, K=10)
    assert [(r["d"], r["clear"]) for r in comp] == [(4, True), (16, True)]
    both = stats.pool_seeds(linear + [_fake(v, 4, seed=s, relu=True) for v in (MSE, CE) for s in range(2)])
    with pytest.raises(ValueError, match="feature_relu="):
        stats.compare(both, MSE, CE, K=10)
    assert [r["d"] for r in stats.compare(both, MSE, CE, K=10, feature_relu=True)] == [4]
    assert [r["d"] for r in stats.compare(both, MSE, CE, K=10, feature_relu=False)] == [4, 16]
    base = profile_config("cpu").replace(feature_relu=False)
    keep = dict(nc_ds=(4, 16), variants=(MSE, CE), feature_relu=False)
    assert study.curves_only_where_drawn(base.replace(d=4), **keep).nc_epochs == base.nc_epochs
    assert study.curves_only_where_drawn(base.replace(d=4, feature_relu=True), **keep).nc_epochs == ()


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_deep_settings_are_consistent(profile):
    S, grid, K = study_settings(profile), d_grid(profile), 10
    assert set(S["rescaled_ds"]) <= set(grid) and set(S["nc_ds"]) <= set(grid)
    for ds in (S["rescaled_ds"], S["nc_ds"], grid):
        assert min(ds) < K - 1 <= max(ds)                  # both sides of K − 1
    assert S["geometry_d"] in grid and S["geometry_d"] < K - 1
    if len(S["lrs"]) > 1:                                  # tuned: one dimension on each side, held-out images
        assert min(S["tune_ds"]) < K - 1 <= max(S["tune_ds"]) and S["holdout_per_class"]
    if S["sweep_rescaled"] is not None:
        assert Variant("rmse", *map(float, S["sweep_rescaled"])) in variants.rescaled_variants(S["alphas"], S["Ms"])
    if profile == "paper":                                 # the paper's settings, untuned
        assert S["lrs"] == (0.05,) and tuple(S["alphas"]) == (1, 5, 15, 20) and tuple(S["Ms"]) == (1, 3, 5, 7, 10)
        assert S["seeds"][0] == profile_config("paper").seed == 6


def test_successive_halving_keeps_the_best_at_the_rung_and_picks_among_them(monkeypatch):
    """Every candidate stops at the rung (stop_epoch) and is scored there; the `keep` best per loss and
    tuning d train to the end, and the rule picks among those only."""
    at_rung = {0.01: 0.70, 0.03: 0.75, 0.1: 0.74, 0.3: 0.20}        # held-out accuracy at the rung
    at_end = {0.03: 0.80, 0.1: 0.82}                                # of the two kept rates
    calls = []

    def fake_sweep(configs, **kw):
        calls.append(configs)
        if all(c.stop_epoch == 5 for c in configs):
            assert all(c.nc_epochs == (5,) for c in configs)
            return [_fake(Variant.of(c), c.d, c.lr, test=at_rung[c.lr], where="holdout") for c in configs]
        assert all(c.stop_epoch is None and c.nc_epochs == (5,) for c in configs)
        return [_fake(Variant.of(c), c.d, c.lr, test=at_end[c.lr], where="holdout") for c in configs]

    monkeypatch.setattr(study, "sweep", fake_sweep)
    base = profile_config("cpu")
    choice = study.tune_lr(base, [MSE, CE], lrs=(0.01, 0.03, 0.1, 0.3), ds=(4, 16), holdout_per_class=7,
                           halving=(5, 2))
    assert [len(c) for c in calls] == [16, 8]                        # 2 losses × 2 d × 4 rates, then 2 kept each
    assert {c.lr for c in calls[1]} == {0.03, 0.1}
    assert choice[MSE].by_d == {4: 0.1, 16: 0.1} and choice[MSE].rung == 5
    assert set(choice[MSE].scores[4]) == {0.03, 0.1} and choice[MSE].early[4][0.3] == 0.20
    assert choice[MSE].edge == () and math.isclose(choice[MSE].edge_margin(4), 0.0)
    # the plan counts what the smoke profile's halving (rung 1 of 2 epochs, keep 1 of 2 rates) trains
    p = study.plan("smoke")
    assert p.kept == p.tuning // 2 and p.tuning_epochs == p.tuning * 1 + p.kept * 1
    assert p.image_epochs < p.runs * p.epochs * p.images and p.trainings == p.test + p.tuning + p.kept


def test_stop_epoch_is_a_prefix_of_its_schedule():
    c = profile_config("cpu").replace(stop_epoch=5)
    assert c.last_epoch == 5 and c.full_schedule() == profile_config("cpu") and c.key() != c.full_schedule().key()
    assert "stop_epoch" not in profile_config("cpu").to_dict()      # the keys of every other run are unchanged
    assert RunConfig.from_dict(c.to_dict()) == c
    for bad in (0, 15, 20, "5x"):
        with pytest.raises(ValueError, match="stop_epoch"):
            profile_config("cpu").replace(stop_epoch=bad)
    cache = ResultsCache("/nonexistent")
    assert cache.checkpoint_path(c) == cache.checkpoint_path(c.full_schedule())
    assert cache.lock_path(c) == cache.lock_path(c.full_schedule())


@needs_data
def test_a_stopped_run_resumes_into_its_full_schedule_exactly(tmp_path):
    from ncmse.cache import run
    from ncmse.train import train

    full = profile_config("smoke", d=4, epochs=3, n_per_class=16, test_per_class=8, nc_epochs=(1,))
    cache = ResultsCache(tmp_path / "results")
    stopped = run(full.replace(stop_epoch=1), cache=cache, progress=False, data_root=DATA_ROOT)
    assert len(stopped["history"]) == 1 and "NC1" in stopped["history"][0] and stopped["complete"]
    assert cache.checkpoint_path(full).exists()                       # kept for the full schedule
    resumed = run(full, cache=cache, progress=False, data_root=DATA_ROOT)
    assert resumed["provenance"]["resumed_at_epoch"] == 1 and not cache.checkpoint_path(full).exists()
    straight = train(full, device="cpu", progress=False, data_root=DATA_ROOT)
    assert resumed["W"] == straight["W"] and resumed["test"] == straight["test"]
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in straight["history"]]

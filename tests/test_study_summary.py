"""The chapter "Deep networks"'s numbers and sentences (ncmse.summary.StudySummary, ncmse.mean_geometry.
GeometrySummary), on small fake results shaped like those of ncmse.cache.run."""

import json
import math

import pytest
import torch

from ncmse import costs, etf
from ncmse.mean_geometry import GeometrySummary, class_mean_geometry
from ncmse.profiles import profile_config, study_settings
from ncmse.study import LRChoice, StudyResults
from ncmse.variants import CE, MSE, Variant

K = 10
A = Variant("rmse", 5.0, 1.0)          # the rescaled MSE carried through the d-sweep
B = Variant("rmse", 1.0, 3.0)
NOISE = (-0.01, 0.0, 0.01)             # per seed: a standard deviation of 0.01 over three seeds
CLASSES = [f"class {k}" for k in range(K)]


def _geometry(d, seed, *, scale=None, flip=False, dead=False, lost_test=0.2, kept_test=0.9):
    """Class means 3·S·diag(scale) + shift for a random subspace S (K, d) of 1^⊥, and a classifier
    W = ±S·diag(1/scale) whose class-mean logits are ±3·P_S (−: ``flip``): the network loses exactly the
    classes the UFM predicts unless flipped.  Per-class test accuracy: ``lost_test`` where the UFM
    predicts a loss, else ``kept_test``."""
    S = etf.random_subspace(K, d, generator=torch.Generator().manual_seed(100 + seed))
    mu = 3 * S * torch.tensor(scale or [1.0] * d, dtype=torch.float64)
    if dead:
        mu[:, 0] = 0.0
    shift = torch.linspace(-1, 1, d, dtype=torch.float64)
    W = S / torch.tensor(scale or [1.0] * d, dtype=torch.float64) * (-1 if flip else 1)
    lost_ufm = etf.argmax_lost(S @ S.T)
    per_class = torch.where(lost_ufm, torch.tensor(lost_test, dtype=torch.float64),
                            torch.tensor(kept_test, dtype=torch.float64))
    return {"train": {"class_means": (mu + shift).tolist(), "global_mean": (mu.mean(0) + shift).tolist(),
                      "per_class_accuracy": (~lost_ufm).double().tolist()},
            "test": {"per_class_accuracy": per_class.tolist()},
            "W": W.tolist(), "b": (-(W @ shift)).tolist()}


def _run(v, d, seed, *, test, train=0.9, live=None, relu=True, nc1=0.4, nc2=0.5, cached=True, geometry=None):
    c = v.config(profile_config("smoke"), d=d, seed=seed, lr=0.1, feature_relu=relu)
    r = {"config": c.to_dict(), "evaluated_on": "test", "cached": cached, "data_source": "Fake-MNIST",
         "classes": CLASSES, "provenance": {"wall_seconds": 60.0, "machine": "fake machine"},
         "test": {"accuracy": test}, "train": {"accuracy": train, "live_units": d if live is None else live},
         "history": [{"epoch": 1, "NC1": 2.0, "NC2": 1.0},
                     {"epoch": 2, "NC1": nc1 + 0.1 * seed, "NC2": nc2 + 0.01 * seed}]}
    if geometry is not None:
        for part in ("train", "test"):
            r[part] = {**r[part], **geometry[part]}
        r["W"], r["b"] = geometry["W"], geometry["b"]
    return r


def _choice(v, scores):
    """An LRChoice by the rule of tune_lr: best score, ties → smaller lr; edge: winner at an end of the grid."""
    lrs = sorted(next(iter(scores.values())))
    by_d = {d: max(lrs, key=lambda lr: (s[lr], -lr)) for d, s in scores.items()}
    return LRChoice(v, by_d, scores, tuple(d for d in scores if by_d[d] in (lrs[0], lrs[-1])), True)


INNER = {4: {0.01: 0.5, 0.03: 0.6, 0.1: 0.55}, 16: {0.01: 0.8, 0.03: 0.9, 0.1: 0.85}}

TEST = {(MSE, 4): 0.60, (CE, 4): 0.85, (A, 4): 0.80, (B, 4): 0.84,
        (MSE, 9): 0.88, (CE, 9): 0.885, (A, 9): 0.88,
        (MSE, 16): 0.90, (CE, 16): 0.89, (A, 16): 0.895, (B, 16): 0.90}
TRAIN = {(MSE, 4): 0.70, (MSE, 9): 0.97, (MSE, 16): 0.99}


def _results(*, choices=None, test=None, settings=None, grid=(4, 9, 16)):
    test = {**TEST, **(test or {})}
    S = {**study_settings("smoke"), "seeds": (0, 1, 2), **(settings or {})}
    choices = choices or {v: _choice(v, INNER) for v in (MSE, CE, A, B)}

    def one(v, d, s, **kw):
        geometry = None
        if d == S["geometry_d"] and v in (MSE, CE) and kw.get("relu", True):
            geometry = _geometry(d, s, dead=(v == CE and s == 2))     # CE seed 2: a dead feature unit
        nc1 = 0.9 if (v, d) == (CE, 16) else 0.4
        nc2 = {MSE: 0.5, CE: 0.3}.get(v, 0.4)
        return _run(v, d, s, train=TRAIN.get((v, d), 0.95), live=d - 1 if v == MSE else d, nc1=nc1, nc2=nc2,
                    cached=not ((v, d) in ((MSE, 16), (A, 16)) and kw.get("relu", True)), geometry=geometry, **kw)

    runs = [one(v, d, s, test=test[(v, d)] + NOISE[s]) for v in (MSE, CE, A) for d in grid for s in range(3)]
    # the d-sweep's A at d = 4 is listed again with another accuracy: the d-sweep's rows must win
    rescaled_runs = [one(v, d, s, test=(0.70 if v == A and d == 4 else test[(v, d)]) + NOISE[s])
                     for v in (A, B) for d in S["rescaled_ds"] for s in range(3)]
    linear_runs = [one(v, d, 0, test={MSE: 0.5, CE: 0.8}[v] if d == 4 else 0.9, relu=False)
                   for v in (MSE, CE) for d in grid]
    for r in linear_runs:
        r["train"]["live_units"] = r["config"]["d"] - (1 if r["config"]["loss"] == "mse" and r["config"]["d"] == 4
                                                       else 0)
    return StudyResults("smoke", S, profile_config("smoke"), K, tuple(grid), choices, [A, B], A, runs,
                        rescaled_runs, linear_runs)


@pytest.fixture(scope="module")
def summary():
    return _results().summary()


# ------------------------------------------------------------------ learning rates


def test_tuning_table_marks_the_grid_edge_and_says_when_nothing_was_tuned():
    choices = {MSE: _choice(MSE, {4: INNER[4], 16: {0.01: 0.8, 0.03: 0.85, 0.1: 0.87}}),
               **{v: _choice(v, INNER) for v in (CE, A, B)}}
    table = _results(choices=choices).summary().tuning_table().splitlines()
    assert table[0] == "| loss | d | lr 0.01 | lr 0.03 | lr 0.1 | chosen | at grid edge |"
    assert len(table) == 2 + 4 * 2                                    # every variant at every tuning d
    assert table[2:4] == ["| MSE | 4 | 0.500 | 0.600 | 0.550 | 0.03 |  |",
                          "| MSE | 16 | 0.800 | 0.850 | 0.870 | 0.1 | yes |"]
    untuned = {v: LRChoice(v, {0: 0.05}, {}, (), False) for v in (MSE, CE, A, B)}
    s = _results(choices=untuned).summary()
    assert s.tuning_table() == "No tuning at this profile: every loss uses lr = 0.05."
    assert s.edge_note() == ""


def test_edge_note_branches():
    def note(mse16, ce16=None, lrs3=True):
        choices = {MSE: _choice(MSE, {4: INNER[4], 16: mse16}), CE: _choice(CE, {4: INNER[4], 16: ce16 or INNER[16]}),
                   A: _choice(A, INNER), B: _choice(B, INNER)}
        if not lrs3:
            choices = {v: _choice(v, {d: {lr: x for lr, x in s.items() if lr != 0.03} for d, s in c.scores.items()})
                       for v, c in choices.items()}
        return _results(choices=choices).summary().edge_note()

    assert note(INNER[16]) == "No chosen rate sits at the edge of the grid."
    # the worst case over the edges is the largest margin over the best inner rate: MSE's 0.02, not CE's 0.005
    assert note({0.01: 0.8, 0.03: 0.85, 0.1: 0.87}, {0.01: 0.885, 0.03: 0.88, 0.1: 0.85}) == (
        "In 2 of 8 cases the chosen rate sits at the edge of the grid (marked); there it beats the best rate inside "
        "the grid by at most 0.020 in held-out accuracy (MSE at d = 16), so a wider grid might do better there.")
    assert note({0.01: 0.8, 0.03: 0.85, 0.1: 0.855}).endswith("by at most 0.005 in held-out accuracy (MSE at d = 16), "
                                                              "so a wider grid would change little.")
    two = note(INNER[16], lrs3=False)                   # two rates: every winner is at an edge
    assert two == ("In 8 of 8 cases the chosen rate sits at the edge of the grid (marked), which has only 2 rates "
                   "at this profile.")


def test_rmse_rule_names_where_the_rescaled_loss_came_from(summary):
    assert summary.rmse_rule() == "it had the best held-out accuracy below K − 1 among the rescaled losses"
    assert _results(settings={"sweep_rescaled": (5, 1)}).summary().rmse_rule() == "the profile names it"


# ------------------------------------------------------------------ accuracy against d


def test_sweep_comparison_verdict_and_table(summary):
    assert summary.title == "Fake-MNIST, mlp, profile smoke" and summary.classes == CLASSES
    row = summary.sweep[(MSE, 4)]
    assert row["n"] == 3 and math.isclose(row["test_mean"], 0.60) and math.isclose(row["test_std"], 0.01)
    assert set(summary.sweep) == {(v, d) for v in (MSE, CE, A) for d in (4, 9, 16)}
    assert [r["d"] for r in summary.comparison] == [4, 9, 16]
    assert [r["clear"] for r in summary.comparison] == [True, False, False]
    assert summary.verdict.reproduced
    table = summary.comparison_table().splitlines()
    assert len(table) == 5 and table[2] == "| 4 | yes | 0.600 | 0.850 | +0.250 | 0.008 | yes |"
    assert table[4].startswith("| 16 | no | 0.900 | 0.890 | -0.010 |")
    # MSE's lowest training accuracy at d ≥ K − 1 = 9: d = 9 (0.97), not d = 4 (0.70)
    assert math.isclose(summary.train_floor_above(MSE), 0.97)


def test_ufm_kept_draws_one_generator_along_the_grid():
    def kept(grid):           # only K and the grid matter
        return StudyResults("smoke", {}, profile_config("smoke"), K, grid, {}, [], A, [], [], []).summary().ufm_kept

    k = kept((4, 9, 16))
    gen = torch.Generator().manual_seed(0)
    assert k[9] == k[16] == 1.0 and 0 < k[4] < 1
    assert k[4] == 1.0 - float(etf.random_projection_lost(K, 4, 4000, generator=gen).float().mean())
    gen = torch.Generator().manual_seed(0)
    etf.random_projection_lost(K, 2, 4000, generator=gen)                    # d = 2 draws first
    assert kept((2, 4, 16))[4] == 1.0 - float(etf.random_projection_lost(K, 4, 4000, generator=gen).float().mean())


# ------------------------------------------------------------------ neural collapse


def test_nc_summary(summary):
    assert len(summary.seed_runs(CE, 16)) == 3 and {r["config"]["seed"] for r in summary.seed_runs(CE, 16)} == {0, 1, 2}
    ep, mean, lo, hi = summary.nc_band(MSE, 4, "NC1")
    assert ep == [1, 2] and math.isclose(mean[1], 0.5) and math.isclose(lo[1], 0.4) and math.isclose(hi[1], 0.6)
    nc = summary.nc()
    assert nc.d_below == 4 and set(nc.drop) == {(v, d) for v in (MSE, CE, A) for d in (4, 16)}
    assert math.isclose(nc.drop[(MSE, 4)], 0.25) and math.isclose(nc.drop_max, 0.5)       # CE at 16: 1.0 / 2.0
    assert math.isclose(nc.nc2_below_min, 0.31)                                             # CE: 0.3 + mean 0.01
    assert nc.nc2_floor == etf.projected_nc2(4, K)


def test_projected_etf_nc2():
    assert math.isclose(etf.projected_nc2(4, 10), math.sqrt(2 - 2 * 2 / 3))
    assert etf.projected_nc2(9, 10) == 0.0
    for d in (0, 10):
        with pytest.raises(ValueError, match="d="):
            etf.projected_nc2(d, 10)


# ------------------------------------------------------------------ class-mean geometry


def test_geometry_summary_counts_and_means():
    runs = [{**_geometry(4, 0), "config": {"seed": 0}, "test": {**_geometry(4, 0)["test"], "accuracy": 0.7}},
            {**_geometry(4, 1, scale=[2, 1, 1, 1]), "config": {"seed": 1}},
            {**_geometry(4, 2, flip=True), "config": {"seed": 2}},
            {"config": {"seed": 3}, "diverged": True}]
    for r in runs[1:3]:
        r["test"] = {**r["test"], "accuracy": 0.6}
    g = GeometrySummary.of(runs)
    assert g.n == 3 and g.n_class_runs == 3 * K and g.skipped == [(3, "the run diverged")]
    lost = [etf.argmax_lost(class_mean_geometry(r)["P_S"]) for r in runs[:3]]
    assert g.n_lost == sum(int(x.sum()) for x in lost) > 0 and g.n_kept == 3 * K - g.n_lost
    assert math.isclose(g.lost_accuracy, 0.2) and math.isclose(g.kept_accuracy, 0.9)
    # the flipped classifier loses other classes than the UFM predicts: agreement below 1, as counted
    flipped = class_mean_geometry(runs[2])
    assert int((flipped["lost"] == flipped["lost_ufm"]).sum()) < K
    assert math.isclose(g.agreement, (2 * K + int((flipped["lost"] == flipped["lost_ufm"]).sum())) / (3 * K))
    assert g.n_lost_network == int(lost[0].sum() + lost[1].sum() + flipped["lost"].sum())
    # eigenvalues: equal (ratio 1) except the run with one direction scaled by 2 (ratio 4)
    assert math.isclose(g.eigenvalue_ratio, (1 + 4 + 1) / 3, rel_tol=1e-9)
    assert g.projector_error > 0.1 and class_mean_geometry(runs[0])["projector_error"] < 1e-10
    assert torch.equal(g.predicted_lost_counts, torch.stack(lost).sum(0))
    assert g.test_accuracy.shape == (3, K)
    rows = g.table_rows("MSE", CLASSES)
    assert len(rows) == 4 and rows[0][:2] == ("MSE", 0) and rows[0][5] == f"{K}/{K}" and rows[0][6] == 0.7
    names = ", ".join(c for c, x in zip(CLASSES, lost[0].tolist(), strict=True) if x) or "none"
    assert rows[0][3] == rows[0][4] == names
    assert rows[3][:4] == ("MSE", 3, rows[3][2], "the run diverged") and math.isnan(rows[3][2])


def test_geometry_summary_of_no_run_is_nan():
    g = GeometrySummary.of([{"config": {"seed": 0}, "diverged": True}])
    assert g.n == g.n_lost == g.n_class_runs == 0
    assert all(math.isnan(x) for x in (g.lost_accuracy, g.kept_accuracy, g.agreement, g.projector_error,
                                       g.eigenvalue_ratio))
    assert g.table_rows("CE", CLASSES)[0][3] == "the run diverged"


def test_study_geometry_and_its_table(summary):
    geo = summary.geometry
    assert list(geo) == [MSE, CE] and geo[MSE].n == 3 and geo[CE].n == 2
    assert geo[CE].skipped[0][0] == 2 and "dead" in geo[CE].skipped[0][1]
    table = summary.geometry_table().splitlines()
    assert table[0].startswith("| loss | seed | ‖G − P_S‖ / ‖P_S‖ |") and len(table) == 2 + 3 + 2 + 1
    assert table[-1].startswith("| CE | 2 | nan | the class means span fewer")


# ------------------------------------------------------------------ rescaled MSE


def test_rescaled_summary(summary):
    rows = summary.rescaled_rows
    assert math.isclose(rows[(A, 4)]["test_mean"], 0.80)            # the d-sweep's rows win over the 0.70
    assert math.isclose(rows[(B, 4)]["test_mean"], 0.84) and (MSE, 9) in rows
    rs = summary.rescaled()
    assert rs.d == 4 and math.isclose(rs.mse_acc, 0.60) and math.isclose(rs.ce_acc, 0.85)
    assert rs.picked == A and math.isclose(rs.picked_acc, 0.80) and math.isclose(rs.picked_recovered, 80.0)
    assert rs.picked_improvement == "a clear"
    assert rs.best == B and math.isclose(rs.best_acc, 0.84) and math.isclose(rs.best_recovered, 96.0)
    assert rs.recovery == {A.label: "partly recovers", B.label: "recovers"} and rs.verdict == "partly recovers"
    assert rs.recovering == "RMSE α=5, M=1, RMSE α=1, M=3" and rs.m_recovering == "RMSE α=1, M=3"


def test_rescaled_summary_without_a_gap_or_a_recovery():
    rs = _results(test={(CE, 4): 0.60, (A, 4): 0.60, (B, 4): 0.60}).summary().rescaled()
    assert math.isnan(rs.picked_recovered) and math.isnan(rs.best_recovered)     # CE does not lead: no gap
    assert rs.picked_improvement == "no clear" and rs.verdict == "does not recover"
    assert rs.recovering == rs.m_recovering == "none"


def test_rescaled_line_and_table(summary):
    assert summary.rescaled_line("alpha") == [MSE, A] and summary.rescaled_line("M") == [MSE, B]
    with pytest.raises(ValueError, match="axis"):
        summary.rescaled_line("lr")
    table = summary.rescaled_table().splitlines()
    assert table[0] == "| loss | test acc, d = 4 | lr | test acc, d = 16 | lr |"
    assert [line.split(" | ")[0] for line in table[2:]] == ["| MSE", f"| {A.label}", f"| {B.label}", "| CE"]
    assert table[2] == "| MSE | 0.600 ± 0.010 | 0.03 | 0.900 ± 0.010 | 0.03 |"


# ------------------------------------------------------------------ feature nonlinearity, totals


def test_dead_units_and_linear_summary(summary):
    assert summary.dead_units(MSE) == 3.0 and summary.dead_units(CE) == 0.0     # MSE: one dead unit at each d
    assert summary.dead_units(MSE, linear=True) == 1.0 and summary.dead_units(CE, linear=True) == 0.0
    lin = summary.linear()
    assert lin.d == 4 and (lin.dead_mse, lin.dead_ce, lin.dead_linear) == (3.0, 0.0, 1.0)
    assert math.isclose(lin.relu_gap, 0.25) and math.isclose(lin.linear_gap, 0.30)


def test_totals_count_each_configuration_once(summary):
    t = summary.totals()
    # d-sweep 27 + rescaled 12 of which A's 6 repeat the d-sweep + linear 6
    assert t.n_runs == 27 + 6 + 6
    assert t.n_trained == 6          # MSE and A at d = 16; A's second listing is the same runs
    assert math.isclose(t.train_minutes, t.n_runs) and t.machine == "fake machine"
    assert t.n_tuning == 4 * 2 * 3                                        # variants × tuning d × lr


def test_reproduction_table_and_gpu_hours(summary, tmp_path):
    assert costs.paper_gpu_hours(tmp_path) is None                       # the benchmark was never run
    (tmp_path / "device_deep_check_h200.json").write_text(json.dumps({"paper_gpu_hours_estimate": 12.4}))
    assert costs.paper_gpu_hours(tmp_path) == 12.4
    lines = summary.reproduction_table(gpu_hours=12.4).splitlines()
    assert len(lines) == 5
    smoke, cpu, paper = lines[2:]
    assert smoke.startswith("| smoke | this page | reproduced: MSE loses accuracy against CE below K−1")
    assert smoke.endswith(f"| {A.label}: partly recovers |")
    assert cpu.startswith("| cpu | not run for this page | run `./run.sh book --profile cpu`: fashion_mnist with")
    assert "about 12 GPU hours on an H200" in paper and "about" not in summary.reproduction_table().splitlines()[4]


def test_terminal_phase_nc_against_d_and_recovery_below(summary):
    """The long CIFAR-10 study's evidence: which losses fit their training set at d ≥ K−1, NC1 and NC2
    after the last epoch against d beside the projected-ETF floor, and the rescaled MSE's recovery at
    every d < K−1."""
    tp = summary.terminal_phase()
    assert not tp.reached and ("MSE", 9) in {(label, d) for label, d, _ in tp.below}
    assert all(d >= K - 1 and acc < 0.99 for _, d, acc in tp.below) and "MSE at d = 9" in tp.sentence()
    assert summary.terminal_phase(threshold=0.5).reached and "terminal phase" in summary.terminal_phase(0.5).sentence()
    rows = summary.nc_against_d()
    assert {(r["label"], r["d"]) for r in rows} == {(v.label, d) for v in (MSE, CE, A) for d in (4, 9, 16)}
    r = next(r for r in rows if r["variant"] == MSE and r["d"] == 4)
    assert r["NC1_mean"] == pytest.approx(0.5) and r["NC2_mean"] == pytest.approx(0.51)   # last entry, seeds 0-2
    assert r["NC1_std"] == pytest.approx(0.1) and r["NC2_floor"] == etf.projected_nc2(4, K)
    assert all(r["NC2_floor"] == 0.0 for r in rows if r["d"] >= K - 1)
    assert summary.recovery_below() == {4: "partly recovers"}


def test_nc_against_d_figure(summary):
    import matplotlib

    matplotlib.use("Agg")
    from ncmse import plotting

    fig, axes = plotting.subplots(1, 2)
    plotting.nc_against_d(axes, summary.nc_against_d(), (MSE, CE, A), (4, 9, 16), K=K)
    assert axes[0].get_yscale() == "log" and axes[1].get_ylabel() == "NC2 after the last epoch"
    assert len(axes[0].lines) >= 3 and any(line.get_label() == "projected ETF (floor)" for line in axes[1].lines)


def test_accuracy_figure(summary):
    import matplotlib

    matplotlib.use("Agg")
    from ncmse import plotting

    fig, axes = plotting.accuracy_figure(summary)
    assert [ax.get_ylabel() for ax in axes] == ["test accuracy", "train accuracy"]
    assert len(axes[0].containers) == 3 and fig._suptitle.get_text() == summary.title     # MSE, CE, rescaled


def test_per_class_figure_and_setting_table(summary):
    import matplotlib

    matplotlib.use("Agg")
    from ncmse import plotting

    fig, ax = plotting.per_class_figure(summary)
    assert fig._suptitle.get_text() == f"{summary.title}, d = 4" and ax.get_xticks().size == K
    table = plotting.setting_table(profile_config("smoke"), (4, 16), (0, 1), ["dataset", "epochs"])
    assert "| dataset | fashion_mnist |" in table and table.endswith("Feature dimensions $d$: 4, 16; seeds 0, 1.")


def test_gap_profile_reads_the_comparison_across_k_minus_1():
    from ncmse.summary import GapProfile, StudySummary

    s = StudySummary(results=None)
    rows = [(2, 0.20, True), (4, 0.14, True), (6, 0.09, True), (8, 0.07, True), (9, 0.03, True),
            (10, 0.02, False), (16, 0.04, True)]
    s.__dict__["comparison"] = [{"d": d, "gap": g, "clear": c, "below": d < 9} for d, g, c in rows]
    p = s.gap_profile()
    assert p.grows_as_d_shrinks and [d for d, _, _ in p.below] == [2, 4, 6, 8]
    assert p.ratio == pytest.approx((0.20 + 0.14 + 0.09 + 0.07) / 4 / 0.03)
    text = p.sentence()
    assert "+0.070 to +0.200 (4 of 4 clear), growing as d shrinks" in text
    assert "+0.020 to +0.040 (2 of 3 clear)" in text and "4.2 times" in text
    s.__dict__["comparison"][1]["gap"] = 0.25                      # no longer monotone in d
    assert not StudySummary.gap_profile(s).grows_as_d_shrinks
    assert GapProfile((), ((16, -0.01, False),), False, None).sentence() == \
        "At and above K − 1 by -0.010 (0 of 1 clear)."


def test_divergence_summary_names_the_diverged_runs_in_singular_and_plural():
    res = _results()
    n = len(res.unique_runs)
    assert res.divergence_summary() == f"None of the {n} runs above diverged."
    res.runs[0]["diverged"] = {"epoch": 1, "batch": 16, "loss": "inf"}
    one = res.divergence_summary()
    assert one.startswith(f"1 of the {n} runs diverged") and ", and it is left out" in one
    assert f"d={res.runs[0]['config']['d']} seed={res.runs[0]['config']['seed']}" in one
    res.runs[1]["diverged"] = {"epoch": 2, "batch": 0, "loss": "nan"}
    two = res.divergence_summary()
    assert two.startswith(f"2 of the {n} runs diverged") and ", and they are left out" in two

"""The chapter "CIFAR-10": its study's settings, bf16 and channels-last training, the clear-gap rule on raw
values, and the archive of committed GPU results (ncmse.config, ncmse.train, ncmse.study, ncmse.archive)."""

import json
import math

import pytest
import torch
from offline_data import DATA_ROOT, needs_cifar, needs_fashion

import ncmse.study as study
from ncmse import archive, stats
from ncmse.__main__ import main
from ncmse.cache import ResultsCache
from ncmse.config import RunConfig
from ncmse.profiles import d_grid, profile_config, study_settings
from ncmse.train import train
from ncmse.variants import CE, MSE, Variant


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper", "gpu", "long"])
def test_cifar10_study_settings_are_consistent(profile):
    S, grid, K = study_settings(profile, "cifar10"), d_grid(profile, "cifar10"), 10
    base = profile_config(profile, "cifar10")
    assert base.dataset == "cifar10" and min(grid) < K - 1 <= max(grid)
    fixed = {"gpu": study_settings("paper")["sweep_rescaled"], "long": (5.0, 1.0)}
    assert S["sweep_rescaled"] == fixed.get(profile, "deep")
    assert not S["alphas"] and not S["linear_seeds"]
    assert S["geometry_d"] in grid and S["geometry_d"] < K - 1 and set(S["nc_ds"]) <= set(grid)
    assert len(S["seeds"]) >= 2 or profile == "gpu"                      # error bars (gpu: one seed, minutes)
    if len(S["lrs"]) > 1:
        assert min(S["tune_ds"]) < K - 1 <= max(S["tune_ds"]) and S["holdout_per_class"]
    if profile == "paper":        # the paper's own runs: those of the deep study at paper, the same keys
        assert base == profile_config("paper") and grid == d_grid("paper") and base.precision == "fp32"
    elif profile == "gpu":        # the paper's network, data, augmentation and d's on a short schedule
        paper = profile_config("paper")
        assert (base.model, base.n_per_class, base.augment, grid) == (paper.model, None, True, d_grid("paper"))
        assert base.epochs < paper.epochs
    else:
        assert base.model == "cnn"
    if profile == "long":         # the claim in its regime: a dense grid across K − 1, tuned rates, the full test split
        assert sum(d < K - 1 for d in grid) >= 3 and sum(d >= K - 1 for d in grid) >= 3
        assert len(S["lrs"]) > 1 and base.n_per_class >= 1000 and base.test_per_class is None
        assert base.n_per_class + S["holdout_per_class"] <= 5000          # held-out images come from the training split
        # the terminal phase: linear features and batch 64; fp32, so that every machine trains the same keys
        assert not base.feature_relu and base.batch_size == 64 and base.precision == "fp32"
        assert profile_config(profile, "cifar10", device="cuda").precision == "fp32"


@pytest.mark.parametrize("profile", ["gpu", "long"])
def test_cifar10_only_profiles_are_refused_elsewhere(profile):
    with pytest.raises(ValueError, match="belongs to the study 'cifar10'"):
        study_settings(profile)


def test_gpu_profile_is_the_cifar10_studys_alone(capsys):
    assert study.plan("gpu", "cifar10").test == 15 and study.plan("gpu", "cifar10").tuning == 0
    assert main(["study", "--profile", "gpu"]) == 2 and "belongs to the study" in capsys.readouterr().err


def test_unknown_study_and_precision_are_refused():
    with pytest.raises(ValueError, match="unknown study"):
        study_settings("cpu", "imagenet")
    with pytest.raises(ValueError, match="unknown precision"):
        RunConfig(precision="fp16")
    assert RunConfig(precision="bf16").key() != RunConfig().key()       # part of the cache key


def test_cifar10_runs_at_paper_are_the_deep_studys_runs(monkeypatch):
    seen = {"deep": set(), "cifar10": set()}
    current = {}

    def fake_sweep(configs, **kw):
        seen[current["study"]].update(c.key() for c in configs)
        return [{"config": c.to_dict(), "evaluated_on": "test", "diverged": None, "test": {"accuracy": 0.5},
                 "cached": False} for c in configs]

    monkeypatch.setattr(study, "sweep", fake_sweep)
    for name in ("deep", "cifar10"):
        current["study"] = name
        R = study.run_study("paper", study=name, progress=False)
    assert seen["cifar10"] < seen["deep"]                              # a subset: read from the same cache
    assert R.rmse == Variant("rmse", 1.0, 5.0)                         # the deep study's fixed rescaling


def test_clear_gap_is_the_rule_of_compare():
    c = stats.clear_gap([0.50, 0.52], [0.60, 0.62])
    assert c["gap"] == pytest.approx(0.10) and c["clear"]
    assert c["se"] == pytest.approx(math.sqrt(2 * 0.0002 / 2))
    assert not stats.clear_gap([0.50], [0.505])["clear"]                # under one point
    assert not stats.clear_gap([0.40, 0.60], [0.45, 0.65])["clear"]      # under two standard errors
    with pytest.raises(ValueError):
        stats.clear_gap([], [0.5])


@needs_cifar
def test_bf16_channels_last_training_on_cifar10(tmp_path):
    base = profile_config("smoke", "cifar10", d=4, epochs=1, nc_epochs=(), n_per_class=8, test_per_class=4,
                          precision="bf16")
    r16 = train(base, device="cpu", progress=False, data_root=DATA_ROOT)
    r32 = train(base.replace(precision="fp32"), device="cpu", progress=False, data_root=DATA_ROOT)
    for r in (r16, r32):
        assert r["diverged"] is None and 0 <= r["test"]["accuracy"] <= 1
        assert all(math.isfinite(x) for row in r["W"] for x in row)
    # the weights are trained in float32 either way, and the two precisions do differ
    assert r16["W"] != r32["W"]
    assert r16["data_source"].startswith("CIFAR-10")


@needs_cifar
def test_bf16_run_resumes_exactly(tmp_path):
    config = profile_config("smoke", "cifar10", d=4, epochs=2, nc_epochs=(), n_per_class=8, test_per_class=4,
                            precision="bf16")
    ckpt = tmp_path / "run.pt"
    first = train(config, device="cpu", progress=False, data_root=DATA_ROOT, checkpoint=ckpt, stop_after=1)
    assert first["complete"] is False
    resumed = train(config, device="cpu", progress=False, data_root=DATA_ROOT, checkpoint=ckpt)
    straight = train(config, device="cpu", progress=False, data_root=DATA_ROOT)
    assert resumed["W"] == straight["W"] and resumed["test"] == straight["test"]


def _result(variant, d, seed, acc, *, classes=10, device="cuda:0"):
    """A complete result in the shape of ncmse.train.train's, with made-up numbers (archive tests)."""
    c = variant.config(profile_config("paper"), d=d, seed=seed)
    g = torch.Generator().manual_seed(seed * 100 + d)
    means = torch.randn(classes, d, generator=g, dtype=torch.float64)
    return {"config": c.to_dict(), "complete": True, "history": [], "evaluated_on": "test",
            "classes": [f"class{k}" for k in range(classes)], "data_source": "CIFAR-10", "diverged": None,
            "train": {"accuracy": acc, "per_class_accuracy": [acc] * classes, "live_units": d,
                      "class_means": means.tolist(), "global_mean": means.mean(0).tolist()},
            "test": {"accuracy": acc, "per_class_accuracy": [acc] * classes},
            "W": means.tolist(), "b": [0.0] * classes, "cached": True,
            "provenance": {"device": device, "torch": "2.x", "git": "abc1234", "finished": "2026-12-01 10:00:00 UTC",
                           "wall_seconds": 3600.0, "machine": "GPU X"}}


def test_archive_round_trip_and_tables(tmp_path):
    assert archive.load("cifar10", tmp_path) == []                     # no folder: nothing, no error
    runs = [_result(v, d, s, acc) for v, acc in ((MSE, 0.6), (CE, 0.8)) for d in (5, 512) for s in (6, 7)]
    written = archive.export(runs + runs[:1], "cifar10", tmp_path)       # a repeated run is written once
    assert len(written) == len(runs) and all(p.parent == tmp_path / "cifar10" for p in written)
    back = archive.load("cifar10", tmp_path)
    assert len(back) == len(runs) and all("cached" not in r for r in back)
    prov = archive.provenance_table(back)
    assert "GPU X" in prov and "abc1234" in prov and "| 8 |" in prov and "8.00" in prov     # 8 runs × 1 h
    acc = archive.accuracy_table(back)
    assert "0.600 ± 0.000" in acc and "0.800 ± 0.000" in acc and "resnet18" in acc
    comp = archive.comparison(back)
    assert [r["d"] for r in comp] == [5, 512] and all(r["gap"] == pytest.approx(0.2) for r in comp)
    assert "class0" in archive.geometry_table(back, 5) or "none" in archive.geometry_table(back, 5)
    with pytest.raises(ValueError, match="no archived run"):
        archive.geometry_table(back, 7)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_text("{not json"), "not readable JSON"),
    (lambda p: p.write_text(json.dumps({"complete": True})), "not a complete training result"),
    (lambda p: p.rename(p.with_name("0000000000000000.json")), "not the key"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "provenance": {"device": "cuda"}})),
     "provenance lacks"),
])
def test_archive_refuses_bad_files(tmp_path, damage, message):
    (path,) = archive.export([_result(MSE, 5, 6, 0.5)], "cifar10", tmp_path)
    damage(path)
    with pytest.raises(archive.ArchiveError, match=message):
        archive.load("cifar10", tmp_path)


def test_archive_refuses_unknown_study(tmp_path):
    with pytest.raises(ValueError, match="unknown study"):
        archive.folder("imagenet", tmp_path)


@needs_cifar
@needs_fashion
def test_study_command_exports_the_cifar10_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(study, "run_study", _tiny_study(study.run_study))
    code = main(["study", "--study", "cifar10", "--profile", "smoke", "--quiet", "--cache", str(tmp_path / "cache"),
                 "--data-root", str(DATA_ROOT), "--export", str(tmp_path / "trained")])
    out = capsys.readouterr().out
    assert code == 0 and "study 'cifar10'" in out and "is exported to" in out
    back = archive.load("cifar10", tmp_path / "trained")       # every run of the study, as each finished
    assert len(back) == 3 and {r["config"]["dataset"] for r in back} == {"cifar10"}
    assert {r["config"]["loss"] for r in back} == {"mse", "ce", "rmse"}
    # resumable from the archive alone: an empty cache trains nothing that the archive holds
    code = main(["study", "--study", "cifar10", "--profile", "smoke", "--quiet", "--cache", str(tmp_path / "cache2"),
                 "--data-root", str(DATA_ROOT), "--export", str(tmp_path / "trained")])
    out = capsys.readouterr().out
    assert code == 0 and "3 runs of the archive" in out and "0 trained now" in out
    assert [r["test"]["accuracy"] for r in archive.load("cifar10", tmp_path / "trained")] == \
        [r["test"]["accuracy"] for r in back]


@needs_cifar
@needs_fashion
def test_a_study_reads_back_from_its_archive_alone(tmp_path, capsys):
    """The archive is the study: run_study's own summary of archived runs, nothing trained; a run missing
    from the archive is named, and a run trained by other code is flagged, not hidden."""
    shrink = dict(grid=(4, 16), overrides={"seeds": (0,), "lrs": (0.05,), "tune_ds": (), "sweep_rescaled": (5.0, 1.0)},
                  n_per_class=8, test_per_class=4, epochs=1, nc_epochs=())
    cache = ResultsCache(tmp_path / "cache")
    trained = study.run_study("smoke", study="cifar10", cache=cache, progress=False, data_root=DATA_ROOT,
                              on_done=archive.exporter("cifar10", cache, tmp_path / "trained"), **shrink)
    back = archive.study_results("cifar10", "smoke", root=tmp_path / "trained", data_root=DATA_ROOT, **shrink)
    assert [r["test"]["accuracy"] for r in back.runs] == [r["test"]["accuracy"] for r in trained.runs]
    assert back.summary().verdict.sentence("MSE", "CE") == trained.summary().verdict.sentence("MSE", "CE")
    assert archive.stale_runs(back.runs) == []
    # the archive's numbers are reproduced: a sample run trained again from an empty cache
    from ncmse.cache import run
    sample = back.runs[0]
    again = run(RunConfig.from_dict(sample["config"]), cache=ResultsCache(tmp_path / "empty"), progress=False,
                data_root=DATA_ROOT)
    assert not again["cached"] and again["test"] == sample["test"] and again["W"] == sample["W"]
    first = sorted((tmp_path / "trained" / "cifar10").glob("*.json"))[0]
    entry = json.loads(first.read_text())
    first.write_text(json.dumps({**entry, "validity": {**entry["validity"], "code": "0" * 16}}))
    assert len(archive.stale_runs(archive.load("cifar10", tmp_path / "trained"))) == 1
    first.unlink()
    with pytest.raises(archive.ArchiveIncomplete, match="1 run.* --profile smoke --export"):
        archive.study_results("cifar10", "smoke", root=tmp_path / "trained", data_root=DATA_ROOT, **shrink)


def test_exporter_writes_each_finished_run(tmp_path):
    cache = ResultsCache(tmp_path / "cache")
    result = {**_result(MSE, 4, 0, 0.5), "validity": {"code": "c", "data": "d"}}
    config = RunConfig.from_dict(result["config"])
    on_done = archive.exporter("cifar10", cache, tmp_path / "trained")
    on_done(config)                                   # not in the cache: nothing to export
    assert archive.load("cifar10", tmp_path / "trained") == []
    cache.put(config, result)
    on_done(config)
    (back,) = archive.load("cifar10", tmp_path / "trained")
    assert back["test"] == result["test"]


def _tiny_study(real):
    """run_study with one seed, MSE and CE only at one lr: the command's plumbing, in seconds."""
    def tiny(profile, **kw):
        R = real(profile, grid=(4,), overrides={"seeds": (0,), "lrs": (0.05,), "tune_ds": ()},
                 n_per_class=8, test_per_class=4, epochs=1, nc_epochs=(), **kw)
        R.runs = [r for r in R.runs if Variant.of(r["config"]) in (MSE, CE)]
        return R
    return tiny


def test_results_cache_keys_differ_by_precision(tmp_path):
    cache = ResultsCache(tmp_path)
    assert cache.path(RunConfig(precision="bf16")) != cache.path(RunConfig())


def test_results_table_names_the_study_and_profile():
    from ncmse.results import study_and_profile

    for name, profile in (("cifar10", "cpu"), ("cifar10", "smoke"), ("cifar10", "gpu"), ("deep", "cpu")):
        c = profile_config(profile, name, d=4, loss="ce", seed=1, lr=0.2)
        assert study_and_profile(c.to_dict()) == (name, profile)
    assert study_and_profile(profile_config("paper", "cifar10").to_dict()) == ("deep", "paper")   # the same runs
    assert study_and_profile(profile_config("cpu", "cifar10", epochs=7).to_dict()) == ("", "")


def test_precision_summary_reads_the_check_and_knows_its_kind_of_run(tmp_path):
    from ncmse import costs

    assert costs.precision_summary(profile_config("cpu", "cifar10"), tmp_path) is None
    base = profile_config("cpu", "cifar10", epochs=12, nc_epochs=(), precision="fp32")
    report = {"base": base.to_dict(), "seeds": [0, 1], "machine": "CPU X", "within_noise": True,
              "bf16_over_fp32_seconds": 0.5, "comparison": [
                  {"loss": "mse", "d": 4, "fp32": 0.30, "bf16": 0.31, "gap": 0.01, "se": 0.02, "clear": False}],
              "compile": {"compile_s": 20.0, "speedup": 0.8, "break_even_steps": None}}
    (tmp_path / "precision_cpu.json").write_text(json.dumps(report))
    s = costs.precision_summary(profile_config("cpu", "cifar10"), tmp_path)
    assert s.same_kind and s.within_noise and s.epochs == 12 and s.seeds == "0, 1"
    assert "| MSE | 4 | 0.300 | 0.310 | +0.010 | 0.020 | no |" in s.table
    assert not s.compile_pays_within(10 ** 9)
    other = costs.precision_summary(profile_config("cpu", "cifar10", n_per_class=100), tmp_path)
    assert not other.same_kind
    report["compile"]["break_even_steps"] = 300.0
    (tmp_path / "precision_cpu.json").write_text(json.dumps(report))
    paid = costs.precision_summary(profile_config("cpu", "cifar10"), tmp_path)
    assert paid.compile_pays_within(400) and not paid.compile_pays_within(200)


def test_training_steps_and_predicted_lost_classes():
    from ncmse import costs
    from ncmse.mean_geometry import GeometrySummary

    assert costs.training_steps(profile_config("cpu", "cifar10")) == 8 * 16        # 2,000 images, batch 128
    assert costs.training_steps(profile_config("cpu", "cifar10", batch_size=600)) == 8 * 4     # the last batch kept
    g = GeometrySummary.of([])
    g = GeometrySummary(**{**g.__dict__, "predicted_lost_counts": torch.tensor([0, 2, 0, 1])})
    assert g.predicted_lost_classes(["a", "b", "c", "d"]) == ["b", "d"]


@needs_cifar
def test_a_resumed_run_keeps_its_layout(tmp_path, monkeypatch):
    """The memory layout is decided per machine, not per configuration: a run interrupted in one layout
    resumes in it, whatever the decision is now, and ends where it would have ended uninterrupted."""
    config = profile_config("smoke", "cifar10", d=4, epochs=2, nc_epochs=(), n_per_class=8, test_per_class=4,
                            precision="fp32")
    ckpt = tmp_path / "run.pt"
    monkeypatch.setenv("NCMSE_CHANNELS_LAST", "1")
    train(config, device="cpu", progress=False, data_root=DATA_ROOT, checkpoint=ckpt, stop_after=1)
    straight = train(config, device="cpu", progress=False, data_root=DATA_ROOT)
    monkeypatch.setenv("NCMSE_CHANNELS_LAST", "0")
    resumed = train(config, device="cpu", progress=False, data_root=DATA_ROOT, checkpoint=ckpt)
    assert resumed["provenance"]["channels_last"] is True and straight["provenance"]["channels_last"] is True
    assert resumed["W"] == straight["W"]
    assert train(config, device="cpu", progress=False, data_root=DATA_ROOT)["provenance"]["channels_last"] is False


def test_progress_sentence_counts_a_study_and_flags_other_code(tmp_path):
    empty = archive.progress_sentence("cifar10", "long", tmp_path)
    assert "No run of the `long` profile is in the archive yet" in empty
    base = profile_config("long", "cifar10", device="cpu")
    r = {**_result(MSE, 4, 0, 0.5), "config": base.replace(d=4).to_dict(),
         "validity": {"code": "0" * 16, "data": "d"}}
    r["provenance"]["capability"] = "AVX2, emulated bf16"
    archive.export([r], "cifar10", tmp_path)
    text = archive.progress_sentence("cifar10", "long", tmp_path)
    total = study.plan("long", "cifar10").trainings
    assert f"**1 of the {total} runs**" in text and "GPU X, AVX2, emulated bf16" in text and "1.0 hours" in text
    assert "1 of them were trained by other training code" in text and "--profile long --export" in text


def _fake_long_result(c: RunConfig) -> dict:
    """A complete result of ``c`` in the shape of ncmse.train.train's, with made-up numbers that depend
    on the loss and d (MSE behind below K − 1): the long study's archive for a page test."""
    v, d, seed = Variant.of(c), c.d, c.seed
    acc = 0.6 - (0.2 if v == MSE and d < 9 else 0.05 if v != CE and d < 9 else 0.0) + 0.01 * seed
    r = _result(v, d, seed, acc)
    hist = [{"epoch": e, "train_loss": 1.0 / e, "lr": 0.1, "train_accuracy": 1.0, "test_accuracy": acc,
             "NC1": 1.0 / e, "NC2": 0.5 / e} for e in (*c.nc_epochs, c.epochs)]
    r["train"].update({"accuracy": 1.0 if d >= 9 else 0.8, "NC1": 0.1, "NC2": 0.2})
    prov = {**r["provenance"], "capability": "AVX512 + AMX, native bf16", "machine": "Fake CPU, 2 cores"}
    return {**r, "config": c.to_dict(), "history": hist, "provenance": prov, "cached": False,
            "evaluated_on": "holdout" if c.holdout_per_class else "test", "validity": {"code": "c", "data": "d"}}


@pytest.mark.slow
@needs_cifar
@needs_fashion
def test_the_page_shows_a_complete_long_archive(tmp_path, monkeypatch):
    """With every run of the long profile in the archive, the CIFAR-10 page shows the evidence: the
    archive read through the study machinery, its verdict, the terminal phase and NC against d."""
    from ncmse import runner

    seen = {}

    def fake_sweep(configs, **kw):
        out = [_fake_long_result(c.resolved("cpu")) for c in configs]
        seen.update({RunConfig.from_dict(r["config"]).key(): r for r in out})
        return out

    monkeypatch.setattr(study, "sweep", fake_sweep)
    study.run_study("long", study="cifar10", progress=False, device="cpu")
    archive.export(seen.values(), "cifar10", tmp_path)
    assert len(seen) == study.plan("long", "cifar10").trainings
    out = tmp_path / "cifar10.ipynb"
    res = runner.execute_chapter(runner.source_of("book/cifar10"), out, profile="smoke", timeout=900,
                                 env={"NCMSE_ARCHIVE": str(tmp_path)})
    assert res.ok, res.error
    text = out.read_text()
    assert "Fake CPU, 2 cores" in text and "By the clear-gap rule" in text and "projected simplex ETF" in text
    assert f"**{len(seen)} of the {len(seen)} runs**" in text and "recovers" in text


def test_committed_archive_is_well_formed_and_on_the_status_page(tmp_path):
    """Every file committed under data/trained: a complete result named by its key with its provenance
    (archive.load raises on any other), and the status page counts them by study and profile."""
    from ncmse import runner
    from ncmse.paths import ROOT

    for name in ("deep", "cifar10"):
        for r in archive.load(name, ROOT / "data" / "trained"):
            assert {"machine", "device", "torch", "git", "finished", "wall_seconds"} <= set(r["provenance"])
            assert r["validity"]["code"] and r["validity"]["data"]
    assert runner._archive_table(tmp_path) == ""                 # nothing committed there
    r = {**_result(MSE, 4, 0, 0.5), "config": profile_config("long", "cifar10", device="cpu").to_dict(),
         "validity": {"code": "0" * 16, "data": "d"}}
    archive.export([r], "cifar10", tmp_path / "data" / "trained")
    table = runner._archive_table(tmp_path)
    assert f"| cifar10 | long | 1 | {study.plan('long', 'cifar10').trainings} | 1 |" in table


def test_archive_load_keeps_the_device_asked_for(tmp_path):
    gpu = [_result(MSE, d, 0, 0.6) for d in (5, 512)]
    cpu = [_result(CE, d, 0, 0.7) for d in (5, 512)]
    for r in cpu:
        r["provenance"]["device"] = "cpu"
    gpu[1]["provenance"]["device"] = "cuda:1"
    archive.export(gpu + cpu, "cifar10", tmp_path)
    assert len(archive.load("cifar10", tmp_path)) == 4
    assert {r["config"]["loss"] for r in archive.load("cifar10", tmp_path, device="cuda")} == {"mse"}
    assert len(archive.load("cifar10", tmp_path, device="cuda")) == 2
    assert {r["config"]["loss"] for r in archive.load("cifar10", tmp_path, device="cpu")} == {"ce"}

"""The study's plan counts exactly the runs run_study asks for; the cost table reads the benchmarks."""

import json
import math

import pytest

from ncmse import costs, study
from ncmse.config import RunConfig


@pytest.mark.parametrize("study_name, profile", [("deep", "smoke"), ("deep", "cpu"), ("deep", "paper"),
                                                 ("cifar10", "smoke"), ("cifar10", "cpu"), ("cifar10", "paper"),
                                                 ("cifar10", "gpu"), ("cifar10", "long")])
def test_plan_counts_the_runs_that_run_study_submits(profile, study_name, monkeypatch):
    seen = {}

    def fake_sweep(configs, **kw):
        out = []
        for c in configs:
            seen.setdefault(c.key(), c)
            r = {"config": c.to_dict(), "evaluated_on": "holdout" if c.holdout_per_class else "test",
                 "diverged": None, "test": {"accuracy": 0.5 + 0.01 * c.d + c.lr}, "cached": False}
            out.append(r)
        return out

    monkeypatch.setattr(study, "sweep", fake_sweep)
    study.run_study(profile, study=study_name, progress=False)
    plan = study.plan(profile, study_name)
    if study_name == "cifar10":            # the deep study's tuning, which picks its rescaled MSE, is not its own
        seen = {k: c for k, c in seen.items() if c.dataset == "cifar10"}
    tuning = [c for c in seen.values() if c.holdout_per_class is not None]
    # successive halving: every candidate stops at the rung, the kept ones resume there to the end
    stopped = {c.full_schedule().key(): c.stop_epoch for c in tuning if c.stop_epoch}
    epochs = sum(c.stop_epoch if c.stop_epoch else c.epochs - stopped.get(c.key(), 0) for c in tuning)
    assert plan.tuning == len({c.full_schedule().key() for c in tuning}) and plan.test == len(seen) - len(tuning)
    assert plan.tuning_epochs == epochs
    first = next(iter(seen.values()))
    assert plan.epochs == first.epochs and isinstance(first, RunConfig)


def test_cost_table_uses_the_rates_it_finds(tmp_path):
    assert costs.rates(tmp_path) == []
    rows = costs.cost_rows(tmp_path)
    assert all(r["hours"] is None for r in rows) and "no rate measured" in costs.cost_table(tmp_path)
    assert not any(r.get("measured") for r in rows)
    (tmp_path / "device_deep_check_h200.json").write_text(json.dumps({"gpu": "GPU X", "seconds_per_image": 1e-4}))
    paper = [r for r in costs.cost_rows(tmp_path) if r["profile"] == "paper" and r["study"] == "deep"]
    assert len(paper) == 1 and paper[0]["hours"] == pytest.approx(study.plan("paper").image_epochs * 1e-4 / 3600)


def test_chapter_benchmark_rows_are_measured_and_ratios_follow_the_report(tmp_path):
    assert costs.chapter_benchmark(tmp_path) is None
    mode = {"tuning_seconds": 100.0, "runs": 196, "run_seconds": 700.0, "accuracy_fingerprint": "ab"}
    report = {"machine": "CPU Y, 2 cores", "profile": "cpu",
              "modes": {"sequential": {**mode, "seconds": 720.0}, "local": {**mode, "seconds": 360.0},
                        "busy": {**mode, "seconds": 540.0, "accuracy_fingerprint": "cd"}}}
    (tmp_path / costs.CHAPTER_REPORT).write_text(json.dumps(report))
    assert costs.chapter_benchmark(tmp_path).baseline is None
    report["baseline"] = {"local": {**mode, "seconds": 480.0, "rev": "abc1234"}}
    (tmp_path / costs.CHAPTER_REPORT).write_text(json.dumps(report))
    bench = costs.chapter_benchmark(tmp_path)
    assert bench.baseline == ("abc1234", 480.0) and "0.75× its time" in bench.sentence()
    assert [m.mode for m in bench.modes] == ["local", "busy", "sequential"]
    assert bench.busy_over_quiet == pytest.approx(1.5) and bench.sequential_over_local == pytest.approx(2.0)
    assert not bench.same_numbers and "did not train the same" in bench.sentence()
    assert "1.50× the quiet time (within the 2.5×" in bench.sentence() and "2.00× the workers'" in bench.sentence()
    assert "2.00" in bench.table() and "6.0" in bench.table()
    stale = bench.currency(136)                    # another study size, another machine: said, in one place
    assert "study of 196 runs; today's has 136" in stale and "made on CPU Y, 2 cores" in stale
    from ncmse.machine import device_description

    here = costs.ChapterBenchmark(bench.modes, device_description())
    assert here.currency(196) == ""
    measured = [r for r in costs.cost_rows(tmp_path) if r["measured"]]
    assert [(r["study"], r["profile"]) for r in measured] == [("deep", "cpu")] * 3
    assert measured[0]["hours"] == pytest.approx(0.1) and "beside a busy process" in measured[1]["device"]
    assert "measured" in costs.cost_table(tmp_path)
    report["profile"] = "smoke"                    # a check of the script is not a measurement of the chapter
    (tmp_path / costs.CHAPTER_REPORT).write_text(json.dumps(report))
    assert costs.chapter_benchmark(tmp_path) is None


def test_step_breakdown_shares_and_floor_follow_the_report(tmp_path):
    assert costs.step_breakdown(tmp_path) is None
    report = {"machine": "CPU Y, 2 cores", "runs": {"seconds": {"after_final_nc_only": 4.0}, "steps": 1000},
              "breakdown": {"step_ms": 3.0, "gemm_ms": 2.4, "top_ops_ms": {"aten::mm": 1.5, "aten::addmm": 0.9,
                                                                          "aten::relu": 0.06, "aten::add_": 0.03}}}
    (tmp_path / costs.STEP_REPORT).write_text(json.dumps({k: v for k, v in report.items() if k != "breakdown"}))
    assert costs.step_breakdown(tmp_path) is None                  # a report from before the breakdown
    (tmp_path / costs.STEP_REPORT).write_text(json.dumps(report))
    b = costs.step_breakdown(tmp_path)
    assert b.gemm_share_of_step == pytest.approx(0.8) and b.gemm_share_of_run == pytest.approx(0.6)
    assert b.floor_minutes(7.5) == pytest.approx(4.5) and math.isnan(b.compiled_over_eager)
    text = b.sentence(7.5)
    assert "80% of a training step and 60% of the whole run" in text and "still be about 4.5" in text
    assert b.other_op == ("aten::relu", 0.06) and "`aten::relu`, takes 2% of a step" in text
    assert "torch.compile" not in text and "minutes above" not in b.sentence()
    report["compile"] = {"first_step_s": 15.0, "compiled_over_eager": 0.9}
    (tmp_path / costs.STEP_REPORT).write_text(json.dumps(report))
    text = costs.step_breakdown(tmp_path).sentence()
    assert "took 15 s to compile" in text and "0.90× eager's time, 0.30 s of a run" in text


def test_a_profile_is_costed_at_the_rate_of_its_precision(tmp_path):
    """The precision check measures the small CNN in both precisions; the long study trains in fp32, the
    quick ones in "auto", so each row takes the rate of its own precision (any rate where none matches)."""
    runs = [{"precision": p, "seconds": s} for p, s in (("fp32", 40.0), ("bf16", 20.0), ("fp32", 42.0),
                                                       ("bf16", 22.0), ("fp32", 44.0), ("bf16", 24.0))]
    (tmp_path / "precision_cpu.json").write_text(json.dumps({"machine": "Test CPU", "runs": runs,
                                                             "base": {"epochs": 2, "n_per_class": 10}}))
    known = {r.precision: r.seconds_per_image for r in costs.rates(tmp_path)}
    assert known == {"fp32": 42.0 / 200, "bf16": 22.0 / 200}
    rows = {(r["study"], r["profile"]): r for r in costs.cost_rows(tmp_path)}
    long = rows[("cifar10", "long")]
    assert "fp32" in long["source"] and math.isclose(long["hours"], long["image_epochs"] * 42.0 / 200 / 3600)
    quick = rows[("cifar10", "cpu")]
    assert costs.profile_config("cpu", "cifar10").precision in quick["source"]
    assert rows[("deep", "cpu")]["source"] == "no rate measured for this model"       # no mlp rate in tmp_path

"""The study's plan counts exactly the runs run_study asks for; the cost table reads the benchmarks."""

import json

import pytest

from ncmse import costs, study
from ncmse.config import RunConfig


@pytest.mark.parametrize("study_name, profile", [("deep", "smoke"), ("deep", "cpu"), ("deep", "paper"),
                                                 ("cifar10", "smoke"), ("cifar10", "cpu"), ("cifar10", "paper"),
                                                 ("cifar10", "gpu")])
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
    assert plan.tuning == len(tuning) and plan.test == len(seen) - len(tuning)
    first = next(iter(seen.values()))
    assert plan.epochs == first.epochs and isinstance(first, RunConfig)


def test_cost_table_uses_the_rates_it_finds(tmp_path):
    assert costs.rates(tmp_path) == []
    rows = costs.cost_rows(tmp_path)
    assert all(r["hours"] is None for r in rows) and "no rate measured" in costs.cost_table(tmp_path)
    (tmp_path / "device_deep_check_h200.json").write_text(json.dumps({"gpu": "GPU X", "seconds_per_image": 1e-4}))
    paper = [r for r in costs.cost_rows(tmp_path) if r["profile"] == "paper" and r["study"] == "deep"]
    assert len(paper) == 1 and paper[0]["hours"] == pytest.approx(study.plan("paper").image_epochs * 1e-4 / 3600)

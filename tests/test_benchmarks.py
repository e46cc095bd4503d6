"""The benchmarks' code paths, at a smoke size on the CPU (their numbers mean nothing here; timings are
never asserted)."""

import json
import sys
from pathlib import Path

import pytest
from offline_data import DATA_ROOT, needs_cifar, needs_fashion

from ncmse import costs, study

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_gpu_throughput_runs_on_cpu_at_smoke_size(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("gpu_throughput", None)
    import gpu_throughput

    code = gpu_throughput.main(["--device", "cpu", "--steps", "2", "--warmup", "1", "--batch", "4",
                                "--concurrency", "2", "--settings", "fp32", "bf16+cl", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "gpu_throughput_cpu.json").read_text())
    assert [s["setting"] for s in report["single"]] == ["fp32", "bf16+cl"]
    assert all(s["images_per_s"] > 0 and s["first_step_s"] > 0 for s in report["single"])
    (together,) = report["concurrent"]
    assert together["runs"] == 2 and len(together["per_run_images_per_s"]) == 2
    assert set(report["projected_paper"]) == {"deep paper", "cifar10 paper", "cifar10 gpu"}
    for p in report["projected_paper"].values():
        assert p["device_hours"] == p["image_epochs"] / report["best_images_per_s"] / 3600
    assert report["summary"]["script"] == "benchmarks/gpu_throughput.py"


DATA = DATA_ROOT
needs_data = needs_fashion


@needs_data
def test_chapter_bench_runs_the_study_from_an_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NCMSE_DATA_ROOT", str(DATA))
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("chapter_bench", None)
    import chapter_bench

    assert chapter_bench.main(["--profile", "smoke", "--modes", "sequential", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "chapter_cpu.json").read_text())
    (mode,) = report["modes"].values()
    assert mode["runs"] == study.plan("smoke").trainings and mode["seconds"] >= mode["tuning_seconds"] > 0
    assert report["profile"] == "smoke" and costs.chapter_benchmark(tmp_path) is None   # not a cpu measurement


@needs_data
def test_step_bench_runs_at_a_smoke_size(tmp_path, monkeypatch):
    monkeypatch.setenv("NCMSE_DATA_ROOT", str(DATA))
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("step_bench", None)
    import step_bench

    step_bench.main(["--rounds", "1", "--run-rounds", "1", "--steps", "2", "--epochs", "2", "--skip-compile",
                     "--out", str(tmp_path)])
    report = json.loads((tmp_path / "step_cpu.json").read_text())
    b = report["breakdown"]
    assert 0 < b["gemm_ms"] and b["gemm_share_of_step"] == b["gemm_ms"] / b["step_ms"] and "compile" not in report
    assert set(b["top_ops_ms"]) & {"aten::mm", "aten::addmm"}        # the profiler saw the matrix products
    assert report["runs"]["steps"] == 2 * 79                          # 2 epochs of 10,000 images in batches of 128
    assert [e["members"] for e in report["ensemble"]] == [4, 12]
    assert set(report["runs"]["over_before"]) == {"before", "after", "after_final_nc_only"}
    assert report["runs"]["test_accuracy"]["after"] == report["runs"]["test_accuracy"]["after_final_nc_only"]


def test_interrupt_drill_damages_files_and_its_committed_report_is_on_the_status_page(monkeypatch):
    """The drill's damages (binary bytes that are not UTF-8, a strict prefix, another run's file), and its
    committed report: every damage of DAMAGES tried, each bit-identical after one warning, shown as a row
    of the status page's drill table."""
    import random

    from ncmse import runner

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("interrupt_drill", None)
    import interrupt_drill as drill

    rng, blob = random.Random(0), json.dumps({"config": {"d": 9}, "history": [1, 2, 3]}).encode()
    binary = drill.damage(blob, "binary bytes", rng)
    with pytest.raises(UnicodeDecodeError):
        binary.decode("utf-8")
    short = drill.damage(blob, "cut short", rng)
    assert blob.startswith(short) and 0 < len(short) < len(blob)
    assert drill.damage(blob, "another run's JSON", rng, b'{"config": {"d": 3}}') == b'{"config": {"d": 3}}'
    with pytest.raises(ValueError):
        drill.damage(blob, "another run's JSON", rng, blob)
    report = json.loads((BENCHMARKS / "results" / "interrupt_drill_cpu.json").read_text())
    trials = report["damaged_files"]["trials"]
    assert report["passed"] and [(t["file"], t["damage"]) for t in trials] == list(drill.DAMAGES)
    assert all(t["bit_identical"] and t["warnings"] == 1 and not t["traceback"] for t in trials)
    assert len(report["damaged_files"]["corrupt_files_kept"]) == sum(f == "result" for f, _ in drill.DAMAGES)
    assert report["summary"]["result"] == drill.summary(report)["result"]
    table = runner._drill_table(BENCHMARKS.parent)
    assert table.count("| yes | no |") == len(drill.DAMAGES)


def test_page_numbers_tells_a_changed_number_from_a_changed_duration(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("page_numbers", None)
    import page_numbers

    def notebook(folder, accuracy, seconds):
        cells = [{"cell_type": "code", "execution_count": 1, "source": "", "outputs": [
            {"output_type": "stream", "name": "stdout", "text": [f"accuracy {accuracy} after {seconds} s\n"]},
            {"output_type": "stream", "name": "stderr", "text": [f"epoch 3/{seconds}\n"]},        # a progress bar
            {"output_type": "display_data",
             "data": {"text/markdown": f"finished 2026-12-0{seconds % 9 + 1} 10:00 UTC"}}]}]
        (folder / "book").mkdir(parents=True)
        (folder / "book" / "ch.ipynb").write_text(json.dumps({"cells": cells}))

    notebook(tmp_path / "a", 0.512, 3)
    notebook(tmp_path / "b", 0.512, 7)
    notebook(tmp_path / "c", 0.513, 3)
    assert page_numbers.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "book/ch.ipynb: SAME" in capsys.readouterr().out
    assert page_numbers.main([str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    out = capsys.readouterr().out
    assert "DIFFER" in out and "0.512" in out and "0.513" in out
    assert page_numbers.main([str(tmp_path / "a"), str(tmp_path / "missing")]) == 1
    assert "MISSING" in capsys.readouterr().out


@needs_cifar
def test_reproduce_archived_trains_a_run_again_and_tells_a_changed_archive(tmp_path, monkeypatch, capsys):
    from ncmse import archive
    from ncmse.cache import ResultsCache, run
    from ncmse.profiles import profile_config

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("reproduce_archived", None)
    import reproduce_archived

    tiny = profile_config("smoke", "cifar10").replace(n_per_class=8, test_per_class=4, epochs=1, nc_epochs=(), d=4)
    runs = [run(tiny.replace(seed=s), cache=ResultsCache(tmp_path / "cache"), progress=False, data_root=DATA,
                device="cpu") for s in (0, 1)]
    (path0, _) = archive.export(runs, "cifar10", tmp_path / "trained")
    args = ["--study", "cifar10", "--root", str(tmp_path / "trained"), "--data-root", str(DATA), "--out", str(tmp_path)]
    assert reproduce_archived.main(args + ["--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "REPRODUCED" in out and "bit-identical: test True" in out
    report = json.loads(next(tmp_path.glob("reproduce_*.json")).read_text())
    assert report["trained"] and report["W_max_abs_diff"] == 0.0
    assert report["fingerprint"]["archived"] == report["fingerprint"]["now"]
    assert reproduce_archived.main(args) == 2                                 # two runs match: it asks to narrow
    assert "2 archived runs match" in capsys.readouterr().err
    entry = json.loads(path0.read_text())                                     # an archive that no longer matches
    entry["W"][0][0] += 1e-3
    path0.write_text(json.dumps(entry))
    assert reproduce_archived.main(args + ["--seed", "0"]) == 1
    out = capsys.readouterr().out
    assert "NOT REPRODUCED" in out and "W False" in out and "test True" in out

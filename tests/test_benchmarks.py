"""The GPU benchmark's code path, at a smoke size on the CPU (its numbers mean nothing here; timings are
never asserted)."""

import json
import sys
from pathlib import Path

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

"""Check the deep-network chapter's `paper` code path on a CUDA device and time it.

The chapter at the `paper` profile trains ResNet18 on CIFAR-10 for 200 epochs per run, which is
GPU hours; this runs the same path — ``ncmse.study`` ``run_study`` at the paper profile (no tuning: the
paper's single lr; MSE, CE, the profile's rescaled MSE, two of the rescaled sweeps and the linear
features) on the profile's two NC dimensions and one seed, a second call that must train nothing,
then ``pool_seeds``, ``history_band`` and ``class_mean_geometries`` — for a few epochs on a
subsample, and extrapolates the time per image to the paper profile's full cost.

A device machine has no copy of the data, so the decoded CIFAR-10 test split
(``data/cifar10-jpeg/test.pt``, carried along) serves as training and test data.

    python benchmarks/device_deep_check.py [--epochs 2] [--n-per-class 500] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import use_test_split_only, write_report  # noqa: E402

from ncmse import profiles, stats, study, variants  # noqa: E402
from ncmse.cache import ResultsCache  # noqa: E402
from ncmse.mean_geometry import class_mean_geometries  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--n-per-class", type=int, default=500)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    use_test_split_only()                              # only the test split is on a device machine
    S = profiles.study_settings("paper")
    small = {"seeds": S["seeds"][:1], "rescaled_ds": S["rescaled_ds"][:1], "alphas": (1, 5), "Ms": (1, 5)}
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        cache = ResultsCache(Path(tmp) / "results")
        kw = dict(cache=cache, device="cuda", progress=False, grid=S["nc_ds"], overrides=small, epochs=args.epochs,
                  n_per_class=args.n_per_class, test_per_class=100, nc_epochs=(1,))
        t0 = time.perf_counter()
        R = study.run_study("paper", **kw)
        seconds = time.perf_counter() - t0
        again = study.run_study("paper", **kw)
    assert all(r["cached"] for r in again.all_runs)
    results = R.all_runs
    for r in results:
        c = r["config"]
        report["runs"].append({"loss": variants.Variant.of(c).label, "d": c["d"], "lr": c["lr"],
                               "relu": c["feature_relu"], "seconds": r["provenance"]["wall_seconds"],
                               "train_accuracy": r["train"]["accuracy"], "live_units": r["train"]["live_units"],
                               "NC1": r["train"]["NC1"], "device": r["provenance"]["device"]})
    pooled = stats.pool_seeds(results)
    geo, skipped = class_mean_geometries([r for r in R.runs if r["config"]["d"] == S["geometry_d"]
                                          and r["config"]["loss"] == "mse"])
    band = stats.history_band(results[:1], "NC1")
    images = R.K * args.n_per_class * args.epochs * len(results)
    per_image = seconds / images
    n_grid = len(profiles.d_grid("paper"))
    full_runs = n_grid * 3 * len(S["seeds"]) + 7 * len(S["rescaled_ds"]) * len(S["seeds"]) \
        + 2 * n_grid * len(S["linear_seeds"])
    report.update({"sweep_seconds": seconds, "images_trained": images, "seconds_per_image": per_image,
                   "pooled_rows": len(pooled), "geometry_runs": len(geo), "geometry_skipped": skipped,
                   "nc1_epochs": band[0], "paper_runs": full_runs,
                   "paper_gpu_hours_estimate": per_image * 50000 * 200 * full_runs / 3600})
    write_report(report, args.out, "device_deep_check.json", summary, "benchmarks/device_deep_check.py")
    return 0


def summary(r: dict) -> dict:
    """The status page's line for this report."""
    return {"what": f"deep-network chapter's paper path (`run_study` on CUDA: {len(r['runs'])} ResNet18 runs, "
                    f"{r['images_trained']:,} images trained in all)",
            "result": f"{r['sweep_seconds']:.1f} s, {1e3 * r['seconds_per_image']:.2f} ms per image; extrapolated to "
                      f"the paper profile's {r['paper_runs']} runs × 200 epochs × 50,000 images: "
                      f"{r['paper_gpu_hours_estimate']:.0f} GPU hours",
            "machine": f"{r['gpu']}, torch {r['torch']}"}


if __name__ == "__main__":
    sys.exit(main())

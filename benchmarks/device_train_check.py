"""Check the `paper` profile's training path on a CUDA device: ResNet18 (CIFAR stem, d-channel last
block), the tensor loader with batched crop + flip on the GPU, SGD with the paper's settings, NC
tracking, an atomic checkpoint and an exact resume — through ``ncmse.train.train`` itself.

A device machine has no copy of the data, so this uses the decoded CIFAR-10 test split
(``data/cifar10-jpeg/test.pt``, carried along) as both training and test data, subsampled.

    python benchmarks/device_train_check.py [--d 512 9] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import use_test_split_only, write_report  # noqa: E402

import ncmse.train as T  # noqa: E402
from ncmse.profiles import profile_config  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, nargs="+", default=[512, 9])
    ap.add_argument("--n-per-class", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    use_test_split_only()                              # only the test split is on a device machine
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "runs": []}
    ok = True
    for d in args.d:
        config = profile_config("paper", d=d, epochs=args.epochs, n_per_class=args.n_per_class, test_per_class=100,
                                nc_epochs=(1,))
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = Path(tmp) / "run.pt"
            t0 = time.perf_counter()
            full = T.train(config, device="cuda", progress=False)
            seconds = time.perf_counter() - t0
            T.train(config, device="cuda", checkpoint=ckpt, progress=False, stop_after=1)
            resumed = T.train(config, device="cuda", checkpoint=ckpt, progress=False)
        same = resumed["history"][-1]["train_loss"] == full["history"][-1]["train_loss"]
        close = abs(resumed["history"][-1]["train_loss"] - full["history"][-1]["train_loss"]) < 1e-3
        run = {"d": d, "seconds": seconds, "epochs": args.epochs, "images": len(full["train"]["per_class_accuracy"])
               * args.n_per_class, "train_accuracy": full["train"]["accuracy"], "NC1": full["train"]["NC1"],
               "live_units": full["train"]["live_units"], "resume_bitwise_equal": same, "resume_close": close}
        report["runs"].append(run)
        print(json.dumps(run), flush=True)
        ok &= close and full["train"]["live_units"] <= d
    write_report(report, args.out, "device_train_check.json", summary, "benchmarks/device_train_check.py")
    return 0 if ok else 1


def summary(r: dict) -> dict:
    """The status page's line for this report."""
    runs = r["runs"]

    def resume(x):
        return "bit-identical" if x["resume_bitwise_equal"] else "within 1e-3" if x["resume_close"] else "DIFFERS"
    return {"what": f"ResNet18 training on CUDA, paper configuration at d = {', '.join(str(x['d']) for x in runs)} "
                    f"({runs[0]['epochs']} epochs on {runs[0]['images']:,} images; interrupted and resumed)",
            "result": "; ".join(f"d={x['d']}: {x['seconds']:.1f} s, train acc {x['train_accuracy']:.3f}, "
                                f"{x['live_units']} live units, final loss after resume {resume(x)}" for x in runs),
            "machine": f"{r['gpu']}, torch {r['torch']}"}


if __name__ == "__main__":
    sys.exit(main())

"""Check the UFM solver and the NC-metric accumulator on a CUDA device against the CPU.

Run on a GPU machine from the repository root:  python benchmarks/device_check.py [--out DIR]
Prints (and writes JSON): closed form vs solver at the `paper` profile's UFM sizes on CUDA, the
same solve on the CPU (time ratio, same process), and NC metrics of N=50,000 × d=512 float32
features accumulated on CUDA against float64 on the CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_report  # noqa: E402

from ncmse import minimizers  # noqa: E402
from ncmse.metrics import NCAccumulator, nc_metrics  # noqa: E402
from ncmse.profiles import settings  # noqa: E402
from ncmse.ufm import UFM  # noqa: E402


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    parser.add_argument("--n-init", type=int, default=None, help="default: the paper profile's")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    report = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}
    S = settings("ufm_global", "paper")
    ufm = UFM(K=S["K"], n=S["n"], d=S["d"], lambda_W=S["lambda_W"], lambda_H=S["lambda_H"])
    n_init = args.n_init or S["n_init"]
    for dev in (cuda, cpu):
        sol, secs = timed(lambda dev=dev: ufm.solve(seed=0, n_init=n_init, device=dev), dev)
        rep = minimizers.summarize(ufm, sol)
        report[f"ufm_{dev.type}"] = {
            "seconds": secs, "n_init": n_init,
            "max_rel_gap": float(rep["rel_gap"].abs().max()),
            "max_NC1_NC2_NC3": max(float(rep[k].max()) for k in ("NC1", "NC2", "NC3")),
            "median_iters": int(sol.n_iter.float().median()),
        }
        print(dev.type, report[f"ufm_{dev.type}"], flush=True)
    report["ufm_time_ratio_cpu_over_cuda"] = report["ufm_cpu"]["seconds"] / report["ufm_cuda"]["seconds"]

    gen = torch.Generator().manual_seed(0)
    N, d, K = 50_000, 512, 10
    labels = torch.randint(0, K, (N,), generator=gen)
    X = (torch.randn(K, d, generator=gen)[labels] * 3 + torch.randn(N, d, generator=gen)).float()
    W = torch.randn(K, d, generator=gen)
    ref = nc_metrics(X.double(), labels, W.double())
    Xc, yc = X.to(cuda), labels.to(cuda)

    def on_cuda():
        acc = NCAccumulator(K, d, device=cuda)
        for i in range(0, N, 1024):
            acc.update(Xc[i:i + 1024], yc[i:i + 1024])
        return acc.compute(W.to(cuda))

    on_cuda()  # warm-up
    got, secs = timed(on_cuda, cuda)
    report["metrics_cuda"] = {"seconds": secs, "max_rel_diff_vs_cpu_float64":
                              max(abs(got[k] - ref[k]) / max(abs(ref[k]), 1e-300) for k in ref)}
    write_report(report, args.out, "device_check.json", summary, "benchmarks/device_check.py")
    ok = (report["ufm_cuda"]["max_rel_gap"] < 1e-8 and report["metrics_cuda"]["max_rel_diff_vs_cpu_float64"] < 1e-6)
    return 0 if ok else 1


def summary(r: dict) -> dict:
    """The status page's line for this report."""
    return {"what": f"UFM solver, paper-profile sizes, {r['ufm_cuda']['n_init']} starts (CUDA vs the same machine's "
                    "CPU)",
            "result": f"{r['ufm_cuda']['seconds']:.1f} s vs {r['ufm_cpu']['seconds']:.1f} s: "
                      f"{r['ufm_time_ratio_cpu_over_cuda']:.1f}×",
            "machine": f"{r['gpu']}, torch {r['torch']}"}


if __name__ == "__main__":
    sys.exit(main())

"""Time the NC metrics of ``ncmse.metrics`` against the way the paper's official code computes them.

Run from the repository root:  python benchmarks/nc_metrics_bench.py [--out benchmarks/results] [--device cpu]

Data: N = 50,000 random float32 features of dimension d = 512 in K = 10 classes (class centres plus
noise), a random classifier W (K, d), fed in mini-batches of 1024 to both methods:

* ours: :class:`ncmse.metrics.NCAccumulator`, one pass; per batch one GEMM of the centred features
  (Chan's merge), statistics in float64; then ``.compute(W)`` (all metrics, NC1 with the pseudo-inverse
  of Σ_B at rank K−1 from an SVD of the d×K class-mean matrix).
* baseline: as the paper's official code does it (CONTRIBUTING.md, "Pitfalls already seen"): a first pass
  for the class means, a second pass that sums per-sample outer products (h − μ_y)(h − μ_y)ᵀ, here as a
  B×d×d batched outer product summed over the batch, then NC1 = tr(Σ_W Σ_B^†)/K with
  ``torch.linalg.pinv(Σ_B)``.  Run in float64, the precision our accumulator keeps, so that the two
  must agree to 1e-6 and the timing compares algorithms, not precisions; the float32 variant (the
  official code's precision) is timed too, with its deviation from the float64 value.

Times are medians of ``--repeats`` runs (default 3) after one warm-up batch each.  Prints the machine
(CPU model, cores, torch version and threads) and, with ``--out DIR``, writes DIR/nc_metrics_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_report  # noqa: E402

from ncmse.machine import cpu_model  # noqa: E402
from ncmse.metrics import NCAccumulator  # noqa: E402


def machine(device: torch.device) -> dict:
    """What ran the benchmark: CPU model, cores, torch version and intra-op threads (and the GPU)."""
    info = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def make_data(N: int, d: int, K: int, seed: int, device: torch.device):
    """Features X (N, d) float32, labels y (N,), classifier W (K, d) float32."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (N,), generator=gen)
    X = (3 * torch.randn(K, d, generator=gen)[y] + torch.randn(N, d, generator=gen)).float()
    W = torch.randn(K, d, generator=gen)
    return X.to(device), y.to(device), W.to(device)


def nc1_ours(X, y, W, K: int, B: int) -> float:
    acc = NCAccumulator(K, X.shape[1], device=X.device)
    for i in range(0, X.shape[0], B):
        acc.update(X[i:i + B], y[i:i + B])
    return acc.compute(W)["NC1"]


def nc1_baseline(X, y, K: int, B: int, dtype: torch.dtype) -> float:
    """Two passes and a B×d×d outer product per batch, as in the official code (written afresh here)."""
    N, d = X.shape
    sums = torch.zeros(K, d, dtype=dtype, device=X.device)
    counts = torch.zeros(K, dtype=dtype, device=X.device)
    for i in range(0, N, B):                                   # pass 1: class means
        xb, yb = X[i:i + B].to(dtype), y[i:i + B]
        sums.index_add_(0, yb, xb)
        counts += torch.bincount(yb, minlength=K).to(dtype)
    means = sums / counts[:, None]                             # (K, d)
    Sigma_W = torch.zeros(d, d, dtype=dtype, device=X.device)
    for i in range(0, N, B):                                   # pass 2: Σ_W from outer products
        c = X[i:i + B].to(dtype) - means[y[i:i + B]]           # (B, d)
        Sigma_W += (c[:, :, None] * c[:, None, :]).sum(0)      # (B, d, d) summed over the batch
    Sigma_W /= N
    global_mean = (counts[:, None] * means).sum(0) / N
    Mbar = means - global_mean                                 # (K, d)
    Sigma_B = Mbar.T @ Mbar / K
    return float(torch.trace(Sigma_W @ torch.linalg.pinv(Sigma_B)) / K)


def timed(fn, device: torch.device, repeats: int):
    """(last result, list of wall times) over ``repeats`` runs."""
    times, out = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return out, times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for nc_metrics_<device>.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--N", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--K", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device(args.device)
    N, d, K, B = args.N, args.d, args.K, args.batch_size
    report = {"machine": machine(device), "N": N, "d": d, "K": K, "batch_size": B, "repeats": args.repeats,
              "features_dtype": "float32", "timing": f"median of {args.repeats} runs, after a warm-up batch"}
    print(json.dumps(report["machine"], indent=2), flush=True)
    X, y, W = make_data(N, d, K, args.seed, device)

    # warm-up (allocator, kernels): one batch each
    nc1_ours(X[:B], y[:B], W, K, B)
    nc1_baseline(X[:B], y[:B], K, B, torch.float64)

    runs = {
        "ours": lambda: nc1_ours(X, y, W, K, B),
        "baseline_float64": lambda: nc1_baseline(X, y, K, B, torch.float64),
        "baseline_float32": lambda: nc1_baseline(X, y, K, B, torch.float32),
    }
    for name, fn in runs.items():
        nc1, times = timed(fn, device, args.repeats)
        report[name] = {"NC1": nc1, "seconds_median": statistics.median(times), "seconds_all": times}
        print(f"{name:>17}: NC1 = {nc1:.12g}   median {statistics.median(times):.3f} s   "
              f"(runs: {', '.join(f'{t:.3f}' for t in times)})", flush=True)

    ref = report["baseline_float64"]["NC1"]
    rel = abs(report["ours"]["NC1"] - ref) / abs(ref)
    rel32 = abs(report["baseline_float32"]["NC1"] - ref) / abs(ref)
    ratio = report["baseline_float64"]["seconds_median"] / report["ours"]["seconds_median"]
    ratio32 = report["baseline_float32"]["seconds_median"] / report["ours"]["seconds_median"]
    report.update({
        "NC1_rel_diff_ours_vs_baseline_float64": rel,
        "NC1_rel_diff_baseline_float32_vs_float64": rel32,
        "agree_rel_1e-6": rel < 1e-6,
        "ratio_baseline_float64_over_ours": ratio,
        "ratio_baseline_float32_over_ours": ratio32,
    })
    print(f"NC1 relative difference, ours vs baseline (float64): {rel:.2e}  "
          f"({'agree' if rel < 1e-6 else 'DISAGREE'} at 1e-6)")
    print(f"NC1 relative difference, baseline float32 vs float64: {rel32:.2e}")
    print(f"time ratio baseline/ours: {ratio:.1f}x (float64 baseline), {ratio32:.1f}x (float32 baseline)")
    write_report(report, args.out, f"nc_metrics_{device.type}.json", summary, "benchmarks/nc_metrics_bench.py")
    return 0 if rel < 1e-6 else 1


def summary(r: dict) -> dict:
    """The status page's line for this report."""
    m = r["machine"]
    ours, b64, b32 = (r[k]["seconds_median"] for k in ("ours", "baseline_float64", "baseline_float32"))
    return {"what": f"NC metrics, N={r['N']:,}, d={r['d']}, K={r['K']} (ncmse.metrics vs per-batch outer products)",
            "result": f"{ours:.2f} s vs {b64:.1f} s (float64) / {b32:.1f} s (float32): {b64 / ours:.0f}× / "
                      f"{b32 / ours:.0f}×",
            "machine": f"{m['cpu']}, {m['cpu_count']} cores, {m['torch_num_threads']} threads"}


if __name__ == "__main__":
    sys.exit(main())

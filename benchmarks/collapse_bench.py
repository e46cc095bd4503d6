"""``ncmse.measure_collapse`` against a two-pass computation of the same metrics: passes, time, peak memory.

Run from the repository root:  python benchmarks/collapse_bench.py [--out benchmarks/results] [--repeats 3]

The setting is the paper's CIFAR-10 scale: N = 50,000 features of dimension d = 512, K = 10 classes, in
batches of 1,024, through a model whose classifier (an ``nn.Linear``) sees the stored features
(as a fresh tensor each batch, as a network's layer makes them), so that the numbers measure the metric
computation and its passes; with a real network every pass is also a forward pass over the data, which
the report counts. Methods:

* ``one pass``: ``measure_collapse(ncc=None)``: NC1–NC4 and the accuracy from one pass;
* ``one pass + NC4_ncc pass``: ``measure_collapse()``, the default: NC4_ncc in a second pass;
* ``one pass, features kept``: ``measure_collapse(ncc="keep")``: NC4_ncc from the kept features;
* ``two-pass``: what two-pass implementations do (written afresh here): class means in a first pass,
  the within-class covariance in a second, NC4_ncc in a third; float64 statistics as ours.

Each method runs in its own subprocess (after the data are made), so that its peak memory is its own:
the resident set is sampled every millisecond and the peak above the level before the method is
reported, beside ``ru_maxrss``.  Times are medians of ``--repeats`` runs after a warm-up, all methods
on this machine one after the other; the ratio to the default method is the result.  Every method must
give the same metrics (NC1–NC4 to 1e-9 relative, NC4_ncc exactly), or the script exits 1.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_report  # noqa: E402
from nc_metrics_bench import machine, make_data  # noqa: E402

from ncmse import threads  # noqa: E402
from ncmse.collapse import measure_collapse  # noqa: E402
from ncmse.metrics import nc_metrics_from_statistics, ncc_mismatch  # noqa: E402

METHODS = ("one pass", "one pass + NC4_ncc pass", "one pass, features kept", "two-pass")
KEYS = ("NC1", "NC2", "NC3", "NC4", "NC4_ncc")


class Batches:
    """The features in batches of B, counting how often it is iterated (the passes)."""

    def __init__(self, X, y, B: int):
        self.X, self.y, self.B, self.passes = X, y, B, 0

    def __iter__(self):
        self.passes += 1
        for i in range(0, self.X.shape[0], self.B):
            yield self.X[i:i + self.B], self.y[i:i + self.B]


class Fresh(nn.Module):
    """The stored features as a new tensor each batch, as a network's layer makes them (so that keeping
    them costs their memory, as it would behind a real network)."""

    def forward(self, x):
        return x.clone()


def classifier(W: torch.Tensor) -> nn.Module:
    """A model whose last ``nn.Linear`` sees the features (W (K, d), no bias)."""
    model = nn.Sequential(Fresh(), nn.Linear(W.shape[1], W.shape[0], bias=False))
    model[1].weight.data.copy_(W)
    return model


@torch.no_grad()
def two_pass(model: nn.Module, loader: Batches, K: int) -> dict:
    """Means, then the within-class covariance, then NC4_ncc: three passes of a forward hook."""
    layer = model[-1]
    W = layer.weight.detach()
    d = W.shape[1]
    feats = {}
    handle = layer.register_forward_hook(lambda m, a, o: feats.update(h=a[0].double(), z=o))
    sums, counts, correct = torch.zeros(K, d, dtype=torch.float64), torch.zeros(K, dtype=torch.float64), 0
    for x, y in loader:                                        # pass 1: class means (and accuracy)
        model(x)
        sums.index_add_(0, y, feats["h"])
        counts += torch.bincount(y, minlength=K).double()
        correct += int((feats["z"].argmax(1) == y).sum())
    means = sums / counts[:, None]
    Sigma_W = torch.zeros(d, d, dtype=torch.float64)
    for x, y in loader:                                        # pass 2: within-class covariance
        model(x)
        c = feats["h"] - means[y]
        Sigma_W += c.T @ c
    Sigma_W /= counts.sum()
    disagree = 0.0
    for x, y in loader:                                        # pass 3: nearest class mean against argmax
        model(x)
        disagree += ncc_mismatch(feats["h"], means, W) * len(y)
    handle.remove()
    global_mean = (counts[:, None] * means).sum(0) / counts.sum()
    out = nc_metrics_from_statistics(means, global_mean, Sigma_W, W)
    return {**out, "NC4_ncc": disagree / float(counts.sum()), "accuracy": correct / float(counts.sum())}


def run_method(method: str, model, loader: Batches, K: int) -> dict:
    if method == "two-pass":
        return two_pass(model, loader, K)
    ncc = {"one pass": None, "one pass + NC4_ncc pass": "pass", "one pass, features kept": "keep"}[method]
    return measure_collapse(model, loader, ncc=ncc)


def _rss() -> int:
    """Resident set size of this process in bytes."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


def child(method: str, N: int, d: int, K: int, B: int, repeats: int, seed: int, threads_: int | None) -> dict:
    """Time ``method`` and measure its peak memory, in this (fresh) process."""
    threads.use_budget(threads_)
    X, y, W = make_data(N, d, K, seed, torch.device("cpu"))
    model, loader = classifier(W), Batches(X, y, B)
    base, peak, stop = _rss(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    loader.passes = 0
    out = run_method(method, model, loader, K)                 # the first run: memory, passes, warm-up
    stop.set()
    sampler.join()
    passes = loader.passes
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_method(method, model, loader, K)
        times.append(time.perf_counter() - t0)
    return {"passes": passes, "seconds": statistics.median(times), "seconds_all": times,
            "peak_extra_bytes": max(0, peak[0] - base), "feature_bytes": X.numel() * X.element_size(),
            "metrics": {k: out[k] for k in KEYS if k in out}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for collapse_cpu.json")
    parser.add_argument("--N", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores but one)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    K, B = 10, 1024
    if args.child:
        print(json.dumps(child(args.child, args.N, args.d, K, B, args.repeats, args.seed, args.threads)))
        return 0
    threads.use_budget(args.threads)
    report = {"machine": machine(torch.device("cpu")), "N": args.N, "d": args.d, "K": K, "batch": B,
              "repeats": args.repeats,
              "timing": f"median of {args.repeats} runs after a first run, each method in its own process",
              "methods": {}}
    for method in METHODS:
        cmd = [sys.executable, __file__, "--child", method, "--N", str(args.N), "--d", str(args.d),
               "--repeats", str(args.repeats), "--seed", str(args.seed)]
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{method}: the measuring process failed:\n{done.stderr[-3000:]}")
        entry = json.loads(done.stdout.strip().splitlines()[-1])
        report["methods"][method] = entry
        print(f"{method:>26}: {entry['passes']} passes, {entry['seconds']:.2f} s, "
              f"peak +{entry['peak_extra_bytes'] / 2**20:.0f} MiB", flush=True)
    ref = report["methods"]["two-pass"]["metrics"]
    agree = all(abs(v - ref[k]) <= (0 if k == "NC4_ncc" else 1e-9 * max(1.0, abs(ref[k])))
                for e in report["methods"].values() for k, v in e["metrics"].items())
    report["metrics_agree"] = agree
    default = report["methods"]["one pass + NC4_ncc pass"]["seconds"]
    for e in report["methods"].values():
        e["ratio_to_default"] = e["seconds"] / default
    write_report(report, args.out, "collapse_cpu.json", summary, "benchmarks/collapse_bench.py")
    return 0 if agree else 1


def summary(r: dict) -> dict:
    """The status page's line for this report."""
    m, ms = r["machine"], r["methods"]
    mib = {k: v["peak_extra_bytes"] / 2**20 for k, v in ms.items()}

    def part(k: str) -> str:
        return f"{k}: {ms[k]['passes']} passes, {ms[k]['seconds']:.2f} s, +{mib[k]:.0f} MiB"

    return {"what": f"measure_collapse against a two-pass computation (N={r['N']:,}, d={r['d']}, K={r['K']})",
            "result": "; ".join(part(k) for k in METHODS)
                      + ("; same metrics" if r["metrics_agree"] else "; METRICS DIFFER"),
            "machine": f"{m['cpu']}, {m['cpu_count']} cores, {m['torch_num_threads']} threads"}


if __name__ == "__main__":
    sys.exit(main())

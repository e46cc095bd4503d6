"""Thread budget and wait policy, quiet and beside a busy process (CPU).

    python benchmarks/threads_bench.py [--epochs 5] [--repeats 2] [--out benchmarks/results]

One training run of the ``cpu`` profile's kind (Fashion-MNIST, the MLP, 1,000 images a class, SGD,
d = 16; the data loaded before the clock starts) is timed in a fresh process for each combination of
threads (1, 2) and OpenMP wait policy (default: spin, then sleep; PASSIVE: sleep at once), first on
a quiet machine, then with one other process keeping a core busy (a pure Python loop).  Then the
study's way of using the cores is timed: the same number of runs one after another in one process
with 2 threads, against 2 worker processes with 1 thread each (``ncmse.executors.Local`` with the
budget of ``ncmse.threads``), both quiet.  Reported: seconds (median of ``--repeats``) and the ratios
busy / quiet and against torch's default (2 threads, default policy, quiet).  Timings belong here,
never in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import busy_core, data_root, write_report  # noqa: E402

from ncmse.threads import child_environment  # noqa: E402

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {repo!r})
import torch
from ncmse.profiles import profile_config
from ncmse import train as T
from ncmse.data import load_dataset
config = profile_config("cpu", epochs={epochs}, nc_epochs=(), seed={seed})
load_dataset(config.dataset, "train", root={root!r}); load_dataset(config.dataset, "test", root={root!r})
t0 = time.perf_counter()
r = T.train(config, device="cpu", progress=False, data_root={root!r})
print(json.dumps({{"seconds": time.perf_counter() - t0, "threads": torch.get_num_threads(),
                  "policy": os.environ.get("OMP_WAIT_POLICY"), "test_accuracy": r["test"]["accuracy"]}}))
"""


def _child(threads: int, policy: str, epochs: int, seed: int, root: str) -> tuple[list[str], dict]:
    """The command and environment of one timed run in a fresh process."""
    env = child_environment(threads, base={k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"})
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    return [sys.executable, "-c", CHILD.format(repo=str(REPO), epochs=epochs, seed=seed, root=root)], env


def _one(threads: int, policy: str, epochs: int, seed: int, root: str) -> dict:
    cmd, env = _child(threads, policy, epochs, seed, root)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _timed(threads, policy, epochs, repeats, root, busy: bool) -> dict:
    with busy_core(busy):
        runs = [_one(threads, policy, epochs, 0, root) for _ in range(repeats)]
    return {"threads": threads, "policy": policy, "busy": busy,
            "seconds": statistics.median(r["seconds"] for r in runs), "seconds_all": [r["seconds"] for r in runs],
            "test_accuracy": runs[0]["test_accuracy"]}


def _two_ways(epochs: int, root: str, n_runs: int) -> dict:
    """n_runs runs in one process with 2 threads (one after another) against 2 processes × 1 thread."""
    t0 = time.perf_counter()
    for s in range(n_runs):
        _one(2, "default", epochs, s, root)
    sequential = time.perf_counter() - t0
    t0 = time.perf_counter()
    pool = []
    for s in range(n_runs):
        cmd, env = _child(1, "default", epochs, s, root)
        pool.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
        if len(pool) == 2 or s == n_runs - 1:
            for p in pool:
                p.communicate()
            pool = []
    parallel = time.perf_counter() - t0
    return {"runs": n_runs, "sequential_2_threads_s": sequential, "two_workers_1_thread_s": parallel,
            "speedup": sequential / parallel}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--runs", type=int, default=4, help="runs for the sequential vs two-worker comparison")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    from ncmse.machine import device_description

    root = data_root()
    cells = []
    for busy in (False, True):
        for threads in (1, 2):
            for policy in ("default", "PASSIVE"):
                cells.append(_timed(threads, policy, args.epochs, args.repeats, root, busy))
                print(json.dumps(cells[-1]), flush=True)
    base = next(c for c in cells if c["threads"] == 2 and c["policy"] == "default" and not c["busy"])["seconds"]
    for c in cells:
        quiet = next(q for q in cells if not q["busy"] and q["threads"] == c["threads"] and q["policy"] == c["policy"])
        c["over_default_quiet"] = c["seconds"] / base
        c["busy_over_quiet"] = c["seconds"] / quiet["seconds"]
    report = {"machine": device_description(), "epochs": args.epochs, "repeats": args.repeats,
              "run": "cpu profile: Fashion-MNIST, MLP, d=16, 1,000 images a class, batch 128",
              "cells": cells, "two_ways": _two_ways(args.epochs, root, args.runs),
              "date": time.strftime("%Y-%m-%d", time.gmtime())}
    write_report(report, args.out, "threads_cpu.json", summary, "benchmarks/threads_bench.py")
    return 0


def summary(r: dict) -> dict:
    """The status page's line for this report."""
    def cell(threads, policy, busy):
        return next(c for c in r["cells"] if c["threads"] == threads and c["policy"] == policy and c["busy"] == busy)

    parts = []
    for threads, policy in ((2, "default"), (2, "PASSIVE"), (1, "default")):
        q, b = cell(threads, policy, False), cell(threads, policy, True)
        parts.append(f"{threads} thread(s), {policy.lower()} wait: {q['seconds']:.2f} s quiet, "
                     f"{b['seconds']:.2f} s beside a busy process ({b['busy_over_quiet']:.1f}×)")
    w = r["two_ways"]
    parts.append(f"{w['runs']} runs: 2 workers × 1 thread {w['speedup']:.2f}× faster than one process × 2 threads")
    return {"what": f"one training run ({r['run']}, {r['epochs']} epochs) by thread count and OpenMP wait policy, "
                    "quiet and beside one busy process",
            "result": "; ".join(parts), "machine": r["machine"]}


if __name__ == "__main__":
    sys.exit(main())

"""Interruption and concurrency drill for the results cache and the checkpoints (CPU).

    python benchmarks/interrupt_drill.py [--kills 12] [--concurrent 3] [--seed 0] [--out benchmarks/results]

1. **Kills.**  One training run through the command line (``python -m ncmse train`` at the smoke
   profile, made longer) is started, killed at a random moment — SIGKILL, SIGTERM or SIGINT in turn, the
   delay uniform between 0.2 s and the uninterrupted run's wall time — and started again, until at
   least ``--kills`` kills have landed on a live process.  Whenever a run completes, its cached result is
   compared with an uninterrupted run's, field by field and bit for bit (history, final metrics,
   classifier, validity), and the drill starts over on an empty cache.
2. **Concurrent sweeps.**  ``--concurrent`` times, two identical ``sweep`` commands start at once on
   one empty cache; both must exit 0, and each configuration must be trained by exactly one of them.

Every process runs with one thread (``OMP_NUM_THREADS=1``), so that the resumed and the uninterrupted
runs execute the same kernels.  The report (kills, signals, delays, what each interrupted run left,
the comparisons) goes to ``<out>/interrupt_drill_cpu.json`` and to the book's status page.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import data_root as benchmark_data_root  # noqa: E402
from _report import write_report  # noqa: E402

from ncmse.machine import device_description  # noqa: E402

SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
COMPARED = ("config", "history", "train", "test", "W", "b", "diverged", "validity", "complete")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _train_cmd(cache: Path, data_root: str) -> list[str]:
    return [sys.executable, "-m", "ncmse", "train", "--profile", "smoke", "--epochs", "30", "--n-per-class", "600",
            "--nc-epochs", "5", "10", "15", "20", "25", "--quiet", "--device", "cpu", "--data-root", data_root,
            "--cache", str(cache)]


def _default_sigint() -> None:
    """In the child: Ctrl-C's default action, which a drill started in the background inherits as 'ignore'
    (a shell without job control ignores SIGINT for background commands, and Python keeps that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _result(cache: Path) -> dict | None:
    files = sorted((cache / "results").glob("*.json"))
    return json.loads(files[0].read_text()) if files else None


def _checkpoint_epoch(cache: Path) -> int | None:
    import torch

    files = sorted((cache / "checkpoints").glob("*.pt"))
    if not files:
        return None
    try:
        return int(torch.load(files[0], weights_only=True)["epoch"])
    except Exception:                    # a file the next run will move aside
        return -1


def kills(n_kills: int, rng: random.Random, data_root: str, work: Path) -> dict:
    ref_cache = work / "reference"
    t0 = time.perf_counter()
    ref = subprocess.run(_train_cmd(ref_cache, data_root), cwd=REPO, env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if ref.returncode != 0:
        raise SystemExit(f"the uninterrupted run failed:\n{ref.stderr[-2000:]}")
    reference = _result(ref_cache)
    events, trials = [], []
    trial, launches, landed = 0, 0, 0
    cache = work / f"trial{trial}"
    while True:
        finish = landed >= n_kills      # enough kills: let this launch run to the end
        launches += 1
        proc = subprocess.Popen(_train_cmd(cache, data_root), cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
        if not finish:
            sig = SIGNALS[landed % len(SIGNALS)]
            delay = rng.uniform(0.2, wall)
            try:
                proc.communicate(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(sig)
                _, err = proc.communicate()
                landed += 1
                cached = _result(cache) is not None     # the kill came after the result was written
                events.append({"trial": trial, "signal": signal.Signals(sig).name, "delay_s": round(delay, 3),
                               "returncode": proc.returncode, "checkpoint_epoch_after": _checkpoint_epoch(cache),
                               "result_cached": cached,
                               "clean_message": sig == signal.SIGKILL or cached or "resumes" in err,
                               "traceback": "Traceback" in err})
                continue
        else:
            proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a run exited {proc.returncode}")
        result = _result(cache)
        same = {k: result.get(k) == reference.get(k) for k in COMPARED}
        trials.append({"trial": trial, "kills": sum(e["trial"] == trial for e in events),
                       "bit_identical": all(same.values()), "fields": same})
        if finish:
            break
        trial += 1                       # finished before its kill: start over on an empty cache
        cache = work / f"trial{trial}"
    return {"uninterrupted_wall_s": round(wall, 2), "kills_landed": landed, "launches": launches,
            "events": events, "trials": trials,
            "all_bit_identical": all(t["bit_identical"] for t in trials),
            "no_traceback": not any(e["traceback"] for e in events),
            "clean_messages": all(e["clean_message"] for e in events)}


def _sweep_cmd(cache: Path, data_root: str) -> list[str]:
    return [sys.executable, "-m", "ncmse", "sweep", "--profile", "smoke", "--d", "3", "5", "--loss", "mse", "ce",
            "--quiet", "--device", "cpu", "--data-root", data_root, "--cache", str(cache)]


def _cached_column(stdout: str) -> dict[str, str]:
    rows = [line.strip("|").split("|") for line in stdout.splitlines() if line.startswith("| fashion_mnist")]
    return {f"d={r[2].strip()} {r[3].strip()}": r[-1].strip() for r in rows}


def concurrent(n: int, data_root: str, work: Path) -> dict:
    trials = []
    for i in range(n):
        cache = work / f"concurrent{i}"
        procs = [subprocess.Popen(_sweep_cmd(cache, data_root), cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate() for p in procs]
        tables = [_cached_column(o[0]) for o in outs]
        trained = {k: sum(t.get(k) == "False" for t in tables) for k in tables[0]} if tables[0] else {}
        trials.append({"returncodes": [p.returncode for p in procs], "trained_per_configuration": trained,
                       "each_trained_once": len(trained) == 4 and all(v == 1 for v in trained.values()),
                       "temporary_files_left": len(list((cache / "results").glob("*.tmp")))})
    return {"trials": trials,
            "all_ok": all(t["returncodes"] == [0, 0] and t["each_trained_once"] and not t["temporary_files_left"]
                          for t in trials)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=12)
    p.add_argument("--concurrent", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    root = benchmark_data_root()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ncmse-drill-") as tmp:
        k = kills(args.kills, random.Random(args.seed), root, Path(tmp))
        c = concurrent(args.concurrent, root, Path(tmp))
    report = {"machine": device_description(), "threads": 1, "command": " ".join(_train_cmd(Path("DIR"), "ROOT")[1:]),
              "kills": k, "concurrent_sweeps": c, "passed": k["all_bit_identical"] and k["no_traceback"]
              and k["clean_messages"] and c["all_ok"], "seconds": round(time.perf_counter() - t0, 1),
              "date": time.strftime("%Y-%m-%d", time.gmtime())}
    write_report(report, args.out, "interrupt_drill_cpu.json", summary, "benchmarks/interrupt_drill.py")
    return 0 if report["passed"] else 1


def summary(r: dict) -> dict:
    """The status page's line for this report."""
    k, c = r["kills"], r["concurrent_sweeps"]
    signals = sorted({e["signal"] for e in k["events"]})
    identical = sum(t["bit_identical"] for t in k["trials"])
    once = sum(t["each_trained_once"] and t["returncodes"] == [0, 0] for t in c["trials"])
    return {"what": "interruption drill: a CLI training run killed at random moments "
                    f"({', '.join(signals)}), then two identical sweeps at once on one cache",
            "result": f"{k['kills_landed']} kills; {identical} of {len(k['trials'])} completed runs bit-identical to "
                      f"an uninterrupted one; {once} of {len(c['trials'])} concurrent pairs both exit 0 and train each "
                      f"configuration once: {'passed' if r['passed'] else 'FAILED'} ({r['date']})",
            "machine": f"{r['machine']}, {r['threads']} thread"}


if __name__ == "__main__":
    sys.exit(main())

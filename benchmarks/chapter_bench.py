"""The deep-network chapter's training at ``cpu`` from an empty cache: local workers against one
process, quiet and beside a busy process (CPU).

    python benchmarks/chapter_bench.py [--modes local busy sequential] [--out benchmarks/results]

Each mode trains every run of ``ncmse.study.run_study("cpu")`` (the learning-rate tuning, then the
test runs: what the chapter "Deep networks" trains) into a fresh, empty cache, in a fresh process
that imports torch with the thread budget the book gives it:

* ``local``: 2 local worker processes × 1 thread (``./run.sh book``'s default on 2 cores);
* ``busy``: the same with one other process beside it that keeps a core busy (a pure Python loop);
* ``sequential``: every run one after another in that one process, with ``ncmse.threads``' budget
  for a single computing process (all cores but one).

``--baseline REV`` times each mode a second time with the code of git revision ``REV`` (in a
temporary worktree), right after this code's: a machine that is slower today than yesterday slows
both.  Reported per mode: wall seconds of the whole study and of its tuning stage, the runs' own training
seconds, and a fingerprint of every run's test accuracy, so that the modes can be seen to train the
same numbers.  The chapter's wall time in a book build adds its analysis and figures (~20 s; the
book's status page lists each build's chapter times).  Modes already in the report are kept, so they
may be run one at a time.  Timings belong here, never in tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import RESULTS, busy_core, data_root, write_report  # noqa: E402

from ncmse.threads import child_environment, default_threads  # noqa: E402

MODES = ("local", "busy", "sequential")
FILENAME = "chapter_cpu.json"

CHILD = r"""
import json, sys, time
sys.path.insert(0, {repo!r})
import ncmse.study as study
from ncmse.executors import Local, Sequential
from ncmse.experiments import ResultsCache
executor = Local(workers=2, threads=1) if {local!r} else Sequential()
stages = []
real_sweep = study.sweep
def timed_sweep(*a, **kw):
    t = time.perf_counter(); out = real_sweep(*a, **kw); stages.append(time.perf_counter() - t); return out
study.sweep = timed_sweep
t0 = time.perf_counter()
R = study.run_study({profile!r}, cache=ResultsCache({cache!r}), executor=executor, progress=False, data_root={root!r})
total = time.perf_counter() - t0
runs = R.unique_runs
from pathlib import Path
entries = [json.loads(p.read_text()) for p in Path({cache!r}).glob("*.json")]    # tuning runs included
print(json.dumps({{"seconds": total, "stage_seconds": stages, "runs": len(entries), "test_runs": len(runs),
                   "run_seconds": sum(e["provenance"]["wall_seconds"] for e in entries),
                   "accuracies": sorted((r["config"]["d"], r["config"]["loss"], r["config"]["alpha"], r["config"]["M"],
                                         r["config"]["seed"], r["config"]["feature_relu"], r["config"]["lr"],
                                         r["test"]["accuracy"] if r["test"] else None) for r in runs)}}))
"""


def run_mode(mode: str, root: str, profile: str = "cpu", repo: Path = REPO) -> dict:
    """One mode in a fresh process, with the package of the checkout ``repo``."""
    threads = 1 if mode in ("local", "busy") else default_threads()
    with tempfile.TemporaryDirectory(prefix="ncmse-chapter-bench-") as tmp:
        code = CHILD.format(repo=str(repo), profile=profile, local=mode != "sequential",
                            cache=str(Path(tmp) / "results"), root=root)
        with busy_core(mode == "busy"):
            out = subprocess.run([sys.executable, "-c", code], env=child_environment(threads), capture_output=True,
                                 text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    acc = r.pop("accuracies")
    r["accuracy_fingerprint"] = hashlib.sha256(json.dumps(acc).encode()).hexdigest()[:16]
    r["tuning_seconds"] = r["stage_seconds"][0]
    r["threads"] = threads
    r["mode"] = mode
    r["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return r


def baseline_mode(mode: str, root: str, profile: str, rev: str) -> dict:
    """``mode`` with the code of git revision ``rev`` (a temporary worktree): the baseline that the
    same session's machine times beside this code's, so that a slower or faster day cancels out."""
    with tempfile.TemporaryDirectory(prefix="ncmse-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev], check=True,
                       capture_output=True)
        try:
            return {**run_mode(mode, root, profile, tree), "rev": rev}
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False,
                           capture_output=True)


def summary(report: dict) -> dict:
    m = report["modes"]
    parts = [f"{name} {m[name]['seconds'] / 60:.1f} min" for name in MODES if name in m]
    for name, b in report.get("baseline", {}).items():
        if name in m:
            parts.append(f"{name} {m[name]['seconds'] / b['seconds']:.2f}× the time of the code at {b['rev']} "
                         f"({b['seconds'] / 60:.1f} min, same session)")
    if "local" in m and "busy" in m:
        parts.append(f"busy/quiet {m['busy']['seconds'] / m['local']['seconds']:.2f}×")
    if "local" in m and "sequential" in m:
        parts.append(f"sequential/local {m['sequential']['seconds'] / m['local']['seconds']:.2f}×")
    same = len({v["accuracy_fingerprint"] for v in m.values()}) == 1
    parts.append("every mode trained the same accuracies" if same else "the modes' accuracies differ")
    return {"what": "the deep chapter's training at cpu from an empty cache (2 workers × 1 thread; beside a busy "
                    "process; sequential)", "result": "; ".join(parts), "machine": report["machine"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--baseline", metavar="REV", default=None,
                   help="also time each mode with the code of this git revision, right after this code's")
    p.add_argument("--profile", default="cpu", help="smoke: a check of this script in seconds (not reported)")
    p.add_argument("--out", default=None, help="folder of the report (e.g. benchmarks/results); modes already "
                                                "there are kept")
    args = p.parse_args(argv)
    from ncmse.machine import device_description

    root = data_root()
    old = Path(args.out or RESULTS) / FILENAME
    report = json.loads(old.read_text()) if old.exists() else {"modes": {}}
    report["machine"] = device_description()
    report["profile"] = args.profile
    for mode in args.modes:
        print(f"[chapter_bench] {mode} …", file=sys.stderr, flush=True)
        report["modes"][mode] = run_mode(mode, root, args.profile)
        print(json.dumps(report["modes"][mode]), file=sys.stderr, flush=True)
        if args.baseline:
            print(f"[chapter_bench] {mode} with the code at {args.baseline} …", file=sys.stderr, flush=True)
            report.setdefault("baseline", {})[mode] = baseline_mode(mode, root, args.profile, args.baseline)
            print(json.dumps(report["baseline"][mode]), file=sys.stderr, flush=True)
    report.pop("summary", None)
    write_report(report, args.out, FILENAME, summary, "benchmarks/chapter_bench.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())

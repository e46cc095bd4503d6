"""The deep-network chapter's training at ``cpu`` from an empty cache: local workers against one
process, quiet and beside a busy process (CPU).

    python benchmarks/chapter_bench.py [--modes local busy sequential] [--out benchmarks/results]
    python benchmarks/chapter_bench.py --book [--cap avx2] [--out benchmarks/results]

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

``--book`` times the whole main job instead, per machine class: ``python -m ncmse book --profile cpu``
(what ``./run.sh book`` runs once it is set up) in a fresh copy of the working tree (the files git
tracks or would track: no results cache, no decoded data, no built site), on a quiet machine; the
report ``book_cpu.json`` keeps one entry per machine class (CPU model, cores, capability) with the
total wall time and every chapter's.  ``--cap avx2`` caps torch's dispatch and oneDNN at AVX2
(``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``): what a CPU without AVX-512 and without
native bf16 does, measured on a newer one.  It is labelled as capped: a real AVX2 CPU of another
make and clock is another machine.
"""

from __future__ import annotations

import argparse
import contextlib
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
from ncmse.cache import ResultsCache
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


BOOK_FILENAME = "book_cpu.json"
CAPS = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def run_book(root: str, cap: str | None = None, profile: str = "cpu", keep: str | None = None) -> dict:
    """``python -m ncmse book --profile PROFILE`` in a fresh copy of the working tree, timed; with
    ``cap``, under that capability cap (:data:`CAPS`); with ``keep``, the copy is made in that (new)
    folder and left there (its cache and site, to look at)."""
    import os

    env = {**os.environ, "NCMSE_DATA_ROOT": root, **CAPS.get(cap, {})}
    for k in ("NCMSE_CACHE", "NCMSE_ARCHIVE", "NCMSE_BF16_WARNED", "NCMSE_CHANNELS_LAST"):
        env.pop(k, None)
    probe = ("from ncmse.hardware import capability; from ncmse.machine import device_description; "
             "print(device_description()); print(capability())")
    machine, capability = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True,
                                         text=True, check=True).stdout.strip().splitlines()
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    if keep is not None and Path(keep).exists():
        raise SystemExit(f"--keep {keep}: the folder exists; give a new one")
    with (contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory(prefix="ncmse-book-bench-")) as tmp:
        for name in filter(None, files):
            src, dst = REPO / name, Path(tmp) / name
            if src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(src.read_bytes())
        t0 = time.perf_counter()
        # the copy's package, also in the site build's autodoc (not an editable install of the checkout)
        out = subprocess.run([sys.executable, "-m", "ncmse", "book", "--profile", profile], cwd=tmp,
                             env={**env, "PYTHONPATH": str(tmp)}, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        timings_file = Path(tmp) / "_build" / "timings.json"
        timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    return {"machine": machine, "capability": capability, "capped": cap, "profile": profile, "seconds": seconds,
            "ok": out.returncode == 0, "tail": out.stdout.strip().splitlines()[-3:] if out.returncode else [],
            "chapters": {k: round(v["seconds"], 1) for k, v in timings.items()},
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def book_class(r: dict) -> str:
    """The machine class of a book timing: CPU, cores and capability (and the cap, where one was set)."""
    capped = f", capped at {r['capped'].upper()} on this CPU" if r.get("capped") else ""
    return f"{r['machine']} ({r['capability']}{capped})"


def book_summary(report: dict) -> dict:
    runs = report["classes"]
    parts = [f"{r['seconds'] / 60:.1f} min on {name}{'' if r['ok'] else ' (FAILED)'}" for name, r in runs.items()]
    machines = sorted({r["machine"] for r in runs.values()})
    return {"what": "./run.sh book at cpu from a fresh copy (empty cache, no decoded data), per machine class",
            "result": "; ".join(parts), "machine": "; ".join(machines),
            "capability": "; ".join(sorted({r["capability"] for r in runs.values()}))}


def summary(report: dict) -> dict:
    if "classes" in report:
        return book_summary(report)
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
    p.add_argument("--book", action="store_true", help="time the whole main job per machine class instead")
    p.add_argument("--cap", choices=sorted(CAPS), default=None, help="with --book: cap the CPU's capability")
    p.add_argument("--keep", metavar="DIR", default=None, help="with --book: build in this new folder and keep it")
    args = p.parse_args(argv)
    from ncmse.machine import device_description

    root = data_root()
    if args.book:
        old = Path(args.out or RESULTS) / BOOK_FILENAME
        report = json.loads(old.read_text()) if old.exists() else {"classes": {}}
        print(f"[chapter_bench] the book at {args.profile}{f', capped at {args.cap}' if args.cap else ''} …",
              file=sys.stderr, flush=True)
        r = run_book(root, args.cap, args.profile, args.keep)
        report["classes"][book_class(r)] = r
        report.pop("summary", None)
        report["capability"] = "; ".join(sorted({v["capability"] for v in report["classes"].values()}))
        write_report(report, args.out, BOOK_FILENAME, summary, "benchmarks/chapter_bench.py")
        return 0 if r["ok"] else 1
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

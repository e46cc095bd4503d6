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
3. **Damaged files between kills.**  The same training run's files are damaged between launches, one
   kind of damage at a time (:data:`DAMAGES`): its cached result replaced by binary bytes, cut short, or
   replaced by another run's result JSON (three times the same key, so that every ``*.corrupt`` file
   must be kept), and its checkpoint, left by a launch killed after it was written, replaced by binary
   bytes or cut short.  After each damage the run is launched, killed once more at a random moment (in
   the first half of an uninterrupted run's wall time: before or after it finds the damage) and launched
   to the end; every damaged file must be moved aside with exactly one warning line, no launch
   may print a traceback, and the final result must be bit-identical to the uninterrupted run's.

Every process runs with one thread (``OMP_NUM_THREADS=1``), so that the resumed and the uninterrupted
runs execute the same kernels.  The report (kills, signals, delays, what each interrupted run left,
the comparisons) goes to ``<out>/interrupt_drill_cpu.json`` and to the book's status page.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
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
#: (which file, what is done to it) in the drill's third part
DAMAGES = (("result", "binary bytes"), ("result", "cut short"), ("result", "another run's JSON"),
           ("checkpoint", "binary bytes"), ("checkpoint", "cut short"))
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


def damage(blob: bytes, kind: str, rng: random.Random, other: bytes = b"") -> bytes:
    """``blob`` damaged as ``kind`` says (:data:`DAMAGES`): random bytes of its length that are not UTF-8
    (a leading 0xff), a strict prefix of it (at least one byte), or ``other`` (another run's file)."""
    if kind == "binary bytes":
        return b"\xff" + rng.randbytes(max(len(blob), 64) - 1)
    if kind == "cut short":
        return blob[:rng.randrange(1, len(blob))]
    if kind == "another run's JSON":
        if not other or other == blob:
            raise ValueError("another run's JSON must differ from the damaged file")
        return other
    raise ValueError(f"unknown damage {kind!r}")


def _launch(cache: Path, data_root: str) -> subprocess.Popen:
    return subprocess.Popen(_train_cmd(cache, data_root), cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def _kill_at(proc: subprocess.Popen, delay: float, sig) -> tuple[bool, str]:
    """Send ``sig`` after ``delay`` seconds unless the process ended first: (whether it landed, stderr)."""
    try:
        _, err = proc.communicate(timeout=delay)
        return False, err
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
        _, err = proc.communicate()
        return True, err


def _checkpoint_after_a_kill(cache: Path, data_root: str, rng: random.Random, wall: float, sig) -> tuple[Path, str]:
    """Launch the run and kill it with ``sig`` a random moment after its first checkpoint is written;
    again (on an empty cache) until a kill leaves a checkpoint and no result.  Returns the checkpoint."""
    for _ in range(6):
        shutil.rmtree(cache, ignore_errors=True)
        proc = _launch(cache, data_root)
        deadline = time.monotonic() + 10 * wall
        while proc.poll() is None and not any((cache / "checkpoints").glob("*.pt")) and time.monotonic() < deadline:
            time.sleep(0.05)
        landed, err = _kill_at(proc, rng.uniform(0.0, wall / 4), sig)
        ckpts = sorted((cache / "checkpoints").glob("*.pt"))
        if landed and ckpts and _result(cache) is None:
            return ckpts[0], err
    raise SystemExit("no kill left a checkpoint behind in 6 tries")


def damaged_files(rng: random.Random, data_root: str, work: Path, reference: dict, wall: float,
                  other: bytes) -> dict:
    """The third part of the drill (module docstring): one trial per entry of :data:`DAMAGES`."""
    results_cache = work / "damaged-results"          # one cache, one key, damaged three times in a row
    ref_file = next((work / "reference" / "results").glob("*.json"))
    trials = []
    for i, (target, kind) in enumerate(DAMAGES):
        sig = SIGNALS[i % len(SIGNALS)]
        if target == "result":
            cache = results_cache
            path = cache / "results" / ref_file.name
            if not path.exists():                     # an earlier run's result, copied from the reference
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ref_file, path)
            before = ""
        else:
            cache = work / f"damaged-checkpoint{i}"
            path, before = _checkpoint_after_a_kill(cache, data_root, rng, wall, sig)
        path.write_bytes(damage(path.read_bytes(), kind, rng, other))
        errs = []
        landed, err = _kill_at(_launch(cache, data_root), rng.uniform(0.2, wall / 2), sig)
        errs.append(err)
        proc = _launch(cache, data_root)              # then to the end
        _, err = proc.communicate()
        errs.append(err)
        result = _result(cache)
        same = result is not None and all(result.get(k) == reference.get(k) for k in COMPARED)
        warned = [line for e in errs for line in e.splitlines() if "is unreadable" in line]
        trials.append({"file": target, "damage": kind, "signal": signal.Signals(sig).name,
                       "kills_after_damage": int(landed), "final_returncode": proc.returncode,
                       "warnings": len(warned), "warning_names_the_file": bool(warned) and str(path) in warned[0],
                       "moved_aside": sorted(p.name for p in path.parent.glob(path.name + ".corrupt*")),
                       "traceback": any("Traceback" in e for e in [before, *errs]), "bit_identical": same})
    on_results = [t for t in trials if t["file"] == "result"]
    kept = on_results[-1]["moved_aside"] if on_results else []
    return {"trials": trials, "corrupt_files_kept": kept,
            "all_bit_identical": all(t["bit_identical"] and t["final_returncode"] == 0 for t in trials),
            "one_warning_each": all(t["warnings"] == 1 and t["warning_names_the_file"] for t in trials),
            "earlier_evidence_kept": len(kept) == len(on_results),     # every damage of the one key kept
            "no_traceback": not any(t["traceback"] for t in trials)}


def _other_run(work: Path, data_root: str) -> bytes:
    """Another run's result JSON: one of the concurrent sweeps' runs, else a short run trained for it."""
    found = sorted(work.glob("concurrent*/results/*.json"))
    if found:
        return found[0].read_bytes()
    cache = work / "other"
    subprocess.run(_train_cmd(cache, data_root) + ["--epochs", "2", "--nc-epochs", "1"], cwd=REPO, env=ENV,
                   capture_output=True, check=True)
    return _result_bytes(cache)


def _result_bytes(cache: Path) -> bytes:
    return sorted((cache / "results").glob("*.json"))[0].read_bytes()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=12)
    p.add_argument("--concurrent", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    root = benchmark_data_root()
    t0 = time.perf_counter()
    rng = random.Random(args.seed)
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="ncmse-drill-") as tmp:
        k = kills(args.kills, rng, root, Path(tmp))
        seconds["kills"] = round(time.perf_counter() - t0, 1)
        c = concurrent(args.concurrent, root, Path(tmp))
        seconds["concurrent_sweeps"] = round(time.perf_counter() - t0 - sum(seconds.values()), 1)
        d = damaged_files(rng, root, Path(tmp), _result(Path(tmp) / "reference"), k["uninterrupted_wall_s"],
                          _other_run(Path(tmp), root))
        seconds["damaged_files"] = round(time.perf_counter() - t0 - sum(seconds.values()), 1)
    report = {"machine": device_description(), "threads": 1, "command": " ".join(_train_cmd(Path("DIR"), "ROOT")[1:]),
              "kills": k, "concurrent_sweeps": c, "damaged_files": d,
              "passed": k["all_bit_identical"] and k["no_traceback"] and k["clean_messages"] and c["all_ok"]
              and d["all_bit_identical"] and d["one_warning_each"] and d["earlier_evidence_kept"] and d["no_traceback"],
              "seconds": round(time.perf_counter() - t0, 1), "seconds_per_part": seconds,
              "date": time.strftime("%Y-%m-%d", time.gmtime())}
    write_report(report, args.out, "interrupt_drill_cpu.json", summary, "benchmarks/interrupt_drill.py")
    return 0 if report["passed"] else 1


def summary(r: dict) -> dict:
    """The status page's line for this report."""
    k, c = r["kills"], r["concurrent_sweeps"]
    signals = sorted({e["signal"] for e in k["events"]})
    identical = sum(t["bit_identical"] for t in k["trials"])
    once = sum(t["each_trained_once"] and t["returncodes"] == [0, 0] for t in c["trials"])
    d = r.get("damaged_files")
    damaged = ""
    if d:
        n = len(d["trials"])
        ok = sum(t["bit_identical"] and t["warnings"] == 1 for t in d["trials"])
        damaged = (f"; {n} damaged files (result: binary, cut short, another run's JSON; checkpoint: binary, cut "
                   f"short) between kills: {ok} of {n} moved aside with one warning and trained again to a "
                   f"bit-identical result, {len(d['corrupt_files_kept'])} *.corrupt files of one key kept")
    return {"what": "interruption drill: a CLI training run killed at random moments "
                    f"({', '.join(signals)}), two identical sweeps at once on one cache"
                    + (", and the run's files damaged between kills" if d else ""),
            "result": f"{k['kills_landed']} kills; {identical} of {len(k['trials'])} completed runs bit-identical to "
                      f"an uninterrupted one; {once} of {len(c['trials'])} concurrent pairs both exit 0 and train each "
                      f"configuration once{damaged}: {'passed' if r['passed'] else 'FAILED'} ({r['date']})",
            "machine": f"{r['machine']}, {r['threads']} thread"}


if __name__ == "__main__":
    sys.exit(main())

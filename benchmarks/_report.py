"""What the benchmark and device-check scripts share: writing a JSON report with its one-line summary
for the book's status page, the data folder they read (:func:`data_root`), a busy core to time
beside (:func:`busy_core`), and, on a device machine (which has no copy of the data), reading
CIFAR-10's decoded test split in place of every split.

Every report carries ``"summary": {"what", "result", "machine", "script"}``, written by the script's
own ``summary(report)``; the status page (``ncmse.runner``) lists the summaries of whatever reports
lie in ``benchmarks/results``, so a new benchmark needs no change there.

    python benchmarks/_report.py --resummarize   # rewrite the summaries of the stored reports
"""

from __future__ import annotations

import importlib
import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


def data_root() -> str:
    """Where a benchmark reads its data: ``$NCMSE_DATA_ROOT``, else the offline copy ``../shared/data``
    beside the repository where it exists, else ``<repo>/data`` (what ``run.sh`` does)."""
    shared = REPO.parent / "shared" / "data"
    return os.environ.get("NCMSE_DATA_ROOT") or (str(shared) if shared.is_dir() else str(REPO / "data"))


def _spin(stop) -> None:
    while not stop.is_set():
        pass


@contextmanager
def busy_core(busy: bool = True):
    """Within the block (if ``busy``), one other process keeps a core busy with a pure Python loop: the
    "busy machine" that the thread budgets are timed against.  It runs for half a second before the
    block starts (so that it is spinning when the clock starts) and is stopped and joined on exit."""
    if not busy:
        yield
        return
    stop = mp.Event()
    hog = mp.Process(target=_spin, args=(stop,))
    hog.start()
    time.sleep(0.5)
    try:
        yield
    finally:
        stop.set()
        hog.join()


def write_report(report: dict, out: str | None, filename: str, summary: Callable[[dict], dict],
                 script: str) -> None:
    """Add ``summary(report)`` (keys what, result, machine) and the script's name to ``report``, print
    it as JSON and, when ``out`` is given, write it to ``out/filename``.  A report made on a CPU carries
    the CPU's capability (``ncmse.hardware.capability``: AVX2, AVX-512, AMX, native or emulated bf16)
    beside the machine's name, since a speed measured on one CPU is no fact about another."""
    if "capability" not in report:
        from ncmse.hardware import capability

        report["capability"] = capability()
    report["summary"] = {**summary(report), "script": script}
    if report["capability"] not in report["summary"].get("machine", ""):
        report["summary"]["machine"] = f"{report['summary'].get('machine', '?')} ({report['capability']})"
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / filename).write_text(text + "\n")


def use_test_split_only() -> None:
    """Make ``ncmse.train`` load the test split whatever split it asks for (the only one carried)."""
    import ncmse.train as T

    real = T.load_dataset
    T.load_dataset = lambda name, split, root=None: real(name, "test", root=root)


def resummarize(folder: Path = RESULTS) -> None:
    """Recompute the summary of every stored report with its script's current ``summary``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for path in sorted(folder.glob("*.json")):
        report = json.loads(path.read_text())
        script = report.get("summary", {}).get("script")
        if script is None:
            print(f"skipping {path.name}: no summary names its script")
            continue
        module = importlib.import_module(Path(script).stem)
        report["summary"] = {**module.summary(report), "script": script}
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"{path.name}: {report['summary']['result']}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--resummarize"]:
        resummarize()
    else:
        print(__doc__)

"""What the benchmark and device-check scripts share: printing and saving a JSON report, and, on a
device machine (which has no copy of the data), reading CIFAR-10's decoded test split in place of
every split."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(report: dict, out: str | None, filename: str) -> None:
    """Print ``report`` as JSON and, when ``out`` is given, write it to ``out/filename``."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / filename).write_text(text)


def use_test_split_only() -> None:
    """Make ``ncmse.train`` load the test split whatever split it asks for (the only one carried)."""
    import ncmse.train as T

    real = T.load_dataset
    T.load_dataset = lambda name, split, root=None: real(name, "test", root=root)

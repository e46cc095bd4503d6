"""The package and the tests pass ruff (configured in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean():
    exe = Path(sys.executable).parent / "ruff"
    if not exe.exists() and shutil.which("ruff") is None:
        pytest.skip("ruff not installed (install the dev extra)")
    cmd = [str(exe) if exe.exists() else "ruff", "check", "ncmse", "tests", "benchmarks"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr

"""Which machine produced a result: CPU model and core count, and the GPU if any (status page, cache)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["device_description", "cpu_model"]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description() -> str:
    """The machine that executes the chapters: CPU model and core count, and the GPU if any."""
    desc = f"{cpu_model()}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            desc += f"; GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return desc

"""Which machine produced a result: CPU model and core count, and the GPU if any (status page, cache)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["device_description"]


def device_description() -> str:
    """The machine that executes the chapters: CPU model and core count, and the GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            desc += f"; GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return desc

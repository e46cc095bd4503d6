"""What the machine at hand runs fast: the training precision and memory layout chosen from it.

A speed measured on one machine is no fact about another.  bfloat16 autocast halves a step's time
where the CPU computes bf16 natively (AVX-512 BF16, AMX) and makes it about six times slower where
it does not (an AVX2 CPU, where oneDNN emulates bf16); the channels-last layout speeds convolutions on
one CPU and not on the next.  So a profile asks for what it wants and this module decides here:

* :func:`resolve_precision` turns the request ``"auto"`` into ``"bf16"`` where the device runs bf16
  natively (CPU: oneDNN's bf16 support; CUDA: ``torch.cuda.is_bf16_supported()``) and ``"fp32"``
  otherwise.  The *resolved* precision is a field of the run's configuration (its cache key, the
  results table, the page).  An explicit ``"bf16"`` where it would be emulated still runs, after one
  warning line.
* :func:`channels_last` decides a convolutional model's memory layout.  On CUDA it is channels-last;
  on a CPU it is what a measurement of a few training steps in both layouts says
  (:func:`measure_layout`), taken once per machine, torch version, thread count, model, precision and
  batch shape and remembered in ``data/hardware.json``.  The layout orders the same arithmetic
  differently (results differ in rounding only), so it is provenance, not part of the key; a resumed
  run keeps the layout it started with (``ncmse.train``).

:func:`capability` names what the CPU can do (``"AVX512 + AMX, native bf16"``), for reports and pages.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from functools import cache
from pathlib import Path

import torch

from .files import atomic_write_text
from .paths import DATA

__all__ = ["capability", "cpu_flags", "native_bf16", "resolve_precision", "channels_last", "measure_layout",
           "LAYOUT_FILE", "PRECISION_REQUESTS"]

#: what a configuration may ask for: a precision, or "auto" (bf16 where native, else fp32)
PRECISION_REQUESTS = ("auto", "fp32", "bf16")
#: where layout decisions are remembered (per machine; not committed)
LAYOUT_FILE = DATA / "hardware.json"
# children of a process that already warned about emulated bf16 (local workers) stay silent
_WARNED = "NCMSE_BF16_WARNED"


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def capability() -> str:
    """What this CPU computes with, in words: torch's dispatch level (``DEFAULT``, ``AVX2``, ``AVX512``,
    …), AMX where the CPU has it, and whether oneDNN runs bf16 natively; e.g. ``"AVX2, bf16 emulated"``
    or ``"AVX512 + AMX, native bf16"``."""
    level = torch.backends.cpu.get_cpu_capability()
    amx = " + AMX" if "amx_bf16" in cpu_flags() and level.startswith("AVX512") else ""
    return f"{level}{amx}, {'native' if native_bf16('cpu') else 'emulated'} bf16"


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively: oneDNN's bf16 support on a CPU (AVX-512 BF16 or
    AMX; honours ``ONEDNN_MAX_CPU_ISA``), ``torch.cuda.is_bf16_supported()`` on CUDA; False elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return bool(check is not None and check())
    return False


def resolve_precision(precision: str, device: torch.device | str = "cpu", *, warn: bool = True) -> str:
    """The precision a run on ``device`` trains in: ``"auto"`` → ``"bf16"`` where :func:`native_bf16`,
    else ``"fp32"``; ``"fp32"`` and ``"bf16"`` as asked.  With ``warn``, an explicit ``"bf16"`` on a
    device that would emulate it prints one line on stderr (once per process tree)."""
    if precision not in PRECISION_REQUESTS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISION_REQUESTS)}")
    native = native_bf16(device)
    if precision == "auto":
        return "bf16" if native else "fp32"
    if precision == "bf16" and not native and warn and not os.environ.get(_WARNED):
        where = f"this CPU ({capability()})" if torch.device(device).type == "cpu" else f"device {device}"
        print(f"[ncmse] warning: {where} has no native bf16: bf16 autocast is emulated and several times "
              "slower than fp32 (precision 'auto' picks fp32 here)", file=sys.stderr, flush=True)
        os.environ[_WARNED] = "1"
    return precision


def _layout_key(model: str, precision: str, in_shape: tuple, batch_size: int) -> str:
    from .machine import cpu_model

    return (f"{cpu_model()} | {capability()} | torch {torch.__version__} | {torch.get_num_threads()} threads | "
            f"{model} {precision} {tuple(in_shape)} batch {batch_size}")


def measure_layout(model: str, precision: str, in_shape: tuple[int, ...], batch_size: int, *,
                   num_classes: int = 10, d: int = 16, steps: int = 3) -> dict:
    """Milliseconds of one training step (forward, MSE loss, backward, SGD) of ``model`` on random
    input of shape ``(batch_size, *in_shape)`` on this CPU, in the contiguous layout and in channels-last,
    the two interleaved after one warm-up step each; ``{"nchw_ms", "channels_last_ms"}`` (medians)."""
    from .models import build_model

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *in_shape, generator=gen)
    y = torch.nn.functional.one_hot(torch.randint(num_classes, (batch_size,), generator=gen), num_classes).float()
    nets = {}
    for name, fmt in (("nchw_ms", torch.contiguous_format), ("channels_last_ms", torch.channels_last)):
        torch.manual_seed(0)
        net = build_model(model, tuple(in_shape), num_classes, d).to(memory_format=fmt)
        nets[name] = (net, torch.optim.SGD(net.parameters(), lr=1e-3), x.contiguous(memory_format=fmt))
    times = {name: [] for name in nets}
    for i in range(steps + 1):
        for name, (net, opt, xb) in nets.items():
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = torch.nn.functional.mse_loss(net(xb).float(), y)
            loss.backward()
            opt.step()
            if i:                                   # the first step of each is the warm-up
                times[name].append(1000 * (time.perf_counter() - t))
    return {name: statistics.median(t) for name, t in times.items()}


def channels_last(model: str, precision: str, device: torch.device | str, in_shape: tuple[int, ...],
                  batch_size: int, *, conv_models: tuple[str, ...] = ("cnn", "resnet18")) -> bool:
    """Whether a run of ``model`` trains in the channels-last layout on ``device``: never for models
    without convolutions, always on CUDA, and on a CPU when :func:`measure_layout` found it at least
    5% faster here (measured once, remembered in :data:`LAYOUT_FILE`).  ``NCMSE_CHANNELS_LAST=1`` or
    ``0`` overrides the decision."""
    if model not in conv_models:
        return False
    forced = os.environ.get("NCMSE_CHANNELS_LAST")
    if forced in ("0", "1"):
        return forced == "1"
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    return _cpu_layout(model, precision, tuple(in_shape), int(batch_size))


@cache
def _cpu_layout(model: str, precision: str, in_shape: tuple, batch_size: int) -> bool:
    import filelock

    key = _layout_key(model, precision, in_shape, batch_size)
    known = _read_layouts()
    if key in known:
        return bool(known[key]["channels_last"])
    try:
        LAYOUT_FILE.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(LAYOUT_FILE) + ".lock")
        lock.acquire()
    except OSError:                   # a read-only checkout: measure, remember in this process only
        lock = None
    try:
        known = _read_layouts()       # another process may have measured it meanwhile
        if key not in known:
            t = measure_layout(model, precision, in_shape, batch_size)
            known[key] = {**t, "channels_last": t["channels_last_ms"] < 0.95 * t["nchw_ms"],
                          "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
            if lock is not None:
                atomic_write_text(LAYOUT_FILE, json.dumps(known, indent=1, sort_keys=True))
        return bool(known[key]["channels_last"])
    finally:
        if lock is not None:
            lock.release()


def _read_layouts() -> dict:
    try:
        data = json.loads(LAYOUT_FILE.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}

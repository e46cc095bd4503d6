"""The thread budget of a process that computes, set before torch starts its thread pools.

torch's CPU kernels run on an OpenMP pool whose idle threads spin (busy-wait) before they sleep.  On
a machine whose cores are all busy, a spinning thread steals the core that the thread it waits for
needs, and a run slows down not by the share of the CPU it lost but many times more (seen on a
2-core machine: 28–104× beside one other busy process).  ``OMP_WAIT_POLICY=PASSIVE`` stops the
spinning but makes every parallel region pay for waking its threads: measured here
(``benchmarks/threads_bench.py``), two passive threads are slower than one thread even on a quiet
machine.  What works is fewer threads than cores: a process that does not share its threads' cores
with anything has nothing to spin against.  So every process that computes gets a budget:

* a single computing process (the command line, a chapter's kernel): :func:`default_threads`, all
  cores but one (one thread on a 2-core laptop), leaving a core for whatever else runs;
* ``workers`` processes sharing the machine (the local executor): :func:`budget`, the cores divided
  among them.

:func:`use_budget` applies a budget to this process: the one call a script or notebook outside the
book makes (``ncmse.use_budget()``), and the one the command line, the local workers and the
benchmarks make.  :func:`child_environment` gives a budget to a process about to start.  Both take full effect
only before torch is imported (OpenMP reads its variables once); importing ``ncmse`` changes nothing.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

__all__ = ["use_budget", "budget", "default_threads", "child_environment", "environment",
           "COUNT_VARIABLES"]

COUNT_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _cores(cores: int | None) -> int:
    return cores or os.cpu_count() or 1


def default_threads(cores: int | None = None) -> int:
    """Threads for one computing process: all cores but one, at least one."""
    return max(1, _cores(cores) - 1)


def budget(workers: int, cores: int | None = None) -> int:
    """Threads per worker when ``workers`` processes share ``cores`` (default: this machine's): the
    cores divided evenly, at least one."""
    return max(1, _cores(cores) // max(1, workers))


def child_environment(threads: int, base: dict | None = None) -> dict:
    """The environment (``base``, default this process's) with the thread counts of OpenMP, MKL and
    OpenBLAS set to ``threads``, for a process that will import torch."""
    env = dict(os.environ if base is None else base)
    env.update({k: str(int(threads)) for k in COUNT_VARIABLES})
    return env


@contextmanager
def environment(changes: dict, *, remove: tuple = ()):
    """Within the block, this process's environment has ``changes`` set and the variables in
    ``remove`` unset (what a child process started inside inherits); afterwards it is as before."""
    saved = {k: os.environ.get(k) for k in (*changes, *remove)}
    for k in remove:
        os.environ.pop(k, None)
    os.environ.update({k: str(v) for k, v in changes.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def use_budget(threads: int | None = None) -> int:
    """Give this process the book's thread budget and return its thread count: call it once, first
    thing, in a script or notebook of your own (``import ncmse; ncmse.use_budget()``).

    ``threads`` defaults to :func:`default_threads`, all cores but one (at least one): the budget the
    command line and every chapter's kernel run with.  Why: torch's OpenMP threads spin-wait, so on a
    busy machine a process with a thread for every core fights the other work for its own cores; beside
    one busy process, spin-waiting made the batched gradient descent from 1,000 random starts (chapter
    "The benign landscape", ``cpu`` profile) 3–4.5× slower, and a training run on 2 cores 28–104×
    slower (``benchmarks/threads_bench.py`` measures budgets on training).

    What it sets: ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS`` in this
    process's environment (inherited by the processes it starts), and, if torch is already imported,
    torch's intra-op threads (``torch.set_num_threads``).  Called before torch (and numpy) are
    imported, it takes full effect.  Called after, it is still safe and torch's own operations use
    the budget from then on, but what was read at import stays: a numpy imported earlier keeps the
    BLAS thread pool it started with, and torch's inter-op pool is never touched.  Importing
    ``ncmse`` alone changes no thread setting; only this call does.  Raises ``ValueError`` for a
    count below one.
    """
    threads = default_threads() if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads}")
    os.environ.update({k: str(threads) for k in COUNT_VARIABLES})
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    return threads


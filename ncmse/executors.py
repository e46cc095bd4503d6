"""Where deep-network runs execute: one driver (:func:`sweep`) over three back ends.

* :class:`Sequential` — one run after another in this process (the default);
* :class:`Local` — ``workers`` processes on this machine, each with its own thread budget (the cores
  divided among them: one thread each on a laptop) or its own GPU when several are visible;
* :class:`ncmse.cluster.Submitit` — jobs through submitit: a Slurm job array, or submitit's local and
  in-process debug executors; preempted jobs are requeued and resume, cancelled ones are reported as
  such (its own module, :mod:`ncmse.cluster`).

The driver is the same for all: it deduplicates the configurations by cache key, looks each up in the
results cache (``ncmse.cache.ResultsCache``) and hands only the missing ones to the back end
(:class:`Executor`), having loaded (and, for the CIFAR-10 JPEG copy, decoded) their data once beforehand;
it shows one progress bar over the runs and reads every result back from the cache, which the back ends
fill under its per-key locks — so back ends may share one cache, and a second call trains nothing.
Staged work (the learning-rate tuning, then the sweep at the chosen rates) calls :func:`sweep` once
per stage.

:func:`from_environment` builds the back end named by ``NCMSE_EXECUTOR`` / ``NCMSE_WORKERS``: the
book's runner sets them for every chapter's kernel (``./run.sh book --workers N``).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

from . import threads as thread_budget
from .cache import ResultsCache, run
from .config import RunConfig
from .fingerprint import validity

__all__ = ["Executor", "Sequential", "Local", "sweep", "from_environment", "EXECUTORS", "train_job"]

#: the back ends that the command line's ``--executor`` names (the last three: :class:`ncmse.cluster.Submitit`)
EXECUTORS = ("sequential", "local", "slurm", "submitit-local", "submitit-debug")


def train_job(config: dict, cache_root: str, device=None, data_root=None, threads: int | None = None) -> dict:
    """One run in a worker process or a cluster job: set the thread budget, then
    :func:`ncmse.cache.run` (cached, locked, resumed from its checkpoint).  Returns a short
    summary: key, whether it was already cached, diverged, wall seconds."""
    thread_budget.use_budget(threads)
    cfg = RunConfig.from_dict(config)
    result = run(cfg, cache=ResultsCache(cache_root), device=device, progress=False, data_root=data_root)
    return {"key": cfg.key(), "cached": result["cached"], "diverged": bool(result.get("diverged")),
            "seconds": result["provenance"]["wall_seconds"]}


# the device of this process when it is a worker of :class:`Local` (its pool initializer sets it)
_WORKER_DEVICE = None


def _claim_device(claims) -> None:
    """Initializer of a :class:`Local` worker: take this worker's device, once for its whole life,
    from the queue ``claims`` (one entry per worker)."""
    global _WORKER_DEVICE
    _WORKER_DEVICE = claims.get()


def _worker_job(config: dict, cache_root: str, data_root=None, threads: int | None = None) -> dict:
    """:func:`train_job` on this worker's own device."""
    return train_job(config, cache_root, _WORKER_DEVICE, data_root, threads)


def _whoami(seconds: float = 0.0) -> tuple:
    """(process id, device) of this worker, after sleeping ``seconds``: for checking the pinning."""
    time.sleep(seconds)
    return os.getpid(), _WORKER_DEVICE


class Executor:
    """A back end: :meth:`Executor.train` trains configurations that are not cached into ``cache`` and returns,
    per key, whether it trained the run (False where another process had meanwhile)."""

    name = "executor"

    def train(self, configs: list[RunConfig], *, cache: ResultsCache, device, data_root, bar,
              on_done=None) -> dict[str, bool]:
        """Train ``configs``; after each run's result is in ``cache``, call ``on_done(config)`` (if given)
        in this process, so that a caller can act on every run as soon as it finishes."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def check(self) -> None:
        """Raise a one-line ValueError if this back end cannot run here (called before any work)."""


class Sequential(Executor):
    """One run after another in this process, with the process's own thread settings."""

    name = "sequential"

    def train(self, configs, *, cache, device, data_root, bar, on_done=None):
        notes, trained = [], {}
        for c in configs:
            bar.set_postfix(d=c.d, loss=c.loss, seed=c.seed, refresh=False)
            r = run(c, cache=cache, device=device, progress=not bar.disable, data_root=data_root, notes=notes)
            trained[c.key()] = not r["cached"]
            if on_done is not None:
                on_done(c)
            bar.update()
        _report_stale(notes)
        return trained


@dataclass
class Local(Executor):
    """``workers`` processes on this machine (spawned, so each imports torch afresh with its own thread
    budget: ``threads`` each, default :func:`ncmse.threads.budget`).  With ``devices`` (e.g.
    ["cuda:0", "cuda:1"]) worker i trains every run it takes on devices[i % len(devices)], so that two
    workers never share a GPU while another idles (with as many workers as devices); by default, where
    the run's device is CUDA and several GPUs are visible, one GPU per worker."""

    workers: int = 2
    threads: int | None = None
    devices: list | None = None
    name: str = field(default="local", init=False)

    def __post_init__(self):
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be a positive integer, got {self.workers!r}")

    def describe(self) -> str:
        return f"local, {self.workers} workers × {self.threads or thread_budget.budget(self.workers)} thread(s)"

    def _devices(self, device) -> list:
        if self.devices:
            return list(self.devices)
        import torch

        if (device is None or str(device) == "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return [device]

    def pool(self, workers: int, devices: list):
        """The spawned process pool of ``workers`` workers, worker i pinned to devices[i % len(devices)]
        (:func:`_claim_device`)."""
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("spawn")
        claims = ctx.Queue()
        for i in range(workers):
            claims.put(devices[i % len(devices)])
        return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_claim_device, initargs=(claims,))

    def train(self, configs, *, cache, device, data_root, bar, on_done=None):
        from concurrent.futures import FIRST_COMPLETED, wait

        threads = self.threads or thread_budget.budget(self.workers)
        failures, trained = [], {}
        # the workers inherit this budget and import torch afresh (spawn)
        with thread_budget.environment(thread_budget.child_environment(threads, base={})):
            with self.pool(min(self.workers, len(configs)), self._devices(device)) as pool:
                pending = {pool.submit(_worker_job, c.to_dict(), str(cache.root), data_root, threads): c
                           for c in configs}
                try:
                    while pending:
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for f in done:
                            c = pending.pop(f)
                            if f.exception() is not None:
                                failures.append((c, f.exception()))
                            else:
                                trained[c.key()] = not f.result()["cached"]
                                if on_done is not None:
                                    on_done(c)
                            bar.update()
                except BaseException:
                    _stop_workers(pool)
                    raise
        _raise_failures(failures)
        return trained


def _stop_workers(pool) -> None:
    """End the runs in flight at once, where the driver stops (Ctrl-C, or SIGTERM sent to it alone by
    ``kill``, ``timeout`` or a scheduler): without this, leaving the pool waits for every run in flight
    to finish, which for a long study is many minutes.  Each worker gets SIGTERM and dies; its run resumes
    from the checkpoint of its last finished epoch.  The runs not started yet end with the broken pool.
    ``ProcessPoolExecutor`` has no public call for this before Python 3.14 (``terminate_workers``), so
    its ``_processes`` are used.  Futures are not cancelled first: Python 3.11 then fails on them in
    its manager thread (InvalidStateError) when the pool breaks."""
    for process in list(getattr(pool, "_processes", {}).values()):
        if process.is_alive():
            process.terminate()


def _raise_failures(failures) -> None:
    """One RuntimeError for the runs that failed (configuration, error), naming the first three; shared by
    the back ends (:class:`Local`, :class:`ncmse.cluster.Submitit`)."""
    if failures:
        detail = "; ".join(f"{c.key()} (d={c.d} {c.loss} seed={c.seed}): {exc}" for c, exc in failures[:3])
        more = f" and {len(failures) - 3} more" if len(failures) > 3 else ""
        raise RuntimeError(f"{len(failures)} run(s) failed: {detail}{more}; the others are cached — run the same "
                           "command again to retry the failed ones (they resume from their checkpoints)")


def _report_stale(notes: list) -> None:
    if notes:
        kinds = sorted({n.rsplit(" ", 1)[1] for n in notes})
        print(f"[ncmse] {len(notes)} cached result(s) were trained by other {' or '.join(kinds)} and were trained "
              f"again (e.g. {notes[0].split()[0]})", file=sys.stderr, flush=True)


def _prepare_data(configs: list[RunConfig], data_root) -> None:
    """Load every dataset the runs need once, so that downloads and the CIFAR-10 JPEG decode happen
    here, before the workers or jobs start (each would otherwise do it at once)."""
    from .data import load_dataset

    for name in sorted({c.dataset for c in configs}):
        for split in ("train", "test"):
            load_dataset(name, split, root=data_root)


def from_environment() -> Executor:
    """The back end named by ``NCMSE_EXECUTOR`` ("sequential" or "local"; default sequential), with
    ``NCMSE_WORKERS`` workers for "local" (default: the machine's cores)."""
    name = os.environ.get("NCMSE_EXECUTOR", "sequential")
    if name == "sequential":
        return Sequential()
    if name == "local":
        workers = os.environ.get("NCMSE_WORKERS") or str(os.cpu_count() or 1)
        if not workers.isdigit() or int(workers) < 1:
            raise ValueError(f"NCMSE_WORKERS must be a positive integer, got {workers!r}")
        return Local(workers=int(workers))
    raise ValueError(f"NCMSE_EXECUTOR={name!r} is not a back end for the book; expected sequential or local")


def sweep(configs: list[RunConfig], *, cache: ResultsCache | None = None, device=None, progress: bool = True,
          data_root=None, executor: Executor | None = None, on_done=None) -> list[dict]:
    """The results of ``configs``, in order, each with ``"cached"`` (True where nothing was trained
    now): cached ones are read, the others trained by ``executor`` (default :func:`from_environment`)
    and read back from the cache.  One progress bar over the runs to train.  ``on_done(config)`` is
    called for every run as soon as its result is in the cache (e.g. ``ncmse.archive.exporter``, which
    commits nothing but writes each finished run into the tracked archive)."""
    from tqdm.std import tqdm

    cache = cache or ResultsCache()
    executor = executor or from_environment()
    # precision "auto" becomes the one this device runs natively: the resolved configuration is the run
    configs = [c.resolved(device) for c in configs]
    unique = list({c.key(): c for c in configs}.values())
    valid = {ds: validity(ds, data_root) for ds in sorted({c.dataset for c in unique})}
    hits = {c.key(): e for c in unique if (e := cache.lookup(c, valid[c.dataset])[0]) is not None}
    todo = [c for c in unique if c.key() not in hits]
    for c in unique if on_done is not None else ():
        if c.key() in hits:
            on_done(c)
    trained: dict[str, bool] = {}
    if todo:
        executor.check()
        if not isinstance(executor, Sequential):
            _prepare_data(todo, data_root)
        with tqdm(total=len(todo), desc=f"training ({executor.describe()})", disable=not progress) as bar:
            trained = executor.train(todo, cache=cache, device=device, data_root=data_root, bar=bar,
                                     on_done=on_done)
    out, seen = [], set()
    for c in configs:
        key = c.key()
        entry = hits.get(key) or cache.lookup(c, valid[c.dataset])[0]
        if entry is None:   # damaged since it was written (another process, a disk): read or train it once more
            again = run(c, cache=cache, device=device, progress=False, data_root=data_root)
            entry = {k: v for k, v in again.items() if k != "cached"}
            trained[key] = trained.get(key, False) or not again["cached"]
        out.append({**entry, "cached": key in seen or not trained.get(key, False)})
        seen.add(key)                     # a configuration listed twice is trained once
    return out

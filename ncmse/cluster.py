"""Runs as cluster jobs: the back end :class:`Submitit` of :func:`ncmse.executors.sweep`, through
`submitit <https://github.com/facebookincubator/submitit>`_: a Slurm job array (``cluster="slurm"``), or
submitit's local and in-process debug executors.

Each job trains one configuration (:class:`TrainJob`, a checkpointable :func:`ncmse.executors.train_job`).
A job that Slurm preempts or times out is requeued by submitit (``checkpoint``) and resumes from the run's
own per-epoch checkpoint.  A job cancelled (``scancel``) stops training, writes no result and keeps its
checkpoint (:class:`JobCancelled` inside the job); the driver reports it as cancelled
(:class:`RunsCancelled`), with ``squeue`` telling which jobs left the queue where Slurm has no accounting.
submitit's own warnings go to stderr, once each.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .cache import ResultsCache
from .config import RunConfig
from .executors import Executor, _raise_failures, train_job

__all__ = ["Submitit", "submitit_folder", "TrainJob", "JobCancelled", "RunsCancelled"]


@dataclass
class Submitit(Executor):
    """Jobs through submitit: ``cluster`` "slurm" (a job array of at most ``array_parallelism`` jobs
    at once), "local" (subprocesses) or "debug" (in this process, for tests).  Each job trains one
    configuration with ``cpus_per_job`` threads and ``gpus_per_job`` GPUs for at most ``timeout_min``
    minutes; preempted or timed out, it is requeued and resumes from its checkpoint.  Cancelled
    (``scancel``: SIGTERM that no preemption signal follows within ``cancel_grace_s`` seconds, see
    :class:`TrainJob`), it stops, keeps its checkpoint, writes no result, and ``train`` raises
    :class:`RunsCancelled` once every other job has ended.  Where Slurm has no accounting (``sacct``
    fails), every ``queue_check_s`` seconds ``squeue`` tells which jobs left the queue without a result
    (e.g. cancelled while pending), for which submitit alone would wait for ever.  Logs and the jobs'
    pickles go to ``folder`` (default: ``submitit`` beside the cache's ``results`` folder: ``DIR/submitit``
    for ``--cache DIR``, else ``$NCMSE_CACHE/submitit``, else ``data/submitit``).  submitit's own warnings
    (e.g. that ``sacct`` fails) go to stderr, once each (:func:`_cluster_warnings`)."""

    cluster: str = "slurm"
    folder: str | None = None
    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int = 1
    timeout_min: int = 60
    array_parallelism: int = 16
    mem_gb: float | None = None
    extra: dict = field(default_factory=dict)     # any other submitit parameter (e.g. slurm_account)
    poll_seconds: float = 5.0
    cancel_grace_s: float = 5.0
    queue_check_s: float = 60.0
    name: str = field(default="submitit", init=False)

    def __post_init__(self):
        if self.cluster not in ("slurm", "local", "debug"):
            raise ValueError(f"unknown submitit cluster {self.cluster!r}; expected slurm, local or debug")
        for k in ("cpus_per_job", "timeout_min", "array_parallelism"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be a positive integer, got {v!r}")
        if isinstance(self.gpus_per_job, bool) or not isinstance(self.gpus_per_job, int) or self.gpus_per_job < 0:
            raise ValueError(f"gpus_per_job must be a non-negative integer, got {self.gpus_per_job!r}")

    def describe(self) -> str:
        return f"submitit {self.cluster}"

    def check(self) -> None:
        import shutil

        if self.cluster == "slurm" and shutil.which("srun") is None:
            raise ValueError("the slurm executor needs Slurm's commands (srun, sbatch) on PATH, and they are not "
                             "here; on this machine use --executor local")

    def executor(self, cache: ResultsCache):
        """The configured ``submitit.AutoExecutor``."""
        import submitit

        self.check()
        folder = Path(self.folder) if self.folder else submitit_folder(cache)
        ex = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=self.cluster)
        params = {"timeout_min": self.timeout_min, "cpus_per_task": self.cpus_per_job, "name": "ncmse",
                  "slurm_array_parallelism": self.array_parallelism}
        if self.gpus_per_job:
            params["gpus_per_node"] = self.gpus_per_job
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.mem_gb:
            params["mem_gb"] = self.mem_gb
        params.update(self.extra)
        if self.cluster != "slurm":
            params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        ex.update_parameters(**params)
        return ex

    def submit(self, configs, *, cache, device, data_root) -> list:
        """Submit one job per configuration (a job array on Slurm); returns submitit's jobs."""
        ex = self.executor(cache)
        n = len(configs)
        return ex.map_array(TrainJob(self.cancel_grace_s), [c.to_dict() for c in configs], [str(cache.root)] * n,
                            [device] * n, [data_root] * n, [self.cpus_per_job] * n)

    def train(self, configs, *, cache, device, data_root, bar, on_done=None):
        with _cluster_warnings():
            jobs = self.submit(configs, cache=cache, device=device, data_root=data_root)
            print(f"[ncmse] submitted {len(jobs)} job(s) to submitit ({self.cluster}); logs under "
                  f"{Path(jobs[0].paths.folder).parent if jobs else '-'}", file=sys.stderr, flush=True)
            failures, cancelled, trained, waiting = [], [], {}, dict(zip(jobs, configs, strict=True))
            checked = time.monotonic()
            while waiting:
                for job in [j for j in waiting if self.cluster == "debug" or j.done()]:
                    c = waiting.pop(job)
                    try:
                        trained[c.key()] = not job.result()["cached"]
                    except Exception as exc:          # submitit's FailedJobError carries the job's traceback
                        if _was_cancelled(job, exc):
                            cancelled.append((c, job.job_id))
                        else:
                            failures.append((c, _last_line(exc)))
                    else:
                        if on_done is not None:
                            on_done(c)
                    bar.update()
                if waiting and self.cluster == "slurm" and time.monotonic() - checked >= self.queue_check_s:
                    checked = time.monotonic()
                    for job in _left_the_queue(list(waiting), wait_s=min(15.0, self.queue_check_s)):
                        c = waiting.pop(job)
                        if not Path(job.paths.stderr).exists():        # it never started: cancelled while pending
                            cancelled.append((c, job.job_id))
                        else:
                            failures.append((c, f"job {job.job_id} ended without a result (Slurm has no accounting "
                                                f"to say why); see {job.paths.stderr}"))
                        bar.update()
                if waiting:
                    time.sleep(self.poll_seconds)
        if cancelled and not failures:
            raise RunsCancelled(cancelled, self.cluster)
        _raise_failures(failures + [(c, f"job {job_id} cancelled") for c, job_id in cancelled])
        return trained


def submitit_folder(cache: ResultsCache) -> Path:
    """Where :class:`Submitit` puts job scripts, pickles and logs by default: ``submitit`` beside the
    cache's ``results`` folder (``DIR/submitit`` for ``--cache DIR``, else ``$NCMSE_CACHE/submitit``, else
    ``data/submitit``), as the command line's ``--submitit-folder`` help says."""
    return cache.root.parent / "submitit"


class JobCancelled(RuntimeError):
    """Raised inside a cluster job whose run is being ended (Slurm's SIGTERM: ``scancel``, or the kill at
    a time limit that submitit could not requeue): training stops where it is, so the run keeps its last
    per-epoch checkpoint and writes no result.  submitit records it as the job's error, which tells the
    driver at once, with or without ``sacct``."""


class RunsCancelled(RuntimeError):
    """Raised by :meth:`Submitit.train` when cluster jobs were cancelled and none failed otherwise; the
    other runs are cached.  ``runs`` lists (configuration, job id); the message names each run by its key
    and configuration, in one line."""

    def __init__(self, runs: list, cluster: str = "slurm"):
        from .cache import describe_run

        self.runs = list(runs)
        kind = "Slurm job" if cluster == "slurm" else "submitit job"
        named = [f"{kind} {job_id}: {c.key()} ({describe_run(c.to_dict())})" for c, job_id in self.runs[:3]]
        more = f" and {len(self.runs) - 3} more" if len(self.runs) > 3 else ""
        super().__init__(f"{len(self.runs)} run(s) cancelled before writing a result — {'; '.join(named)}{more}")


def _left_the_queue(jobs: list, wait_s: float = 15.0) -> list:
    """The Slurm jobs among ``jobs`` whose state submitit cannot tell (no ``sacct``), that ``squeue`` no
    longer lists and that left no result (waiting ``wait_s`` for one to appear on a slow shared file
    system): cancelled while pending, or killed.  Empty where ``squeue`` cannot be asked."""
    unknown = [j for j in jobs if not j.paths.result_pickle.exists() and j.state.upper() == "UNKNOWN"]
    if not unknown:
        return []
    ids = sorted({j.job_id.split("_")[0] for j in unknown})
    try:
        queue = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(ids)], capture_output=True,
                               text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return []
    if queue.returncode != 0 and "Invalid job id" not in queue.stderr:
        return []
    listed = set(queue.stdout.split()) if queue.returncode == 0 else set()   # else: one job id, long gone
    gone = [j for j in unknown if j.job_id not in listed]
    deadline = time.monotonic() + wait_s
    while gone and time.monotonic() < deadline and not all(j.paths.result_pickle.exists() for j in gone):
        time.sleep(1.0)
    return [j for j in gone if not j.paths.result_pickle.exists()]


def _was_cancelled(job, exc: BaseException) -> bool:
    """Whether a job that gave no result was cancelled: its error is :class:`JobCancelled` (the job
    stopped itself on SIGTERM), or it left no result and Slurm's accounting says CANCELLED."""
    if f"{__name__}.{JobCancelled.__name__}" in str(exc):
        return True
    try:
        return str(job.state).upper().startswith("CANCELLED")
    except Exception:                     # the state is only a hint: without it, a failure
        return False


# submitit logs through the ``logging`` module, to the logger "submitit"; its own configuration writes
# every record of WARNING or more twice, to stdout and to stderr, and the driver's status polls repeat
# the same warning ("Call #7 - Bypassing sacct error …, status may be inaccurate") on every poll
_SUBMITIT_LOGGER = "submitit"
_CALL_PREFIX = re.compile(r"^Call #\d+ - ")


class _OncePerMessage(logging.Filter):
    """Lets each distinct message through once per process (the poll counter "Call #N - " removed)."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = _CALL_PREFIX.sub("", " ".join(record.getMessage().split()))
        if text in self.seen:
            return False
        self.seen.add(text)
        record.msg, record.args = text, None
        return True


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record comes (a redirect, a test's capture)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


_ONCE = _OncePerMessage()


class _StatusCommands:
    """``subprocess`` as submitit's status polls see it (``submitit.core.core.subprocess``, while the driver
    polls): a failing status command's own stderr (sacct's "Slurm accounting storage is disabled", which it
    would print at every poll) is captured and becomes part of submitit's warning, which goes out once."""

    def __getattr__(self, name):
        return getattr(subprocess, name)

    def check_output(self, command, **kwargs):
        if "stderr" in kwargs:
            return subprocess.check_output(command, **kwargs)
        try:
            return subprocess.check_output(command, stderr=subprocess.PIPE, **kwargs)
        except subprocess.CalledProcessError as exc:
            said = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
            raise subprocess.SubprocessError(f"{command[0]} exited with status {exc.returncode}: "
                                             f"{' '.join(said.split()) or 'no message'}") from None


@contextmanager
def _cluster_warnings():
    """While the driver submits and polls: submitit's warnings (it logs through ``logging``, to the logger
    "submitit") go to stderr, each once per process, as ``[ncmse] submitit: …`` lines, and nothing of it
    to stdout (where a command prints its results table); a status command's own error output is part of
    that warning instead of a line of its own at every poll.  With ``SUBMITIT_LOG_LEVEL=NOCONFIG``
    (logging configured by the caller) the handlers are left alone."""
    # imported first: submitit configures its logger (dictConfig) when it is first imported
    import submitit.core.core as submitit_core

    commands, submitit_core.subprocess = submitit_core.subprocess, _StatusCommands()
    log = logging.getLogger(_SUBMITIT_LOGGER)
    saved = log.handlers[:], log.propagate
    if os.environ.get("SUBMITIT_LOG_LEVEL", "").upper() != "NOCONFIG":
        handler = _Stderr()
        handler.setLevel(logging.WARNING)
        handler.addFilter(_ONCE)
        handler.setFormatter(logging.Formatter("[ncmse] submitit: %(message)s"))
        log.handlers, log.propagate = [handler], False
    try:
        yield
    finally:
        log.handlers, log.propagate = saved
        submitit_core.subprocess = commands


class TrainJob:
    """:func:`ncmse.executors.train_job` as a submitit checkpointable callable: on preemption or timeout
    submitit calls ``checkpoint``, which requeues the same job; the run then resumes from its own
    per-epoch checkpoint in the cache folder.

    Signals, inside a submitit job (submitit's handlers installed): the preemption signal (``USR2``,
    ``--signal=USR2@90``) is submitit's: checkpoint and requeue.  submitit only logs ("bypasses")
    SIGTERM, so a cancelled job (``scancel``: SIGTERM, then SIGKILL after Slurm's ``KillWait``) would
    train on and might write its result after the driver had reported it failed.  Here a SIGTERM that
    no preemption signal follows within ``grace_s`` seconds (submitit's own preemption sends SIGTERM
    and then ``USR2``) raises :class:`JobCancelled` in the training loop: the run stops at once, keeps its
    last checkpoint and writes no result."""

    def __init__(self, grace_s: float = 5.0):
        self.grace_s = grace_s

    def __call__(self, config, cache_root, device=None, data_root=None, threads=None):
        with _cancel_on_sigterm(getattr(self, "grace_s", 5.0)) as ended:
            try:
                summary = train_job(config, cache_root, device, data_root, threads)
                ended.append("trained")           # a countdown running out now changes nothing
                return summary
            except JobCancelled:
                ended.append("cancelled")
                done = _finished_anyway(config, cache_root, device, data_root)
                if done is None:
                    raise
                return done

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _finished_anyway(config: dict, cache_root: str, device, data_root) -> dict | None:
    """The summary of a run whose result reached the cache although the job was cancelled (the signal
    came after the result was written), else None."""
    from .train import resolve_device

    cfg = RunConfig.from_dict(config).resolved(resolve_device(device))
    entry = ResultsCache(cache_root).get(cfg, data_root=data_root)
    if entry is None:
        return None
    return {"key": cfg.key(), "cached": False, "diverged": bool(entry.get("diverged")),
            "seconds": entry["provenance"]["wall_seconds"]}


def _is_submitit_bypass(handler) -> bool:
    """Whether ``handler`` is submitit's SIGTERM handler of a running job (``SignalHandler.bypass``)."""
    owner = getattr(handler, "__self__", None)
    return getattr(handler, "__name__", "") == "bypass" and type(owner).__name__ == "SignalHandler" \
        and type(owner).__module__.startswith("submitit.")


@contextmanager
def _cancel_on_sigterm(grace_s: float):
    """Inside a submitit job: SIGTERM starts a ``grace_s`` countdown (``SIGALRM``) at whose end
    :class:`JobCancelled` is raised, unless submitit's preemption signal came meanwhile (it then
    checkpoints and requeues, and later SIGTERMs are only logged, as submitit does) or the job has
    ended (the caller appends to the list this yields).  Elsewhere (the debug executor, a plain call)
    nothing changes."""
    ended: list = []
    if threading.current_thread() is not threading.main_thread() or \
            not _is_submitit_bypass(signal.getsignal(signal.SIGTERM)):
        yield ended
        return
    from submitit import JobEnvironment

    log = logging.getLogger(_SUBMITIT_LOGGER)       # the job's own log (its stderr file)
    preempt_signal = JobEnvironment._usr_sig()
    preempt = signal.getsignal(preempt_signal)
    requeueing = []

    def on_term(signum, frame):
        if requeueing or ended:
            log.warning(f"[ncmse] SIGTERM after the {'requeue' if requeueing else 'run'}: ignored")
            return
        if signal.getitimer(signal.ITIMER_REAL)[0] > 0:          # a countdown runs already
            return
        log.warning(f"[ncmse] SIGTERM: the run stops in {grace_s:g} s (its last checkpoint is kept, no result is "
                    f"written) unless the preemption signal {preempt_signal.name} comes first")
        signal.setitimer(signal.ITIMER_REAL, max(grace_s, 1e-3))

    def on_alarm(signum, frame):
        if not requeueing and not ended:
            raise JobCancelled("cancelled (SIGTERM): the run stopped before writing its result; its checkpoint "
                               "is kept and it resumes from there when submitted again")

    def on_preempt(signum, frame):
        requeueing.append(signum)
        signal.setitimer(signal.ITIMER_REAL, 0)
        if callable(preempt):
            preempt(signum, frame)

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGALRM, preempt_signal)}
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(preempt_signal, on_preempt)
    signal.signal(signal.SIGTERM, on_term)
    try:
        yield ended
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s, h in saved.items():
            signal.signal(s, h)


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__

"""The executors: sequential, local workers and submitit (debug, local, mocked Slurm) train the same
runs to the same results, a second call trains nothing, and an interrupted job resumes.  A cancelled
Slurm job (SIGTERM) stops without a result and is reported in one line; a preempted one (SIGTERM, then
USR2) is still requeued; submitit's warnings go to stderr once.

Every back end trains with one thread, so that their results can be compared bit for bit."""

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from offline_data import DATA_ROOT, needs_fashion
from tqdm import tqdm

from ncmse import cache as cache_module
from ncmse import cluster, executors, paths
from ncmse import train as train_mod
from ncmse.cache import ResultsCache
from ncmse.cluster import Submitit
from ncmse.config import RunConfig
from ncmse.executors import Local, Sequential, sweep
from ncmse.profiles import profile_config

REPO = Path(__file__).resolve().parents[1]
pytestmark = needs_fashion
SMOKE = profile_config("smoke")
CONFIGS = [SMOKE.replace(d=3), SMOKE.replace(d=5, loss="ce"), SMOKE.replace(d=3, seed=1)]
COMPARED = ("history", "train", "test", "W", "b", "diverged", "validity")


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _numbers(results):
    return [{k: r[k] for k in COMPARED} for r in results]


def test_back_ends_agree_and_a_second_call_trains_nothing(tmp_path, one_thread, monkeypatch):
    kw = dict(device="cpu", progress=False, data_root=DATA_ROOT)
    listed = CONFIGS + CONFIGS[:1]                               # a configuration listed twice trains once
    got = {}
    for name, ex in (("sequential", Sequential()), ("local", Local(workers=2, threads=1)),
                     ("debug", Submitit(cluster="debug", cpus_per_job=1)),
                     ("submitit-local", Submitit(cluster="local", cpus_per_job=1, poll_seconds=0.2))):
        results = sweep(listed, cache=ResultsCache(tmp_path / name / "results"), executor=ex, **kw)
        assert [r["cached"] for r in results] == [False, False, False, True], name
        assert [RunConfig.from_dict(r["config"]) for r in results] == listed
        got[name] = _numbers(results)
    assert got["local"] == got["sequential"] == got["debug"] == got["submitit-local"]

    def no_training(*a, **k):
        raise AssertionError("a cached run must not be trained")

    monkeypatch.setattr(Local, "train", no_training)
    again = sweep(listed, cache=ResultsCache(tmp_path / "local" / "results"), executor=Local(workers=2), **kw)
    assert all(r["cached"] for r in again) and _numbers(again) == got["local"]


def _wait_for(path: Path, job, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline and not job.done():
        time.sleep(0.05)
    assert path.exists(), "the job finished or failed before its first checkpoint"


def test_a_killed_job_resumes_from_its_checkpoint_when_submitted_again(tmp_path, one_thread):
    config = SMOKE.replace(epochs=40, n_per_class=200, nc_epochs=(20,))
    other = SMOKE.replace(d=5)
    cache = ResultsCache(tmp_path / "results")
    ex = Submitit(cluster="local", cpus_per_job=1, poll_seconds=0.2)
    doomed, healthy = ex.submit([config, other], cache=cache, device="cpu", data_root=str(DATA_ROOT))
    _wait_for(cache.checkpoint_path(config), doomed)
    import psutil

    controller = psutil.Process(doomed._process.pid)               # the injected failure: a hard kill
    for proc in [*controller.children(recursive=True), controller]:
        proc.kill()
    assert healthy.result()["key"] == other.key()
    with pytest.raises(Exception):                                # noqa: B017 — submitit's own error types
        doomed.result()
    epoch = torch.load(cache.checkpoint_path(config), weights_only=True)["epoch"]
    assert 1 <= epoch < 40
    results = sweep([config, other], cache=cache, executor=ex, device="cpu", progress=False, data_root=DATA_ROOT)
    assert [r["cached"] for r in results] == [False, True]        # only the failed run was submitted again
    assert results[0]["provenance"]["resumed_at_epoch"] >= epoch   # … and it resumed, not restarted
    straight = train_mod.train(config, device="cpu", progress=False, data_root=DATA_ROOT)
    assert _numbers(results[:1]) == _numbers([straight])
    assert not cache.checkpoint_path(config).exists()


def test_a_preempted_local_job_is_requeued_and_resumes(tmp_path, one_thread):
    config = SMOKE.replace(epochs=40, n_per_class=200, nc_epochs=(20,))
    cache = ResultsCache(tmp_path / "results")
    ex = Submitit(cluster="local", cpus_per_job=1)
    (job,) = ex.submit([config], cache=cache, device="cpu", data_root=str(DATA_ROOT))
    _wait_for(cache.checkpoint_path(config), job)
    import psutil

    for task in psutil.Process(job._process.pid).children(recursive=True):   # Slurm's preemption signal,
        task.send_signal(signal.SIGUSR2)                                     # to the job's task
    summary = job.result()
    assert summary["key"] == config.key() and summary["cached"] is False
    log = Path(str(job.paths.stderr)).read_text() + Path(str(job.paths.stdout)).read_text()
    assert "preempted" in log and "Requeued job" in log and log.count("Starting with JobEnvironment") == 2
    result = cache.get(config, data_root=DATA_ROOT)
    assert result["provenance"]["resumed_at_epoch"] >= 1
    straight = train_mod.train(config, device="cpu", progress=False, data_root=DATA_ROOT)
    assert _numbers([result]) == _numbers([straight])


def test_slurm_job_array_through_mocked_slurm(tmp_path, one_thread):
    from submitit.core import submission
    from submitit.slurm.test_slurm import mocked_slurm

    cache = ResultsCache(tmp_path / "results")
    ex = Submitit(cluster="slurm", partition="gpu", gpus_per_job=1, cpus_per_job=1, timeout_min=240,
                  array_parallelism=2, folder=str(tmp_path / "jobs"))
    with mocked_slurm() as mock:
        jobs = ex.submit(CONFIGS, cache=cache, device="cpu", data_root=str(DATA_ROOT))
        assert len(jobs) == 3 and len({j.job_id.split("_")[0] for j in jobs}) == 1      # one array
        (script,) = (tmp_path / "jobs").rglob("*submission.sh")
        text = script.read_text()
        for line in ("#SBATCH --array=0-2%2", "#SBATCH --gpus-per-node=1", "#SBATCH --time=240",
                     "#SBATCH --partition=gpu", "#SBATCH --cpus-per-task=1", "#SBATCH --signal=USR2@"):
            assert line in text, (line, text)
        for job in jobs:                                            # the array's tasks, run here
            with mock.job_context(job.job_id):
                submission.process_job(job.paths.folder)
        assert [j.result()["key"] for j in jobs] == [c.key() for c in CONFIGS]
    assert all(cache.get(c, data_root=DATA_ROOT) is not None for c in CONFIGS)


def test_each_local_worker_keeps_one_device_for_every_run_it_takes():
    """Two workers over two (named) GPUs: whichever runs a worker takes, it trains them all on its own
    device, so no GPU gets two runs while the other idles.  The device names are never touched here."""
    ex = Local(workers=2, devices=["cuda:0", "cuda:1"])
    with ex.pool(2, ex._devices(None)) as pool:
        seen = [f.result() for f in [pool.submit(executors._whoami, 2.0 if i < 2 else 0.01) for i in range(10)]]
    by_worker = {}
    for pid, device in seen:
        by_worker.setdefault(pid, set()).add(device)
    assert len(by_worker) == 2 and all(len(d) == 1 for d in by_worker.values())
    assert set().union(*by_worker.values()) == {"cuda:0", "cuda:1"}
    assert executors._whoami() == (os.getpid(), None)       # not a worker: no device of its own


def test_bad_back_end_settings_are_refused():
    with pytest.raises(ValueError, match="workers"):
        Local(workers=0)
    with pytest.raises(ValueError, match="cluster"):
        Submitit(cluster="pbs")
    with pytest.raises(ValueError, match="timeout_min"):
        Submitit(timeout_min=0)
    assert executors.from_environment().name == "sequential"


def test_from_environment(monkeypatch):
    monkeypatch.setenv("NCMSE_EXECUTOR", "local")
    monkeypatch.setenv("NCMSE_WORKERS", "3")
    ex = executors.from_environment()
    assert isinstance(ex, Local) and ex.workers == 3
    monkeypatch.setenv("NCMSE_WORKERS", "zero")
    with pytest.raises(ValueError, match="NCMSE_WORKERS"):
        executors.from_environment()
    monkeypatch.setenv("NCMSE_EXECUTOR", "slurm")
    with pytest.raises(ValueError, match="NCMSE_EXECUTOR"):
        executors.from_environment()
    assert cache_module.ResultsCache  # the cache the executors share


def test_the_help_names_the_folder_where_submitit_logs_go(tmp_path, monkeypatch):
    from ncmse.__main__ import _cache, _parser

    parser = _parser()
    for command in ("study", "sweep", "train"):
        help_text = " ".join(parser._subparsers._group_actions[0].choices[command].format_help().split())
        assert "DIR/submitit of --cache DIR, else $NCMSE_CACHE/submitit, else data/submitit" in help_text
    ex = cluster.Submitit(cluster="debug")
    args = parser.parse_args(["sweep", "--cache", str(tmp_path / "shared")])
    folder = Path(ex.executor(_cache(args)).folder)                    # where the logs really go: --cache DIR
    assert folder.parent == tmp_path / "shared" / "submitit"
    monkeypatch.setenv("NCMSE_CACHE", str(tmp_path / "env"))            # … else $NCMSE_CACHE
    folder = Path(ex.executor(_cache(parser.parse_args(["sweep"]))).folder)
    assert folder.parent == tmp_path / "env" / "submitit"
    monkeypatch.delenv("NCMSE_CACHE")                                   # … else data/ (nothing created)
    assert cluster.submitit_folder(_cache(parser.parse_args(["sweep"]))) == paths.DATA / "submitit"


# ------------------------------------------------------------------ a real Slurm job's signals, emulated

LONG = SMOKE.replace(epochs=40, n_per_class=200, nc_epochs=(20,))      # about 0.1 s an epoch on one core


def _fake_slurm_bin(tmp_path: Path) -> Path:
    """A folder with a fake ``scontrol`` that records its arguments (submitit requeues a preempted job with
    ``scontrol requeue ID``), to put first on a job's PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    return bin_dir


def _start_job(job, tmp_path: Path) -> subprocess.Popen:
    """Run a (mock-)submitted Slurm job as Slurm would: submitit's job entry point in a process of its own,
    with the job's variables, stdout and stderr going to the job's log files."""
    env = {**os.environ, "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": job.job_id, "OMP_NUM_THREADS": "1",
           "PATH": f"{_fake_slurm_bin(tmp_path)}{os.pathsep}{os.environ.get('PATH', '')}"}
    folder = Path(job.paths.folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(job.paths.stdout, "a") as out, open(job.paths.stderr, "a") as err:
        return subprocess.Popen([sys.executable, "-u", "-m", "submitit.core._submit", str(folder)], cwd=REPO,
                                env=env, stdout=out, stderr=err)


def _wait_for_checkpoint(path: Path, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert path.exists(), "the job ended before its first checkpoint"


@contextmanager
def _job_under_way(tmp_path, *, cancel_grace_s: float):
    """Under submitit's mocked Slurm: LONG submitted as one job, started in its own process and past its
    first checkpoint; yields (cache, job, process)."""
    from submitit.slurm.test_slurm import mocked_slurm

    cache = ResultsCache(tmp_path / "results")
    ex = Submitit(cluster="slurm", cpus_per_job=1, folder=str(tmp_path / "jobs"), cancel_grace_s=cancel_grace_s)
    with mocked_slurm():
        (job,) = ex.submit([LONG], cache=cache, device="cpu", data_root=str(DATA_ROOT))
        proc = _start_job(job, tmp_path)
        _wait_for_checkpoint(cache.checkpoint_path(LONG), proc)
        yield cache, job, proc


def test_a_cancelled_slurm_job_stops_without_writing_a_result(tmp_path, one_thread):
    """scancel sends SIGTERM (then SIGKILL after KillWait): the run stops at once, keeps its checkpoint,
    writes no result, and its error says it was cancelled; run again, it resumes from the checkpoint."""
    with _job_under_way(tmp_path, cancel_grace_s=0.3) as (cache, job, proc):
        proc.send_signal(signal.SIGTERM)                      # scancel
        assert proc.wait(timeout=120) != 0
        with pytest.raises(Exception) as failed:              # noqa: B017 — submitit's FailedJobError
            job.result()
    assert cluster._was_cancelled(job, failed.value) and "cancelled (SIGTERM)" in str(failed.value)
    assert not cache.path(LONG).exists() and cache.get(LONG, data_root=DATA_ROOT) is None     # no result
    epoch = torch.load(cache.checkpoint_path(LONG), weights_only=True)["epoch"]
    assert 1 <= epoch < LONG.epochs                                                            # its checkpoint
    log = Path(job.paths.stderr).read_text()
    assert "Bypassing signal SIGTERM" not in log and "the run stops in 0.3 s" in log
    results = sweep([LONG], cache=cache, executor=Sequential(), device="cpu", progress=False, data_root=DATA_ROOT)
    assert results[0]["provenance"]["resumed_at_epoch"] >= epoch                               # resumed


def test_a_preempted_slurm_job_is_still_checkpointed_and_requeued(tmp_path, one_thread):
    """Preemption as submitit signals it (SlurmJob._interrupt: SIGTERM, then USR2): the SIGTERM does not
    cancel the run; USR2 checkpoints the job and requeues it (``scontrol requeue``), and the requeued job
    resumes from the run's checkpoint and writes the result."""
    with _job_under_way(tmp_path, cancel_grace_s=3.0) as (cache, job, proc):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        proc.send_signal(signal.SIGUSR2)
        proc.wait(timeout=120)
        assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", job.job_id]
        assert not job.paths.result_pickle.exists() and not cache.path(LONG).exists()
        again = _start_job(job, tmp_path)                      # Slurm starts the requeued job
        assert again.wait(timeout=300) == 0
        summary = job.result()
    assert summary["key"] == LONG.key() and summary["cached"] is False
    log = Path(job.paths.stderr).read_text() + Path(job.paths.stdout).read_text()
    assert "preempted" in log and "Requeued job" in log and "cancelled" not in log
    result = cache.get(LONG, data_root=DATA_ROOT)
    assert result["provenance"]["resumed_at_epoch"] >= 1
    straight = train_mod.train(LONG, device="cpu", progress=False, data_root=DATA_ROOT)
    assert _numbers([result]) == _numbers([straight])


FAKE_SLURM = {     # just enough of Slurm for single jobs of submitit's, on this machine, without accounting
    "sbatch": """#!/bin/bash
n=$(( $(cat "$FAKE_SLURM/count" 2>/dev/null || echo 0) + 1 )); echo $n > "$FAKE_SLURM/count"
touch "$FAKE_SLURM/$n.queued"
if [ -z "$FAKE_SLURM_HOLD" ]; then SLURM_JOB_ID=$n nohup bash "$1" > /dev/null 2>&1 & fi
echo "Submitted batch job $n"
""",
    "srun": """#!/bin/bash
while [ $# -gt 0 ]; do
  case "$1" in --output) out=${2//%j/$SLURM_JOB_ID}; shift 2;; --error) err=${2//%j/$SLURM_JOB_ID}; shift 2;;
               --*) shift;; *) break;; esac
done
out=${out//%t/0}; err=${err//%t/0}; mkdir -p "$(dirname "$out")"
"$@" >> "$out" 2>> "$err" &
echo $! > "$FAKE_SLURM/$SLURM_JOB_ID.pid"; wait $!; status=$?
rm -f "$FAKE_SLURM/$SLURM_JOB_ID.queued"; exit $status
""",
    "squeue": """#!/bin/bash
cd "$FAKE_SLURM" && for f in *.queued; do [ -e "$f" ] && echo "${f%.queued}"; done; exit 0
""",
    "scancel": """#!/bin/bash
rm -f "$FAKE_SLURM/$1.queued"; [ -e "$FAKE_SLURM/$1.pid" ] && kill -TERM "$(cat "$FAKE_SLURM/$1.pid")"; exit 0
""",
    "sacct": """#!/bin/bash
echo "Slurm accounting storage is disabled" >&2; exit 1
""",
}


@pytest.fixture
def fake_slurm(tmp_path):
    """Fake sbatch/srun/squeue/scancel/sacct first on PATH: their environment for a subprocess (jobs are
    numbered 1, 2, …; srun runs the task, scancel sends it SIGTERM, sacct fails as without accounting)."""
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in FAKE_SLURM.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "FAKE_SLURM": str(state),
           "OMP_NUM_THREADS": "1"}
    env.pop("NCMSE_DEBUG", None)
    return env


def test_the_command_reports_a_cancelled_slurm_job_in_one_line(tmp_path, fake_slurm):
    """The drill of a single-node Slurm without accounting, with fake sbatch/srun/scancel/sacct on PATH:
    `sweep --executor slurm`, then scancel of the running job.  The command ends with status 143 and one
    line naming the run (key and configuration) and the command that resumes it, no traceback, no result
    file; submitit's "status may be inaccurate" warning (with sacct's own message) once, on stderr only."""
    from ncmse.cache import describe_run

    run = SMOKE.replace(epochs=200, n_per_class=200, nc_epochs=(20,))     # it outlasts the default 5 s of grace
    argv = ["sweep", "--profile", "smoke", "--epochs", "200", "--n-per-class", "200", "--nc-epochs", "20", "--quiet",
            "--device", "cpu", "--data-root", str(DATA_ROOT), "--cache", str(tmp_path / "cache"),
            "--executor", "slurm"]
    proc = subprocess.Popen([sys.executable, "-m", "ncmse", *argv], cwd=REPO, env=fake_slurm, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    cache = ResultsCache(tmp_path / "cache" / "results")
    _wait_for_checkpoint(cache.checkpoint_path(run), proc)
    subprocess.run(["scancel", "1"], env=fake_slurm, check=True)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143 and "Traceback" not in err, (out, err)
    (line,) = [x for x in err.splitlines() if "cancelled" in x]
    assert run.key() in line and describe_run(run.to_dict()) in line and "Slurm job 1" in line
    assert str(tmp_path / "cache" / "checkpoints") in line
    assert line.endswith("run the same command again: python -m ncmse " + " ".join(argv))
    assert not any(cache.root.glob("*.json")) and cache.checkpoint_path(run).exists()
    assert err.count("status may be inaccurate") == 1 and err.count("accounting storage is disabled") == 1, err
    assert "[ncmse] submitit: Bypassing sacct error" in err
    assert "submitit" not in out and "sacct" not in out, out


def test_a_job_cancelled_while_pending_ends_the_wait_without_sacct(tmp_path, fake_slurm, monkeypatch):
    """Without accounting submitit never learns that a job cancelled while pending has ended (it left no
    result): squeue tells, and the driver reports the run as cancelled instead of waiting for ever."""
    from submitit.slurm.slurm import SlurmJob

    monkeypatch.setenv("PATH", fake_slurm["PATH"])
    monkeypatch.setenv("FAKE_SLURM", fake_slurm["FAKE_SLURM"])
    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")                       # the job stays pending
    cache = ResultsCache(tmp_path / "results")
    ex = Submitit(cluster="slurm", folder=str(tmp_path / "jobs"), poll_seconds=0.1, queue_check_s=0.5)
    raised = []

    def drive():                                          # in a thread, so that a driver that hangs fails the test
        try:
            ex.train([LONG], cache=cache, device="cpu", data_root=str(DATA_ROOT), bar=tqdm(disable=True))
        except Exception as exc:
            raised.append(exc)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    time.sleep(1.0)
    subprocess.run(["scancel", "1"], check=True)
    driver.join(timeout=120)
    SlurmJob.watcher.clear()
    assert not driver.is_alive(), "the driver still waits for a job cancelled 2 minutes ago"
    (cancelled,) = raised
    assert isinstance(cancelled, cluster.RunsCancelled), cancelled
    assert [(c.key(), job_id) for c, job_id in cancelled.runs] == [(LONG.key(), "1")]
    assert "Slurm job 1" in str(cancelled) and LONG.key() in str(cancelled)


def test_sigterm_to_the_driver_alone_stops_the_local_workers_at_once(tmp_path):
    """`kill`, `timeout` and schedulers signal the driver, not its workers: the runs in flight stop with it
    (no result written, checkpoints left to resume from) instead of training on to their end."""
    cmd = [sys.executable, "-m", "ncmse", "sweep", "--profile", "smoke", "--loss", "mse", "ce", "--d", "4",
           "--epochs", "400", "--n-per-class", "200", "--executor", "local", "--workers", "2", "--device", "cpu",
           "--data-root", str(DATA_ROOT), "--cache", str(tmp_path), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    ckpts = tmp_path / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(ckpts.glob("*.pt"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)                            # the driver alone, not its process group
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 143 and "interrupted (SIGTERM)" in err, err
    assert "Traceback" not in err and "InvalidStateError" not in err, err
    assert not list((tmp_path / "results").glob("*.json"))     # neither run trained on to its end …
    before = {p: p.stat().st_mtime_ns for p in ckpts.glob("*.pt")}
    time.sleep(2.0)
    assert {p: p.stat().st_mtime_ns for p in ckpts.glob("*.pt")} == before      # … nor goes on training
    assert all(1 <= torch.load(p, weights_only=True)["epoch"] < 400 for p in before)   # each can resume

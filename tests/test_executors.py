"""The executors: sequential, local workers and submitit (debug, local, mocked Slurm) train the same
runs to the same results, a second call trains nothing, and an interrupted job resumes.

Every back end trains with one thread, so that their results can be compared bit for bit."""

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from ncmse import cache as cache_module
from ncmse import executors
from ncmse import train as train_mod
from ncmse.cache import ResultsCache
from ncmse.config import RunConfig
from ncmse.executors import Local, Sequential, Submitit, sweep
from ncmse.profiles import profile_config

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA_ROOT = Path(os.environ.get("NCMSE_DATA_ROOT", SHARED))
pytestmark = pytest.mark.skipif(not (DATA_ROOT / "FashionMNIST" / "raw").exists(),
                                reason=f"Fashion-MNIST not found under {DATA_ROOT}")
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


def test_the_help_names_the_folder_where_submitit_logs_go(tmp_path):
    from ncmse.__main__ import _parser
    from ncmse.cache import ResultsCache

    help_text = " ".join(_parser()._subparsers._group_actions[0].choices["study"].format_help().split())
    assert "DIR/submitit of --cache DIR, else data/submitit" in help_text
    ex = executors.Submitit(cluster="debug")
    folder = Path(ex.executor(ResultsCache(tmp_path / "shared" / "results")).folder)
    assert folder.parent == tmp_path / "shared" / "submitit"          # where the logs really go

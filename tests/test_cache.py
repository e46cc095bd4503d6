"""The results cache is trustworthy: never stale, never torn, one training per key with several writers.

Runs train at the smoke profile on Fashion-MNIST from the offline copy (a few seconds each)."""

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from offline_data import DATA_ROOT
from offline_data import needs_fashion as needs_data

from ncmse import fingerprint
from ncmse import train as train_mod
from ncmse.__main__ import summary_rows, sweep_configs
from ncmse.cache import ResultsCache, run
from ncmse.config import RunConfig
from ncmse.files import atomic_write_text, quarantine
from ncmse.profiles import profile_config

REPO = Path(__file__).resolve().parents[1]
SMOKE = profile_config("smoke")


def _count_trainings(monkeypatch) -> list:
    calls = []
    real = train_mod.train

    def counting(config, **kw):
        calls.append(config.key())
        return real(config, **kw)

    monkeypatch.setattr(train_mod, "train", counting)
    return calls


def _same_numbers(a: dict, b: dict) -> bool:
    keys = ("history", "train", "test", "W", "b", "diverged")
    return all(a[k] == b[k] for k in keys)


# ----------------------------------------------------------------------------------- code fingerprint

@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of the package that the fingerprint reads instead of the real one (edit it freely)."""
    pkg = tmp_path / "ncmse"
    shutil.copytree(fingerprint.PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fingerprint, "PACKAGE", pkg)
    fingerprint.code_fingerprint.cache_clear()
    yield pkg
    fingerprint.code_fingerprint.cache_clear()


def _refingerprint() -> str:
    fingerprint.code_fingerprint.cache_clear()
    return fingerprint.code_fingerprint()


def test_fingerprint_follows_code_not_docstrings(package_copy):
    names = fingerprint.training_modules()
    assert {"ncmse.train", "ncmse.data", "ncmse.losses", "ncmse.models", "ncmse.metrics"} <= set(names)
    assert "ncmse.study" not in names and "ncmse.ufm" not in names      # analysis, not training
    before = fingerprint.code_fingerprint()
    losses = package_copy / "losses.py"
    text = losses.read_text()
    losses.write_text(text.replace('"""', '"""Edited docs. ', 1) + "\n# a comment\n")
    assert _refingerprint() == before                                    # documentation only
    changed = text.replace("F.one_hot(labels, logits.shape[-1])", "(F.one_hot(labels, logits.shape[-1]) * 1)")
    assert changed != text
    losses.write_text(changed)
    assert _refingerprint() != before                                    # what runs changed


def test_sizes_are_outside_the_fingerprint(package_copy):
    """Resizing a chapter or a study (ncmse.profiles) never marks a cached run stale: no module that
    training imports imports the sizes, and editing one leaves the fingerprint as it was."""
    names = fingerprint.training_modules()
    assert "ncmse.profiles" not in names and "ncmse.config" in names and "ncmse.hardware" in names
    before = fingerprint.code_fingerprint()
    sizes = package_copy / "profiles.py"
    text = sizes.read_text()
    edited = text.replace('"cpu": dict(seeds=(0, 1), lrs=(0.01', '"cpu": dict(seeds=(0, 1, 2, 3), lrs=(0.01', 1)
    assert edited != text
    sizes.write_text(edited)
    assert _refingerprint() == before


@needs_data
def test_stale_results_and_checkpoints_are_retrained(tmp_path, monkeypatch, capsys):
    cache = ResultsCache(tmp_path / "results")
    first = run(SMOKE, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT)
    assert first["cached"] is False and first["validity"] == fingerprint.validity("fashion_mnist", DATA_ROOT)
    assert {"git", "torch", "device", "threads"} <= set(first["provenance"])
    calls = _count_trainings(monkeypatch)
    assert run(SMOKE, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT)["cached"] is True
    assert calls == []

    # the same configuration trained by other code: a wrong number stored there is never served
    entry = json.loads(cache.path(SMOKE).read_text())
    entry["validity"]["code"] = "0123456789abcdef"
    entry["test"]["accuracy"] = 0.123
    cache.path(SMOKE).write_text(json.dumps(entry))
    assert cache.get(SMOKE, data_root=DATA_ROOT) is None
    again = run(SMOKE, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT)
    assert again["cached"] is False and calls == [SMOKE.key()] and _same_numbers(again, first)
    assert "trained by other code" in capsys.readouterr().err

    # …or on another copy of the data
    entry = json.loads(cache.path(SMOKE).read_text())
    entry["validity"]["data"] = "Fashion-MNIST (some other copy)"
    cache.path(SMOKE).write_text(json.dumps(entry))
    assert run(SMOKE, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT)["cached"] is False
    assert len(calls) == 2

    # a checkpoint from other code is not resumed from
    config = SMOKE.replace(epochs=3)
    ckpt = cache.checkpoint_path(config)
    train_mod.train(config, device="cpu", checkpoint=ckpt, progress=False, stop_after=1, data_root=DATA_ROOT,
                    validity={"code": "old", "data": "old"})
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 1 and state["validity"] == {"code": "old", "data": "old"}
    full = train_mod.train(config, device="cpu", progress=False, data_root=DATA_ROOT)
    resumed = run(config, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT)
    assert _same_numbers(resumed, full) and not ckpt.exists()


@needs_data
def test_cached_entries_name_their_data_source(tmp_path, monkeypatch):
    from ncmse import data

    cache = ResultsCache(tmp_path / "results")
    first = run(SMOKE, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT)
    monkeypatch.setattr(data, "describe_source", lambda name, root=None: "Fashion-MNIST (another source)")
    calls = _count_trainings(monkeypatch)
    again = run(SMOKE, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT)
    assert calls == [SMOKE.key()] and again["validity"]["data"] == "Fashion-MNIST (another source)"
    assert _same_numbers(again, first)


# ------------------------------------------------------------------------------------ torn files

@pytest.mark.parametrize("content", ["", "{", '{"config": {', "{}", "[]", "null", '{"config": {"d": "x"}}'])
@needs_data
def test_torn_results_file_is_moved_aside_and_retrained(tmp_path, content, caplog):
    cache = ResultsCache(tmp_path / "results")
    cache.root.mkdir(parents=True)
    cache.path(SMOKE).write_text(content)
    with caplog.at_level(logging.WARNING):
        result = run(SMOKE, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT)
    assert result["cached"] is False
    moved = cache.path(SMOKE).with_name(cache.path(SMOKE).name + ".corrupt")
    assert moved.read_text() == content
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(cache.path(SMOKE)) in warnings[0] and "\n" not in warnings[0]
    assert run(SMOKE, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT)["cached"] is True


@needs_data
def test_the_same_key_corrupted_again_keeps_every_corrupt_file(tmp_path, caplog, capsys):
    from ncmse.__main__ import main

    argv = ["train", "--profile", "smoke", "--quiet", "--device", "cpu", "--cache", str(tmp_path), "--data-root",
            str(DATA_ROOT)]
    assert main(argv) == 0
    assert main([*argv[:-4], "--d", "3", *argv[-4:]]) == 0            # another run, whose JSON lands here below
    capsys.readouterr()
    cache = ResultsCache(tmp_path / "results")
    path = cache.path(SMOKE.resolved("cpu"))
    good, other = path.read_bytes(), cache.path(SMOKE.resolved("cpu").replace(d=3)).read_bytes()
    damages = [b"\xb3\x00\xff binary", good[:len(good) // 2], other]   # binary bytes, truncation, another run's JSON
    for damage in damages:
        path.write_bytes(damage)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            rc = main(argv)
        out, err = capsys.readouterr()
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert rc == 0 and "Traceback" not in err and out.rstrip().endswith("| False |"), (rc, out, err)  # retrained
        assert len(warnings) == 1 and str(path) in warnings[0] and "\n" not in warnings[0], warnings
    kept = {p.name: p.read_bytes() for p in cache.root.glob("*.corrupt*")}
    name = path.name + ".corrupt"
    assert kept == {name: damages[0], f"{name}.1": damages[1], f"{name}.2": damages[2]}   # in order, none replaced
    assert _same_numbers(json.loads(path.read_text()), json.loads(good))
    assert main(argv) == 0 and capsys.readouterr().out.rstrip().endswith("| True |")


def test_quarantine_takes_the_first_free_name_and_never_overwrites(tmp_path, caplog):
    from ncmse.files import quarantine

    target = tmp_path / "k.json"
    (tmp_path / "k.json.corrupt.1").write_text("kept by someone")          # a gap in the names is not filled over
    moved = []
    for content in ("first", "second", "third"):
        target.write_text(content)
        with caplog.at_level(logging.WARNING):
            moved.append(quarantine(target, "torn", then="retraining"))
        assert not target.exists()
    assert [p.name for p in moved] == ["k.json.corrupt", "k.json.corrupt.2", "k.json.corrupt.3"]
    assert [p.read_text() for p in moved] == ["first", "second", "third"]
    assert (tmp_path / "k.json.corrupt.1").read_text() == "kept by someone"
    assert quarantine(target, "gone") == tmp_path / "k.json.corrupt"        # nothing to move: nothing logged
    assert len([r for r in caplog.records if r.name == "ncmse.files"]) == 3


_CORRUPTER = r"""
import random, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
kinds = [open(p, "rb").read() for p in sys.argv[3:]]
rng, end, n = random.Random(0), time.monotonic() + seconds, 0
while time.monotonic() < end:
    data = kinds[n % len(kinds)]
    with open(path, "wb") as f:                 # in place, not atomically: a reader may see any part of it
        for i in range(0, len(data), 2048):
            f.write(data[i:i + 2048])
            f.flush()
    n += 1
    time.sleep(rng.uniform(0, 0.02))
print(n)
"""


@needs_data
def test_a_reader_never_crashes_nor_serves_a_wrong_result_while_another_process_corrupts_the_file(tmp_path, capsys):
    """One process rewrites a cached result in place, over and over, with binary bytes, half of it,
    another run's JSON and the good JSON; meanwhile this process reads it through ``run`` (which trains
    it again where it finds it damaged) and the ``results`` command and table.  Each read gives the good
    numbers (cached, or quarantined and retrained: the same bits) or leaves the file out of the table,
    never a crash or another run's numbers."""
    from ncmse.__main__ import main
    from ncmse.results import runs_frame

    cache = ResultsCache(tmp_path / "results")
    config, other = SMOKE.resolved("cpu"), SMOKE.resolved("cpu").replace(d=3)
    argv = ["train", "--profile", "smoke", "--quiet", "--device", "cpu", "--cache", str(tmp_path), "--data-root",
            str(DATA_ROOT)]
    assert main(argv) == 0             # the command sets this process's threads: every run below trains with them
    good = json.loads(cache.path(config).read_text())
    run(other, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    good_bytes = cache.path(config).read_bytes()
    for name, data in (("binary", bytes(range(256)) * 8), ("half", good_bytes[:len(good_bytes) // 2]),
                       ("other", cache.path(other).read_bytes()), ("good", good_bytes)):
        (blobs / name).write_bytes(data)
    corrupter = subprocess.Popen([sys.executable, "-c", _CORRUPTER, str(cache.path(config)), "3",
                                  *(str(blobs / n) for n in ("binary", "half", "other", "good"))],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    capsys.readouterr()
    reads, retrained = 0, 0
    try:
        while corrupter.poll() is None:
            result = run(config, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT)
            assert _same_numbers(result, good)
            retrained += not result["cached"]
            rc = main(["results", "--cache", str(tmp_path)])
            out, err = capsys.readouterr()
            assert rc == 0 and "Traceback" not in err, (rc, err)
            for frame in (pd.read_csv(io.StringIO(out)), runs_frame(cache)):
                rows = frame[frame["key"] == config.key()]
                assert len(rows) <= 1 and (rows["test_accuracy"] == good["test"]["accuracy"]).all()
                assert set(frame["key"]) <= {config.key(), other.key()} and len(frame) == len(set(frame["key"]))
            capsys.readouterr()
            reads += 1
    finally:
        corrupter.kill()
        out, err = corrupter.communicate()
    assert corrupter.returncode == 0 and int(out) > 20, err                # the corrupter kept writing
    assert reads >= 3
    assert _same_numbers(run(config, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT), good)


@needs_data
def test_foreign_and_unfinished_results_are_not_served(tmp_path):
    cache = ResultsCache(tmp_path / "results")
    other = SMOKE.replace(d=3)
    good = run(other, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT)
    shutil.copy(cache.path(other), cache.path(SMOKE))          # another configuration under this key
    assert cache.read(SMOKE) == (None, "torn")
    unfinished = {k: v for k, v in good.items() if k != "cached"} | {"config": SMOKE.to_dict(), "complete": False}
    with pytest.raises(ValueError, match="unfinished"):
        cache.put(SMOKE, unfinished)


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage", "other config"])
@needs_data
def test_torn_checkpoint_is_moved_aside_and_training_starts_over(tmp_path, damage, caplog):
    config = SMOKE.replace(epochs=3)
    full = train_mod.train(config, device="cpu", progress=False, data_root=DATA_ROOT)
    ckpt = tmp_path / "run.pt"
    train_mod.train(config if damage != "other config" else config.replace(d=3), device="cpu", checkpoint=ckpt,
                    progress=False, stop_after=1, data_root=DATA_ROOT)
    blob = ckpt.read_bytes()
    if damage == "truncate":
        ckpt.write_bytes(blob[:len(blob) // 2])
    elif damage == "empty":
        ckpt.write_bytes(b"")
    elif damage == "garbage":
        ckpt.write_bytes(b"not a checkpoint" * 100)
    with caplog.at_level(logging.WARNING):
        resumed = train_mod.train(config, device="cpu", checkpoint=ckpt, progress=False, data_root=DATA_ROOT)
    assert _same_numbers(resumed, full)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(ckpt) in warnings[0] and "epoch 0" in warnings[0]
    assert ckpt.with_name("run.pt.corrupt").exists()


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    target = tmp_path / "a" / "x.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["x.json"]

    class Boom(Exception):
        pass

    from ncmse.files import atomic_write

    def failing(f):
        f.write(b"half")
        raise Boom

    with pytest.raises(Boom):
        atomic_write(target, failing)
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["x.json"]
    dest = quarantine(target, "test")
    assert dest.name == "x.json.corrupt" and not target.exists()


# ------------------------------------------------------------------------------ several writers

def _sweep_cmd(cache_dir: Path) -> list[str]:
    return [sys.executable, "-m", "ncmse", "sweep", "--profile", "smoke", "--d", "3", "5", "--loss", "mse", "ce",
            "--quiet", "--cache", str(cache_dir), "--data-root", str(DATA_ROOT), "--device", "cpu"]


def _cached_column(stdout: str) -> dict[tuple, str]:
    rows = [line.strip("|").split("|") for line in stdout.splitlines() if line.startswith("| fashion_mnist")]
    return {(r[2].strip(), r[3].strip()): r[-1].strip() for r in rows}


@needs_data
def test_two_concurrent_sweeps_train_each_configuration_once(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(_sweep_cmd(tmp_path), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    tables = [_cached_column(o[0]) for o in outs]
    assert all(len(t) == 4 for t in tables)
    for key in tables[0]:
        assert sorted((tables[0][key], tables[1][key])) == ["False", "True"], (key, tables)
    leftovers = [p.name for p in (tmp_path / "results").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [] and not any((tmp_path / "checkpoints").glob("*.pt"))


# ---------------------------------------------------------------------------------------- diverged

@needs_data
def test_divergence_is_recorded_cached_and_printed(tmp_path, capsys):
    cache = ResultsCache(tmp_path / "results")
    config = SMOKE.replace(lr=1e5)
    result = run(config, cache=cache, device="cpu", progress=True, data_root=DATA_ROOT)
    d = result["diverged"]
    assert d is not None and d["epoch"] >= 1 and d["batch"] >= 1 and d["loss"] in ("nan", "inf")
    assert result["train"] is None and result["test"] is None and result["W"] is None
    assert "diverged" in capsys.readouterr().err
    assert run(config, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT)["cached"] is True
    rows = summary_rows([result])
    assert rows[0][5] == "diverged" and rows[0][6] == "diverged"


def test_tuning_never_chooses_a_rate_that_diverged(monkeypatch):
    from ncmse import study, variants

    def fake_sweep(configs, **kw):
        out = []
        for c in configs:
            diverged = c.lr == 0.3
            out.append({"config": c.to_dict(), "evaluated_on": "holdout",
                        "diverged": {"epoch": 1} if diverged else None,
                        "test": None if diverged else {"accuracy": 0.5 + c.lr}})
        return out

    monkeypatch.setattr(study, "sweep", fake_sweep)
    choice = study.tune_lr(SMOKE, [variants.MSE], lrs=(0.01, 0.1, 0.3), ds=(4,), holdout_per_class=5)[variants.MSE]
    assert choice.by_d[4] == 0.1 and choice.scores[4][0.3] == -np.inf


def test_pooling_leaves_diverged_runs_out():
    from ncmse import stats

    def result(seed, acc):
        c = SMOKE.replace(seed=seed).to_dict()
        if acc is None:
            return {"config": c, "diverged": {"epoch": 1, "batch": 1, "loss": "nan"}, "train": None, "test": None}
        return {"config": c, "diverged": None, "train": {"accuracy": acc, "live_units": 9}, "test": {"accuracy": acc}}

    (row,) = stats.pool_seeds([result(0, 0.5), result(1, None), result(2, 0.7)])
    assert row["n"] == 2 and row["diverged"] == 1 and row["diverged_seeds"] == [1]
    assert row["test_mean"] == pytest.approx(0.6)


@pytest.mark.parametrize("field", ["lr", "alpha", "M", "weight_decay", "momentum", "gamma"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), -float("inf")])
def test_non_finite_numbers_are_refused(field, value):
    kw = {field: value, "loss": "rmse"}
    with pytest.raises(ValueError, match=f"{field} must be finite"):
        RunConfig(**kw)


def test_numpy_scalars_are_accepted_and_normalized():
    a = RunConfig(d=np.int64(4), lr=np.float64(0.05), seed=np.int32(1), epochs=np.int64(3), nc_epochs=(np.int64(2),),
                  weight_decay=np.float32(0.0), n_per_class=np.int16(10))
    b = RunConfig(d=4, lr=0.05, seed=1, epochs=3, nc_epochs=(2,), weight_decay=0.0, n_per_class=10)
    assert a == b and a.key() == b.key() and type(a.d) is int and type(a.lr) is float
    json.dumps(a.to_dict())
    assert RunConfig(d=torch.tensor(5)).d == 5
    with pytest.raises(ValueError, match="feature dimension"):
        RunConfig(d=np.float64(4.0))


def test_sweep_configs_apply_the_rescaling_to_rmse_runs_only():
    configs = sweep_configs(SMOKE, losses=("mse", "rmse", "ce"), alpha=5.0, M=2.0)
    assert [(c.loss, c.alpha, c.M) for c in configs] == [("mse", 1.0, 1.0), ("rmse", 5.0, 2.0), ("ce", 1.0, 1.0)]
    with pytest.raises(ValueError, match="rmse"):
        sweep_configs(SMOKE, losses=("mse",), alpha=5.0)


# ------------------------------------------------------------------------------- interruption

@needs_data
def test_sigterm_leaves_a_clean_message_and_a_resumable_checkpoint(tmp_path):
    args = ["--profile", "smoke", "--epochs", "40", "--n-per-class", "200", "--quiet", "--device", "cpu",
            "--data-root", str(DATA_ROOT)]
    cmd = [sys.executable, "-m", "ncmse", "train", *args, "--cache", str(tmp_path / "a")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpts = tmp_path / "a" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not any(ckpts.glob("*.pt")) and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "interrupted (SIGTERM)" in err and "resumes" in err and "Traceback" not in err
    (ckpt,) = ckpts.glob("*.pt")
    state = torch.load(ckpt, weights_only=True)
    assert 1 <= state["epoch"] < 40
    resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    straight = subprocess.run([sys.executable, "-m", "ncmse", "train", *args, "--cache", str(tmp_path / "b")],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    a, b = (json.loads(next((tmp_path / x / "results").glob("*.json")).read_text()) for x in ("a", "b"))
    assert _same_numbers(a, b)
    assert straight.returncode == 0


@needs_data
def test_audit_lists_entries_whose_provenance_differs(tmp_path):
    cache = ResultsCache(tmp_path / "results")
    a, b, c = SMOKE, SMOKE.replace(d=3), SMOKE.replace(d=5)
    for config in (a, b, c):
        run(config, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT)
    assert cache.audit(data_root=DATA_ROOT) == []
    for config, change in ((b, {"provenance": {"torch": "1.0", "threads": 64}}), (c, {"validity": {"code": "old"}})):
        entry = json.loads(cache.path(config).read_text())
        for k, v in change.items():
            entry[k].update(v)
        cache.path(config).write_text(json.dumps(entry))
    rows = {r["key"]: r for r in cache.audit(data_root=DATA_ROOT)}
    assert set(rows) == {b.key(), c.key()}
    assert rows[b.key()]["differs"] == ["torch", "threads"] and rows[b.key()]["stale"] is False
    assert rows[c.key()]["differs"] == ["code"] and rows[c.key()]["stale"] is True

"""The command line: every valid configuration runs, every kind of bad input gives one actionable line."""

import os
import shutil
from pathlib import Path

import pytest

from ncmse import executors
from ncmse.__main__ import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA_ROOT = Path(os.environ.get("NCMSE_DATA_ROOT", SHARED))
needs_data = pytest.mark.skipif(not (DATA_ROOT / "FashionMNIST" / "raw").exists(),
                                reason=f"Fashion-MNIST not found under {DATA_ROOT}")


def _run(argv, capsys) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:            # argparse
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


BAD = {
    "unknown profile": ["train", "--profile", "fast"],
    "unknown dataset": ["train", "--dataset", "imagenet"],
    "unknown model": ["train", "--model", "vgg"],
    "d zero": ["train", "--d", "0"],
    "d negative": ["sweep", "--d", "4", "-3"],
    "d not a number": ["train", "--d", "four"],
    "lr zero": ["train", "--lr", "0"],
    "lr negative": ["train", "--lr", "-1"],
    "lr infinite": ["train", "--lr", "inf"],
    "lr nan": ["train", "--lr", "nan"],
    "alpha without rmse": ["train", "--alpha", "5"],
    "M without rmse": ["sweep", "--loss", "mse", "ce", "--M", "3"],
    "alpha zero": ["train", "--loss", "rmse", "--alpha", "0"],
    "alpha infinite": ["train", "--loss", "rmse", "--alpha", "inf"],
    "M negative": ["train", "--loss", "rmse", "--M", "-1"],
    "M nan": ["train", "--loss", "rmse", "--M", "nan"],
    "unknown loss": ["train", "--loss", "hinge"],
    "epochs zero": ["train", "--epochs", "0"],
    "epochs not a number": ["train", "--epochs", "many"],
    "nc epochs beyond epochs": ["train", "--epochs", "2", "--nc-epochs", "5"],
    "n per class zero": ["train", "--n-per-class", "0"],
    "weight decay negative": ["train", "--weight-decay", "-1"],
    "weight decay nan": ["train", "--weight-decay", "nan"],
    "seed negative": ["train", "--seed", "-1"],
    "device name": ["train", "--device", "gpu"],
    "device absent": ["train", "--device", "cuda"],
    "device index": ["train", "--device", "cuda:7"],
    "data root missing": ["train", "--data-root", "/nonexistent/ncmse-data"],
    "unknown option": ["train", "--frobnicate"],
    "slurm without slurm": ["sweep", "--executor", "slurm"],
    "workers without local": ["sweep", "--workers", "2"],
    "threads with slurm": ["sweep", "--executor", "submitit-debug", "--threads", "2"],
    "workers zero": ["sweep", "--executor", "local", "--workers", "0"],
    "unknown executor": ["study", "--executor", "pbs"],
    "book workers zero": ["book", "--workers", "0"],
    "unknown command": ["fly"],
    "book unknown chapter": ["book", "--profile", "smoke", "--chapters", "book/nope", "--no-build"],
    "book unknown profile": ["book", "--profile", "fast"],
    "book timeout": ["book", "--timeout", "0"],
    "results csv and parquet": ["results", "--csv", "a.csv", "--parquet", "a.parquet"],
    "results unknown profile": ["results", "--profile", "fast"],
    "results cache missing": ["results", "--cache", "/nonexistent/ncmse-cache"],
    "results folder missing": ["results", "--csv", "/nonexistent/folder/runs.csv"],
    "results parquet folder missing": ["results", "--parquet", "/nonexistent/folder/runs.parquet"],
}


@pytest.mark.parametrize("argv", list(BAD.values()), ids=list(BAD))
def test_bad_input_gives_one_line(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "sweep", _no_training)
    rc, out, err = _run([*argv, *(["--cache", str(tmp_path)] if argv[0] in ("train", "sweep") else [])], capsys)
    lines = err.strip().splitlines()
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err


def _no_training(*a, **k):
    raise AssertionError("bad input must be refused before training")


def test_missing_data_root_in_the_environment(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NCMSE_DATA_ROOT", str(tmp_path / "nowhere"))
    rc, _, err = _run(["train", "--profile", "smoke", "--quiet", "--cache", str(tmp_path), "--device", "cpu"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "NCMSE_DATA_ROOT" in err, err


@needs_data
@pytest.mark.parametrize("damage", ["truncated idx file", "too many images a class", "cache is a file"])
def test_bad_data_and_folders_give_one_line(damage, capsys, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(DATA_ROOT / "FashionMNIST", root / "FashionMNIST")
    cache = tmp_path / "cache"
    extra = []
    if damage == "truncated idx file":
        f = root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
        f.write_bytes(f.read_bytes()[:1000])
    elif damage == "too many images a class":
        extra = ["--n-per-class", "100000"]
    else:
        cache.write_text("not a folder")
    rc, _, err = _run(["train", "--profile", "smoke", "--quiet", "--device", "cpu", "--data-root", str(root),
                       "--cache", str(cache), *extra], capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    if damage == "truncated idx file":
        assert "train-labels-idx1-ubyte" in err


def _capture_configs(monkeypatch) -> list:
    seen = []

    def fake_sweep(configs, **kw):
        seen.extend(configs)
        return []

    monkeypatch.setattr(executors, "sweep", fake_sweep)
    return seen


def test_every_valid_configuration_is_accepted(capsys, monkeypatch, tmp_path):
    seen = _capture_configs(monkeypatch)
    rc, out, err = _run(["train", "--profile", "smoke", "--loss", "rmse", "--alpha", "5", "--M", "3", "--cache",
                         str(tmp_path)], capsys)
    assert rc == 0, err
    assert [(c.loss, c.alpha, c.M) for c in seen] == [("rmse", 5.0, 3.0)]
    seen.clear()
    rc, out, err = _run(["sweep", "--profile", "smoke", "--loss", "mse", "rmse", "--alpha", "5", "--d", "4", "16",
                         "--cache", str(tmp_path)], capsys)
    assert rc == 0 and [(c.d, c.loss, c.alpha) for c in seen] == [(4, "mse", 1.0), (4, "rmse", 5.0), (16, "mse", 1.0),
                                                                   (16, "rmse", 5.0)]
    seen.clear()
    rc, out, err = _run(["train", "--profile", "cpu", "--epochs", "8", "--cache", str(tmp_path)], capsys)
    assert rc == 0 and seen[0].epochs == 8 and seen[0].nc_epochs == (1, 2, 3, 5, 7)
    assert out.count("trimmed to --epochs 8") == 1
    seen.clear()
    rc, out, err = _run(["train", "--profile", "cpu", "--epochs", "8", "--nc-epochs", "4", "8", "--cache",
                         str(tmp_path)], capsys)
    assert rc == 0 and seen[0].nc_epochs == (4, 8) and "trimmed" not in out


@needs_data
def test_train_rescaled_and_diverged_from_the_command_line(capsys, tmp_path):
    common = ["--profile", "smoke", "--quiet", "--device", "cpu", "--data-root", str(DATA_ROOT), "--cache",
              str(tmp_path)]
    rc, out, err = _run(["train", "--loss", "rmse", "--alpha", "5", "--M", "2", *common], capsys)
    assert rc == 0 and "RMSE α=5, M=2" in out, err
    rc, out, err = _run(["train", "--lr", "100000", *common], capsys)
    assert rc == 0 and "diverged" in out, err


@pytest.mark.parametrize("argv, says", [
    (["train", "--profile", "smoke", "--seed", "99999999999999999999"], "a seed lies in [0, 2**63"),
    (["train", "--profile", "smoke", "--threads", "100000"], "at most"),
    (["train", "--profile", "smoke", "--d", "1000000000", "--quiet"], "GiB for the mlp's feature layer alone"),
    (["train", "--profile", "smoke", "--cache", "", "--quiet"], "--cache needs a folder"),
])
def test_odd_input_is_refused_up_front_in_one_line(argv, says, capsys):
    try:
        rc = main(argv)
    except SystemExit as exc:            # argparse refuses a malformed value itself
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and says in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2


def test_the_interrupt_line_names_the_cache_it_used(tmp_path):
    from ncmse.__main__ import _interrupted, _parser

    args = _parser().parse_args(["train", "--cache", str(tmp_path / "shared")])
    line = _interrupted(args, " (SIGTERM)")
    assert str(tmp_path / "shared" / "checkpoints") in line and str(tmp_path / "shared" / "results") in line


def test_a_run_that_learned_nothing_says_so(tmp_path, capsys):
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    root = Path(os.environ.get("NCMSE_DATA_ROOT", shared))
    if not (root / "FashionMNIST" / "raw").exists():
        pytest.skip(f"Fashion-MNIST not found under {root}")
    rc = main(["train", "--profile", "smoke", "--lr", "1e-30", "--epochs", "1", "--quiet", "--cache", str(tmp_path),
               "--data-root", str(root)])
    out = capsys.readouterr().out
    assert rc == 0 and "ended no better than chance" in out and "learning rate" in out

"""The command line: every valid configuration runs, every kind of bad input gives one actionable line."""

import os
import shutil
from pathlib import Path

import pytest
from offline_data import DATA_ROOT
from offline_data import needs_fashion as needs_data

from ncmse import executors
from ncmse.__main__ import main


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
    # the edges of float and int64
    "lr that underflows to zero": ["train", "--lr", "1e-400"],
    "lr negative zero": ["train", "--lr", "-0.0"],
    "M negative zero": ["train", "--loss", "rmse", "--M", "-0.0"],
    "weight decay that overflows": ["train", "--weight-decay", "1e999"],
    "epochs 2**63": ["train", "--epochs", str(2**63)],
    "epochs 2**63 - 1": ["train", "--epochs", str(2**63 - 1)],
    "nc epoch 2**63": ["train", "--nc-epochs", str(2**63)],
    "seed 2**63": ["sweep", "--seed", "0", str(2**63)],
    "d 2**63 - 1": ["sweep", "--d", "4", str(2**63 - 1)],
    # paths a file system cannot hold
    "data root over PATH_MAX": ["train", "--data-root", "/tmp/" + "/".join(["d" * 200] * 25)],
    "data root name over NAME_MAX": ["train", "--data-root", "/tmp/" + "e" * 300],
    "csv name over NAME_MAX": ["results", "--csv", "/tmp/" + "c" * 300 + ".csv"],
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


# --------------------------------------------------------------------- odd places and missing data

def _near_path_max(tmp_path: Path) -> Path:
    """A folder path 40 bytes short of PATH_MAX (4096 on Linux): valid, but results/<key>.json below it is not."""
    base = tmp_path / "/".join(["f" * 200] * 19)
    return base / ("f" * (4096 - 40 - len(str(base)) - 1))


def _dangling(tmp_path: Path) -> Path:
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    return tmp_path / "link"


def _loop(tmp_path: Path) -> Path:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    return tmp_path / "loop"


def _results_dangling(tmp_path: Path) -> Path:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "results").symlink_to(tmp_path / "gone")
    return tmp_path / "cache"


ODD_CACHES = {          # name: (make the cache folder under tmp_path, what the line says)
    "cache path over PATH_MAX": (lambda t: t / "/".join(["a" * 200] * 25), "bytes long"),
    "cache name over NAME_MAX": (lambda t: t / ("b" * 300), "bytes long"),
    "cache that leaves no room below it": (_near_path_max, "bytes long"),
    "cache a dangling symbolic link": (_dangling, "does not exist"),
    "cache a loop of symbolic links": (_loop, "leads back to itself"),
    "cache whose results folder is a dangling link": (_results_dangling, "does not exist"),
}


@pytest.mark.parametrize("how", ["--cache", "NCMSE_CACHE"])
@pytest.mark.parametrize("case", list(ODD_CACHES), ids=list(ODD_CACHES))
def test_a_cache_folder_that_cannot_be_used_gives_one_line(case, how, capsys, tmp_path, monkeypatch):
    make, says = ODD_CACHES[case]
    cache = make(tmp_path)
    monkeypatch.setattr(executors, "sweep", _no_training)
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv in (["train", "--profile", "smoke"], ["results"]):
        if how == "--cache":
            argv = [*argv, "--cache", str(cache)]
        else:
            monkeypatch.setenv("NCMSE_CACHE", str(cache))
        rc, out, err = _run(argv, capsys)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
        assert says in err and how in err and len(lines[0]) < 600, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before            # nothing created on the way


@needs_data
@pytest.mark.parametrize("place", ["unicode and spaces", "symbolic link to a folder"])
def test_a_cache_in_an_unusual_but_valid_place_works(place, capsys, tmp_path):
    if place == "unicode and spaces":
        cache = tmp_path / "résultats caché ✓ 数据" / "deux mots"
    else:
        (tmp_path / "real").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "real")
        cache = tmp_path / "link"
    argv = ["train", "--profile", "smoke", "--quiet", "--device", "cpu", "--data-root", str(DATA_ROOT), "--cache",
            str(cache)]
    rc, out, err = _run(argv, capsys)
    assert rc == 0 and out.rstrip().endswith("| False |"), err
    rc, out, err = _run(argv, capsys)
    assert rc == 0 and out.rstrip().endswith("| True |"), err           # served from the cache
    rc, out, err = _run(["results", "--cache", str(cache)], capsys)
    assert rc == 0 and len(out.strip().splitlines()) == 2 and "Traceback" not in err
    if place != "unicode and spaces":
        assert len(list((tmp_path / "real" / "results").glob("*.json"))) == 1


@needs_data
@pytest.mark.parametrize("argv, says", [
    (["--lr", "1e308"], "diverged"),
    (["--weight-decay", "1e308"], "--weight-decay"),
    (["--loss", "rmse", "--alpha", "1e308"], "--alpha"),
    (["--seed", str(2**63 - 1)], "| 9223372036854775807 |"),
])
def test_values_at_the_edge_of_float_and_int64_train_to_a_clear_outcome(argv, says, capsys, tmp_path):
    rc, out, err = _run(["train", "--profile", "smoke", "--epochs", "1", "--quiet", "--device", "cpu", "--data-root",
                         str(DATA_ROOT), "--cache", str(tmp_path), *argv], capsys)
    assert rc == 0 and says in out and "Traceback" not in err, (out, err)
    if "diverged" in out:
        assert "diverged (the loss stopped being finite): try a smaller --lr" in out


def _offline(monkeypatch, tmp_path) -> Path:
    """No network (every download fails at once), and a stand-in for the repository's data/ folder."""
    import urllib.error
    import urllib.request

    from ncmse import paths

    def no_network(*a, **k):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    (tmp_path / "repo" / "data").mkdir(parents=True)
    monkeypatch.setattr(paths, "DATA", tmp_path / "repo" / "data")
    return tmp_path / "repo" / "data"


@pytest.mark.parametrize("how", ["NCMSE_DATA_ROOT", "--data-root"])
def test_an_empty_data_root_stays_empty_and_the_advice_is_in_command_line_terms(how, capsys, tmp_path, monkeypatch):
    repo_data = _offline(monkeypatch, tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["train", "--profile", "smoke", "--quiet", "--device", "cpu", "--cache", str(tmp_path / "cache")]
    if how == "NCMSE_DATA_ROOT":
        monkeypatch.setenv("NCMSE_DATA_ROOT", str(empty))
    else:
        argv += ["--data-root", str(empty)]
    rc, out, err = _run(argv, capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: Fashion-MNIST") and "Traceback" not in err, err
    assert "download=True" not in err and "root=" not in err, err          # no Python arguments
    assert f"{how}" in err and "--data-root DIR" in err and "network access" in err, err
    assert list(empty.iterdir()) == []                                      # nothing written into the data root
    assert list(repo_data.iterdir()) == []                                  # no empty folder left by the download


# --------------------------------------------------------------------------- a read-only cache

_READER = r"""
import contextlib, io, json, sys
from ncmse.__main__ import main
out = []
for argv in json.loads(sys.argv[1]):
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
    out.append([rc, o.getvalue(), e.getvalue()])
print("RESULTS" + json.dumps(out))
"""


def _read_only(cache: Path, commands: list[list[str]]) -> list:
    """Run ``commands`` (ncmse command lines) in one process that sees ``cache`` read-only: a read-only
    bind mount in a mount namespace of its own as root (who ignores permissions), else ``chmod -R a-w``."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-c", _READER, json.dumps(commands)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if os.geteuid() == 0:
        if not shutil.which("unshare"):
            pytest.skip("root ignores permissions and unshare(1) is missing: no read-only cache to test here")
        script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
        proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(cache), *cmd], capture_output=True,
                              text=True, env=env, timeout=300)
        if "RESULTS" not in proc.stdout and ("unshare:" in proc.stderr or "mount:" in proc.stderr):
            pytest.skip(f"root ignores permissions and no read-only bind mount is allowed here: {proc.stderr[-200:]}")
    else:
        modes = {p: p.stat().st_mode for p in [cache, *cache.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
    assert "RESULTS" in proc.stdout, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULTS", 1)[1])


@needs_data
def test_a_read_only_cache_that_holds_the_runs_is_read(capsys, tmp_path):
    cache = tmp_path / "cache"
    common = ["--profile", "smoke", "--quiet", "--device", "cpu", "--data-root", str(DATA_ROOT), "--cache", str(cache)]
    rc, out, err = _run(["sweep", "--d", "3", "5", *common], capsys)
    assert rc == 0, err
    files = {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()}
    (results, cached, new) = _read_only(cache, [["results", "--cache", str(cache)], ["sweep", "--d", "3", "5", *common],
                                                ["sweep", "--d", "3", "7", *common]])
    assert results[0] == 0 and len(results[1].strip().splitlines()) == 3 and "Traceback" not in results[2], results
    assert cached[0] == 0 and cached[1].count("| True |") == 2 and "Traceback" not in cached[2], cached
    lines = new[2].strip().splitlines()                 # a run it lacks: one line, naming the cache and the fix
    assert new[0] == 2 and len(lines) == 1 and "cannot be written to" in lines[0] and str(cache) in lines[0], new
    assert "--cache DIR" in lines[0] and "Traceback" not in new[2]
    assert {p: p.read_bytes() for p in cache.rglob("*") if p.is_file()} == files     # nothing changed

"""Results as data (ncmse.results, ``python -m ncmse results``): the tables round-trip through pandas with
the documented columns, one row per run and one per (run, epoch), NC4_ncc tracked during training.

Runs train at the smoke profile on Fashion-MNIST from the offline copy (a few seconds each)."""

import math
from pathlib import Path

import pandas as pd
import pytest
from offline_data import DATA_ROOT
from offline_data import needs_fashion as needs_data

from ncmse import results as R
from ncmse.__main__ import main
from ncmse.cache import ResultsCache, run
from ncmse.profiles import profile_config

SMOKE = profile_config("smoke")
CONFIGS = [SMOKE.replace(d=4, loss="ce"), SMOKE.replace(d=9, nc_epochs=(1, 2), epochs=2),
           SMOKE.replace(lr=1e5)]                                        # the last one diverges


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    cache = ResultsCache(root / "results")
    out = [run(c, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT) for c in CONFIGS]
    return root, cache, out


def _read_back(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    frame.to_csv(path, index=False)
    return pd.read_csv(path)


def _assert_same(got: pd.DataFrame, want: pd.DataFrame):
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    for k in want.columns:
        a, b = got[k], want[k]
        if pd.api.types.is_numeric_dtype(b) and not pd.api.types.is_bool_dtype(b):
            assert pd.api.types.is_numeric_dtype(a), k
            assert ((a - b).abs().fillna(0) <= 1e-12 * b.abs().fillna(0)).all() and (a.isna() == b.isna()).all(), k
        else:             # strings and booleans: read_csv gives '' back as NaN
            assert a.fillna("").astype(str).tolist() == b.astype(str).tolist(), k


@needs_data
def test_runs_table_round_trips_with_the_documented_columns(cached, tmp_path):
    _, cache, results = cached
    frame = R.runs_frame(cache)
    assert list(frame.columns) == list(R.RUN_COLUMNS) and len(frame) == 3
    _assert_same(_read_back(frame, tmp_path / "runs.csv"), frame)
    by_key = frame.set_index("key")
    for config, r in zip(CONFIGS, results, strict=True):
        row = by_key.loc[config.key()]
        assert row["profile"] == "smoke" and row["d"] == config.d and row["loss"] == config.loss
        assert row["code_fingerprint"] == r["validity"]["code"] and not row["stale_code"]
        assert row["device"] == "cpu" and row["torch"] == r["provenance"]["torch"]
        assert row["wall_seconds"] == r["provenance"]["wall_seconds"] > 0
        if r["diverged"]:
            assert row["diverged"] and row["diverged_epoch"] == r["diverged"]["epoch"]
            assert math.isnan(row["test_accuracy"]) and math.isnan(row["NC1"]) and math.isnan(row["NC4_ncc"])
        else:
            assert not row["diverged"] and math.isnan(row["diverged_epoch"])
            assert row["test_accuracy"] == r["test"]["accuracy"] and row["NC1"] == r["train"]["NC1"]
            assert 0 <= row["NC4_ncc"] <= 1 and row["NC4_ncc"] == r["train"]["NC4_ncc"]
            assert row["live_units"] == r["train"]["live_units"]
    # what a chapter does with the runs it trained: the same table from the list
    _assert_same(R.runs_table([{**r, "cached": False} for r in results]).sort_values("key", ignore_index=True),
                 frame.sort_values("key", ignore_index=True))
    assert R.runs_table(results, fingerprint="other code")["stale_code"].all()


@needs_data
def test_history_has_one_row_per_epoch_and_nc4_ncc_where_measured(cached, tmp_path):
    _, cache, results = cached
    hist = R.history_frame(cache)
    assert list(hist.columns) == list(R.HISTORY_COLUMNS)
    assert len(hist) == sum(len(r["history"]) for r in results)
    _assert_same(_read_back(hist, tmp_path / "history.csv"), hist)
    two = hist[hist["key"] == CONFIGS[1].key()].sort_values("epoch")
    assert two["epoch"].tolist() == [1, 2] and two["nc_measured"].all()
    assert two["NC4_ncc"].between(0, 1).all() and two["NC1"].notna().all()
    assert two["NC4_ncc"].iloc[-1] == results[1]["train"]["NC4_ncc"]
    assert R.history_table([]).columns.tolist() == list(R.HISTORY_COLUMNS)


@needs_data
def test_profile_filter_and_parquet(cached, tmp_path):
    _, cache, _ = cached
    assert len(R.runs_frame(cache, "smoke")) == 3
    empty = R.runs_frame(cache, "cpu")
    assert empty.empty and list(empty.columns) == list(R.RUN_COLUMNS)
    with pytest.raises(ValueError, match="unknown profile"):
        R.runs_frame(cache, "fast")
    frame = R.runs_frame(cache)
    path = R.write_frame(frame, tmp_path / "runs.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(path), frame)


def test_profile_of():
    assert R.profile_of(profile_config("cpu").replace(d=3, lr=0.3, seed=2).to_dict()) == "cpu"
    assert R.profile_of(profile_config("paper").to_dict()) == "paper"
    assert R.profile_of(profile_config("smoke").replace(epochs=7, nc_epochs=()).to_dict()) == ""


def test_download_link_writes_where_the_runner_says(tmp_path, monkeypatch):
    monkeypatch.setenv("NCMSE_DOWNLOADS", str(tmp_path / "downloads"))
    frame = pd.DataFrame({"d": [4, 9], "test_accuracy": [0.5, 0.75]})
    link = R.download_link(frame, "runs.csv")
    assert link == "{download}`runs.csv (2 rows, 2 columns) <runs.csv>`"
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "downloads" / "runs.csv"), frame)
    for bad in ("../runs.csv", "runs.parquet"):
        with pytest.raises(ValueError, match="bare file name"):
            R.download_link(frame, bad)


@needs_data
def test_cli_writes_the_tables(cached, tmp_path, capsys):
    root, cache, _ = cached
    assert main(["results", "--cache", str(root), "--csv", str(tmp_path / "runs.csv")]) == 0
    assert "3 runs" in capsys.readouterr().err
    _assert_same(pd.read_csv(tmp_path / "runs.csv"), R.runs_frame(cache))
    assert main(["results", "--cache", str(root), "--history", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ",".join(R.HISTORY_COLUMNS)
    assert main(["results", "--cache", str(root), "--parquet", str(tmp_path / "h.parquet"), "--history"]) == 0
    assert len(pd.read_parquet(tmp_path / "h.parquet")) == len(R.history_frame(cache))


def test_the_table_names_what_it_left_out(tmp_path, capsys):
    from ncmse.cache import ResultsCache
    from ncmse.results import runs_frame

    root = tmp_path / "results"
    root.mkdir()
    (root / "0123456789abcdef.json").write_bytes(b"\xb3\x00binary")
    (root / "fedcba9876543210.json").write_text("[1, 2]")
    frame = runs_frame(ResultsCache(root))
    err = capsys.readouterr().err
    assert len(frame) == 0 and "left out 2 file(s)" in err and "0123456789abcdef.json" in err


def test_a_binary_result_file_is_torn_not_fatal(tmp_path):
    from ncmse.cache import ResultsCache

    cache = ResultsCache(tmp_path / "results")
    config = profile_config("smoke")
    cache.path(config).parent.mkdir(parents=True)
    cache.path(config).write_bytes(b"\xb3\x00binary")
    assert cache.read(config) == (None, "torn")
    assert cache.read(config, fix=True) == (None, "torn") and not cache.path(config).exists()
    assert list((tmp_path / "results").glob("*.corrupt*"))

"""Results as data: every deep-network run as one row of a tidy table, its NC curves one row per epoch.

The results cache (:mod:`ncmse.cache`) keeps one JSON document per configuration, named by a
hash; this module turns such documents — read from the cache, or the list a chapter has just trained
(``study.run_study(...).runs``) — into :mod:`pandas` DataFrames with the documented columns
:data:`RUN_COLUMNS` and :data:`HISTORY_COLUMNS`, so that a reader re-plots or extends the experiments
with ``pandas.read_csv`` on one file.  ``python -m ncmse results [--history] [--csv FILE | --parquet
FILE]`` writes them; the chapter "Deep networks" offers its runs as a CSV download
(:func:`download_link`).

* :func:`runs_table` (results) and :func:`runs_frame` (cache): one row per run — its configuration
  (every field of :class:`ncmse.config.RunConfig`), the profile whose base run it belongs to, the final
  training and test accuracy, the NC metrics of the training features at the last epoch, live units,
  whether and where it diverged, and its provenance (device, torch, threads, code fingerprint, wall
  time, …).
* :func:`history_table` (results) and :func:`history_frame` (cache): one row per (run, epoch): the
  training loss and learning rate of every epoch, accuracies and NC metrics at the epochs where they
  were measured (``nc_measured``; NaN elsewhere).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd

from .cache import ResultsCache
from .config import RunConfig
from .fingerprint import code_fingerprint
from .metrics import METRIC_NAMES, SAMPLE_METRIC_NAMES
from .profiles import STUDIES, STUDY_PROFILES, profile_config, study_profiles

__all__ = ["RUN_COLUMNS", "HISTORY_COLUMNS", "CONFIG_COLUMNS", "runs_table", "history_table", "runs_frame",
           "history_frame", "profile_of", "study_and_profile", "write_frame", "download_link"]

#: the fields of :class:`ncmse.config.RunConfig`, the configuration columns of both tables
CONFIG_COLUMNS = tuple(RunConfig.__dataclass_fields__)
NC_COLUMNS = METRIC_NAMES + SAMPLE_METRIC_NAMES

# column → meaning; the order is the order of the table
_RUN_HEAD = {
    "key": "the run's name in the cache (RunConfig.key: 16 hex digits of a hash of the configuration)",
    "study": "the study whose base run this is: 'deep' (chapter Deep networks) or 'cifar10' (chapter "
             "CIFAR-10; its paper runs are the deep study's), '' for none",
    "profile": "the profile whose base run this is (d, loss, α, M, seed, lr, feature ReLU, evaluation split "
               "and NC epochs may differ), '' for none",
}
_RUN_TAIL = {
    "evaluated_on": "'test', or 'holdout' for a learning-rate tuning run (its test columns hold held-out "
                    "training images)",
    "data_source": "which copy of the dataset was read (e.g. the CIFAR-10 JPEG copy)",
    "diverged": "whether the training loss stopped being finite (then accuracies and NC metrics are NaN)",
    "diverged_epoch": "the epoch at which it did (NaN otherwise)",
    "train_loss": "training loss of the last epoch (mean over its mini-batches)",
    "train_accuracy": "accuracy on the (un-augmented) training set after the last epoch",
    "test_accuracy": "accuracy on the test split (or the held-out images) after the last epoch",
    **{k: f"{k} of the training features after the last epoch (page Notation)" for k in NC_COLUMNS},
    "live_units": "feature units that are not constant on the training set",
    "device": "where it trained (cpu, cuda:0, …)",
    "torch": "torch version",
    "threads": "torch's intra-op threads",
    "machine": "CPU or GPU model",
    "python": "Python version",
    "ncmse": "package version",
    "git": "git revision of the checkout ('+dirty' with local changes)",
    "code_fingerprint": "hash of the training code (ncmse.fingerprint): results are valid for it only",
    "data_fingerprint": "the data's source as recorded for validity",
    "stale_code": "whether the code fingerprint differs from this checkout's (the run would be retrained)",
    "wall_seconds": "wall time of training, resumed parts included",
    "resumed_at_epoch": "epoch from which the last training call resumed (0: not resumed)",
    "finished": "UTC time the run finished",
}
#: the columns of :func:`runs_table`, in order, with their meaning
RUN_COLUMNS: dict[str, str] = {**_RUN_HEAD, **{k: f"RunConfig.{k}" for k in CONFIG_COLUMNS}, **_RUN_TAIL}

#: the columns of :func:`history_table`, in order, with their meaning
HISTORY_COLUMNS: dict[str, str] = {
    **_RUN_HEAD, **{k: f"RunConfig.{k}" for k in CONFIG_COLUMNS},
    "epoch": "epoch, 1-based",
    "train_loss": "mean training loss of the epoch's mini-batches",
    "lr": "learning rate after the epoch's schedule step",
    "partial": "the epoch was cut short by divergence",
    "nc_measured": "whether accuracies and NC metrics were measured after this epoch (NaN otherwise)",
    "train_accuracy": "training accuracy after the epoch",
    "test_accuracy": "test (or held-out) accuracy after the epoch",
    **{k: f"{k} of the training features after the epoch" for k in NC_COLUMNS},
    "live_units": "feature units that are not constant on the training set",
}

# what the study and the command line's sweeps vary around a profile's base run (nc_epochs only says when
# NC is measured, it does not change training; precision "auto" resolves by the machine that trains)
_VARIED = {"d", "loss", "alpha", "M", "seed", "lr", "feature_relu", "holdout_per_class", "test_per_class",
           "nc_epochs", "precision"}
_PROFILE_BASES = {(study, p): {k: v for k, v in profile_config(p, study).to_dict().items() if k not in _VARIED}
                  for study in STUDIES for p in study_profiles(study)}
_STRINGS = ("key", "study", "profile", "dataset", "model", "loss", "mse_convention", "optimizer", "schedule",
            "precision", "nc_epochs", "evaluated_on", "data_source", "device", "torch", "machine", "python", "ncmse",
            "git", "code_fingerprint", "data_fingerprint", "finished")
_BOOLS = ("augment", "feature_relu", "diverged", "stale_code", "partial", "nc_measured")


def profile_of(config: dict) -> str:
    """The profile whose base run ``config`` (a RunConfig's dict) is, up to the fields the study and the
    command line's sweeps vary (d, loss, α, M, seed, lr, feature ReLU, evaluation split, NC epochs);
    '' if none."""
    return study_and_profile(config)[1]


def study_and_profile(config: dict) -> tuple[str, str]:
    """The (study, profile) whose base run ``config`` is, as :func:`profile_of`; ("", "") if none.  The
    ``paper`` runs of the two studies are the same: they count as the deep study's."""
    for (study, p), base in _PROFILE_BASES.items():
        if all(_same(config.get(k), v) for k, v in base.items()):
            return study, p
    return "", ""


def _same(a, b) -> bool:
    if isinstance(b, tuple):
        return a is not None and tuple(a) == b
    return a == b


def _config_columns(c: dict) -> dict:
    row = {k: c.get(k) for k in CONFIG_COLUMNS}
    row["nc_epochs"] = " ".join(str(e) for e in c.get("nc_epochs", ()))      # "1 5 10": one CSV cell
    return row


def _head(r: dict) -> dict:
    c = r["config"]
    study, profile = study_and_profile(c)
    return {"key": RunConfig.from_dict(c).key(), "study": study, "profile": profile, **_config_columns(c)}


def _typed(rows: list[dict], columns: dict) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns))
    for k in frame.columns:
        if k in _STRINGS:
            frame[k] = frame[k].fillna("").astype(str)
        elif k in _BOOLS:
            frame[k] = frame[k].fillna(False).astype(bool)
        else:             # numbers; missing values (None: no holdout, not measured, diverged) are NaN
            frame[k] = pd.to_numeric(frame[k])
    return frame


def runs_table(results: list[dict], *, fingerprint: str | None = None) -> pd.DataFrame:
    """One row per result dict (as :func:`ncmse.cache.run` returns or the cache stores), with the
    columns of :data:`RUN_COLUMNS` in that order.  ``fingerprint``: the code fingerprint that
    ``stale_code`` compares with (default: this checkout's)."""
    current = fingerprint or code_fingerprint()
    rows = []
    for r in results:
        prov, valid = r.get("provenance") or {}, r.get("validity") or {}
        diverged = r.get("diverged")
        train, test = r.get("train") or {}, r.get("test") or {}
        history = r.get("history") or []
        rows.append({
            **_head(r), "evaluated_on": r.get("evaluated_on"), "data_source": r.get("data_source"),
            "diverged": bool(diverged), "diverged_epoch": diverged["epoch"] if diverged else None,
            "train_loss": history[-1].get("train_loss") if history else None,
            "train_accuracy": train.get("accuracy"), "test_accuracy": test.get("accuracy"),
            **{k: train.get(k) for k in NC_COLUMNS}, "live_units": train.get("live_units"),
            **{k: prov.get(k) for k in ("device", "torch", "threads", "machine", "python", "ncmse", "git")},
            "code_fingerprint": valid.get("code"), "data_fingerprint": valid.get("data"),
            "stale_code": valid.get("code") != current, "wall_seconds": prov.get("wall_seconds"),
            "resumed_at_epoch": prov.get("resumed_at_epoch"), "finished": prov.get("finished")})
    return _typed(rows, RUN_COLUMNS)


def history_table(results: list[dict]) -> pd.DataFrame:
    """One row per (result, epoch) of the results' histories, columns :data:`HISTORY_COLUMNS`."""
    rows = []
    for r in results:
        head = _head(r)
        for e in r.get("history") or []:
            measured = "train_accuracy" in e
            rows.append({**head, "epoch": e["epoch"], "train_loss": e.get("train_loss"), "lr": e.get("lr"),
                         "partial": bool(e.get("partial", False)), "nc_measured": measured,
                         **{k: e.get(k) for k in ("train_accuracy", "test_accuracy", *NC_COLUMNS, "live_units")}})
    return _typed(rows, HISTORY_COLUMNS)


def _cached(cache: ResultsCache | None, profile: str | None) -> list[dict]:
    if profile is not None and profile not in STUDY_PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(STUDY_PROFILES)}")
    out, skipped = [], []
    for path, entry in (cache or ResultsCache()).entries(skipped):
        try:
            key = RunConfig.from_dict(entry["config"]).key()
        except (TypeError, ValueError):
            skipped.append(path)                 # a document that is not a run of this code's configuration
            continue
        if key != path.stem:                     # another run's result under this name (a copy, a damaged
            skipped.append(path)                 # file): its row would repeat that run, not name this one
            continue
        if entry.get("complete") is True and (profile is None or profile_of(entry["config"]) == profile):
            out.append(entry)
    if skipped:                                  # the table says what it left out, on stderr
        names = ", ".join(p.name for p in skipped[:5]) + (", …" if len(skipped) > 5 else "")
        print(f"[ncmse] left out {len(skipped)} file(s) of {(cache or ResultsCache()).root} that are not readable "
              f"results: {names}", file=sys.stderr)
    return out


def runs_frame(cache: ResultsCache | None = None, profile: str | None = None) -> pd.DataFrame:
    """Every complete run in ``cache`` (default: the default cache) as :func:`runs_table`, or only those of
    ``profile``; stale entries (other code) are included, marked ``stale_code``."""
    return runs_table(_cached(cache, profile))


def history_frame(cache: ResultsCache | None = None, profile: str | None = None) -> pd.DataFrame:
    """The histories of :func:`runs_frame`'s runs as :func:`history_table`."""
    return history_table(_cached(cache, profile))


def write_frame(frame: pd.DataFrame, path: Path | str, *, format: str | None = None) -> Path:
    """Write ``frame`` to ``path`` as ``format`` "csv" (without the index) or "parquet" (pyarrow);
    default: Parquet if the name ends in ``.parquet``, else CSV.  The folder must exist."""
    path = Path(path).expanduser()
    format = format or ("parquet" if path.suffix == ".parquet" else "csv")
    if format not in ("csv", "parquet"):
        raise ValueError(f"unknown table format {format!r}; expected 'csv' or 'parquet'")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder")
    if format == "parquet":
        try:
            import pyarrow  # noqa: F401  (a dependency of ncmse; a bare environment may lack it)
        except ImportError:
            raise ValueError("writing Parquet needs pyarrow (pip install pyarrow), or write CSV") from None
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def download_link(frame: pd.DataFrame, name: str, text: str | None = None) -> str:
    """Write ``frame`` as the CSV file ``name`` for a chapter to offer, and return the Markdown of a
    ``{download}`` link to it.

    The file goes to ``$NCMSE_DOWNLOADS`` — set by :func:`ncmse.runner.run` to a folder of the
    executing chapter whose files the build puts next to the executed notebook — or, outside the
    runner, to the current folder.  Sphinx then copies it into the site's ``_downloads``.
    """
    if Path(name).name != name or not name.endswith(".csv"):
        raise ValueError(f"a download is a bare file name ending in .csv, got {name!r}")
    folder = Path(os.environ.get("NCMSE_DOWNLOADS") or ".")
    folder.mkdir(parents=True, exist_ok=True)
    write_frame(frame, folder / name)
    n = len(frame)
    label = text or f"{name} ({n} row{'s' if n != 1 else ''}, {len(frame.columns)} columns)"
    return f"{{download}}`{label} <{name}>`"

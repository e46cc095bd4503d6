"""Results trained elsewhere (on a GPU, on a cluster) and committed to the repository, so that every
build of the book can show them (chapter "CIFAR-10").

The results cache (``data/results``, ``ncmse.experiments``) is a private working store: ignored by
git, keyed by hashes and valid only for the code that wrote it.  An *archive* is its opposite: a
tracked folder, by default ``data/trained/<study>/``, holding one JSON file per run, named by the
run's key, each a complete result of ``ncmse.train.train`` whose provenance says where, when and by
which commit it was trained (device, torch, git revision, finish time, wall seconds).  Archived
results are shown for what they are — results of the commit they name — and are never fed back into
the cache, so a code change never makes them "stale"; they are the record.

:func:`export` writes the runs of a study into the archive (``python -m ncmse study … --export``);
:func:`load` reads them back, checking each file; :func:`provenance_table` and
:func:`accuracy_table` are the chapter's Markdown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from .config import STUDIES, RunConfig
from .experiments import ROOT
from .files import atomic_write_text

__all__ = ["ARCHIVE", "ArchiveError", "folder", "export", "load", "provenance_table", "accuracy_table",
           "comparison", "geometry_table"]

# $NCMSE_ARCHIVE points a build at another archive (e.g. one being assembled from a cluster's runs)
ARCHIVE = Path(os.environ["NCMSE_ARCHIVE"]) if os.environ.get("NCMSE_ARCHIVE") else ROOT / "data" / "trained"
PROVENANCE = ("device", "torch", "git", "finished", "wall_seconds", "machine")


class ArchiveError(ValueError):
    """An archived file that is not a complete, well-formed result (one line naming the file)."""


def folder(study: str, root: Path | str | None = None) -> Path:
    """The archive folder of ``study`` (one of ``ncmse.config.STUDIES``) under ``root`` (default
    :data:`ARCHIVE`)."""
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; expected one of {', '.join(STUDIES)}")
    return Path(root if root is not None else ARCHIVE) / study


def export(results: Iterable[dict], study: str, root: Path | str | None = None) -> list[Path]:
    """Write every complete result of ``results`` to the archive of ``study``, one
    ``<key>.json`` each (atomically; an existing file of the same run is replaced), leaving out the
    ``cached`` flag of the sweep that returned it.  Returns the paths written."""
    out, seen = [], set()
    target = folder(study, root)
    for r in results:
        _check(r, "a result to export")
        key = RunConfig.from_dict(r["config"]).key()
        if key in seen:
            continue
        seen.add(key)
        path = target / f"{key}.json"
        atomic_write_text(path, json.dumps({k: v for k, v in r.items() if k != "cached"}, indent=1) + "\n")
        out.append(path)
    return out


def load(study: str, root: Path | str | None = None) -> list[dict]:
    """The archived results of ``study``, sorted by (loss, α, M, d, seed); [] when the folder is
    missing or empty.  A file that is not JSON, not a complete result, or not named by its run's key
    raises :class:`ArchiveError`: an archive is committed by hand, so a bad file is a mistake to fix,
    not to skip."""
    target = folder(study, root)
    if not target.is_dir():
        return []
    results = []
    for path in sorted(target.glob("*.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArchiveError(f"{path}: not readable JSON ({exc})") from None
        _check(r, str(path))
        if RunConfig.from_dict(r["config"]).key() != path.stem:
            raise ArchiveError(f"{path}: its name is not the key of the configuration inside "
                               f"({RunConfig.from_dict(r['config']).key()})")
        results.append(r)
    return sorted(results, key=lambda r: (r["config"]["loss"], r["config"]["alpha"], r["config"]["M"],
                                          r["config"]["d"], r["config"]["seed"]))


def _check(r, where: str) -> None:
    if not isinstance(r, dict) or not r.get("complete") or "config" not in r:
        raise ArchiveError(f"{where}: not a complete training result")
    try:
        RunConfig.from_dict(r["config"])
    except (TypeError, ValueError) as exc:
        raise ArchiveError(f"{where}: its configuration is not valid ({exc})") from None
    missing = [k for k in PROVENANCE if k not in (r.get("provenance") or {})]
    if missing:
        raise ArchiveError(f"{where}: its provenance lacks {', '.join(missing)}")
    if not r.get("diverged") and not (r.get("train") and r.get("test")):
        raise ArchiveError(f"{where}: no final train/test metrics")


def provenance_table(results: list[dict]) -> str:
    """Where and when the archived runs were trained (Markdown): one row per (device, torch, commit),
    with the number of runs, the finish dates' range and the training hours."""
    from .plotting import markdown_table

    groups: dict[tuple, list[dict]] = {}
    for r in results:
        p = r["provenance"]
        groups.setdefault((p["machine"], p["device"], p["torch"], p["git"]), []).append(p)
    rows = []
    for (machine, device, torch_version, git), ps in groups.items():
        dates = sorted(p["finished"][:10] for p in ps)
        span = dates[0] if dates[0] == dates[-1] else f"{dates[0]} – {dates[-1]}"
        rows.append((machine, device, torch_version, git, len(ps), span, sum(p["wall_seconds"] for p in ps) / 3600))
    return markdown_table(rows, ["machine", "device", "torch", "commit", "runs", "trained", "hours"],
                          formats=[None, None, None, None, None, None, ".2f"])


def accuracy_table(results: list[dict]) -> str:
    """Seed-mean ± standard deviation of the test accuracy per loss and d of archived runs (Markdown),
    with the model, data and epochs of each row."""
    from .plotting import markdown_table
    from .study import pool_seeds

    config = {(r["config"]["loss"], r["config"]["alpha"], r["config"]["M"], r["config"]["d"]): r["config"]
              for r in results}
    rows = []
    for row in pool_seeds(results):
        v = row["variant"]
        c = config[(v.loss, v.alpha, v.M, row["d"])]
        acc = f"{row['test_mean']:.3f} ± {row['test_std']:.3f}" if row["n"] else "diverged"
        rows.append((row["label"], row["d"], c["model"], c["epochs"], c.get("precision", "fp32"),
                     acc, row["n"]))
    return markdown_table(rows, ["loss", "d", "model", "epochs", "precision", "test accuracy", "seeds"])


def comparison(results: list[dict], K: int = 10) -> list[dict]:
    """MSE against cross-entropy per d over the archived runs: ``ncmse.study.compare`` of their
    seed-pooled test accuracy (the clear-gap rule of the chapter "Deep networks")."""
    from .study import CE, MSE, compare, pool_seeds

    return compare(pool_seeds(results), MSE, CE, K=K)


def geometry_table(results: list[dict], d: int) -> str:
    """For the archived MSE and cross-entropy runs at feature dimension ``d``: per run, the classes that
    lose the argmax in the network and as the UFM predicts given the network's subspace
    (``ncmse.mean_geometry``), how many agree, and the test accuracy (Markdown)."""
    from .mean_geometry import GeometrySummary
    from .mean_geometry import geometry_table as table
    from .study import CE, MSE, Variant

    at_d = [r for r in results if r["config"]["d"] == d]
    if not at_d:
        raise ValueError(f"no archived run at d = {d}")
    return table({v: GeometrySummary.of([r for r in at_d if Variant.of(r["config"]) == v]) for v in (MSE, CE)},
                 at_d[0]["classes"])

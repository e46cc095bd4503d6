"""Results trained elsewhere (on a GPU, on a cluster) and committed to the repository, so that every
build of the book can show them (chapter "CIFAR-10").

The results cache (``data/results``, ``ncmse.cache``) is a private working store: ignored by
git, keyed by hashes and valid only for the code that wrote it.  An *archive* is its opposite: a
tracked folder, by default ``data/trained/<study>/``, holding one JSON file per run, named by the
run's key, each a complete result of ``ncmse.train.train`` whose provenance says where, when and by
which commit it was trained (device, torch, git revision, finish time, wall seconds).  Archived
results are shown for what they are — results of the commit they name — and are never fed back into
the cache, so a code change never makes them "stale"; they are the record.

:func:`export` writes the runs of a study into the archive (``python -m ncmse study … --export``,
which exports each run as soon as it finishes through :func:`exporter`, tuning runs included, and
first restores (:func:`restore`) the archived runs that this code would train identically, so that a long study
can be spread over sessions, days and machines); :func:`load` reads them back, checking each file;
:func:`provenance_table` and :func:`accuracy_table` are the chapter's Markdown.  :func:`study_results`
reads a whole study from the archive through the study machinery itself (``ncmse.study.run_study``
with the archive as a read-only cache and an executor that trains nothing), so that the chapter shows
archived runs with the same tables, rules and verdicts as runs it trains; :func:`stale_runs` names the
archived runs that today's training code would no longer reproduce.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from .config import RunConfig
from .files import atomic_write_text
from .paths import DATA
from .profiles import check_study

__all__ = ["ARCHIVE", "ArchiveError", "ArchiveIncomplete", "folder", "export", "exporter", "restore", "load",
           "study_results", "stale_runs", "progress", "progress_sentence", "provenance_table", "accuracy_table",
           "comparison", "geometry_table"]

#: the committed results' folder, ``data/trained``; ``$NCMSE_ARCHIVE`` points a build at another archive (e.g. one
#: being assembled from a cluster's runs)
ARCHIVE = Path(os.environ["NCMSE_ARCHIVE"]) if os.environ.get("NCMSE_ARCHIVE") else DATA / "trained"
PROVENANCE = ("device", "torch", "git", "finished", "wall_seconds", "machine")


class ArchiveError(ValueError):
    """An archived file that is not a complete, well-formed result (one line naming the file)."""


class ArchiveIncomplete(LookupError):
    """A study whose archive lacks some of its runs: ``missing`` (their ``RunConfig``s) and ``total``
    (how many the study has, after tuning as far as the archive allows)."""

    def __init__(self, study: str, profile: str, missing: list):
        self.missing = missing
        super().__init__(f"{len(missing)} run(s) of study {study!r} at profile {profile!r} are not in the archive "
                         f"yet; train them with: python -m ncmse study --study {study} --profile {profile} --export")


def folder(study: str, root: Path | str | None = None) -> Path:
    """The archive folder of ``study`` (one of ``ncmse.config.STUDIES``) under ``root`` (default
    :data:`ARCHIVE`)."""
    return Path(root if root is not None else ARCHIVE) / check_study(study)


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


def exporter(study: str, cache, root: Path | str | None = None):
    """A callback for ``ncmse.executors.sweep(on_done=...)``: writes the cached result of each finished
    run (a ``RunConfig``) to the archive of ``study`` at once, so that a long study loses nothing
    archived when it is stopped."""
    def on_done(config: RunConfig) -> None:
        entry, _ = cache.read(config)
        if entry is not None and entry.get("complete"):
            export([entry], study, root)
    return on_done


def restore(study: str, cache, *, data_root=None, root: Path | str | None = None) -> int:
    """Copy into ``cache`` (a ``ncmse.cache.ResultsCache``) every archived run of ``study`` that
    is valid for this code and data (``ncmse.fingerprint.validity``) and missing there; returns how
    many.  A study run afterwards then trains only what the archive lacks, wherever the archived runs
    were trained."""
    from .fingerprint import validity

    valid, n = {}, 0
    for r in load(study, root):
        config = RunConfig.from_dict(r["config"])
        if config.dataset not in valid:
            valid[config.dataset] = validity(config.dataset, data_root)
        if r.get("validity") != valid[config.dataset] or cache.lookup(config, valid[config.dataset])[0] is not None:
            continue
        cache.put(config, {k: v for k, v in r.items() if k != "cached"})
        n += 1
    return n


def load(study: str, root: Path | str | None = None, *, device: str | None = None) -> list[dict]:
    """The archived results of ``study``, sorted by (loss, α, M, d, seed); [] when the folder is
    missing or empty.  ``device``: only the runs trained on that device type (``"cuda"``: the GPU
    runs, ``"cpu"``: the long study's), by their provenance.  A file that is not JSON, not a complete
    result, or not named by its run's key raises :class:`ArchiveError`: an archive is committed by
    hand, so a bad file is a mistake to fix, not to skip."""
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
        if device is None or str(r.get("provenance", {}).get("device", "")).split(":")[0] == device:
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
    """Where and when the archived runs were trained (Markdown): one row per (machine, capability,
    device, precision, torch, commit), with the number of runs, the finish dates' range and the training
    hours (one worker's time, summed over runs)."""
    from .plotting import markdown_table

    groups: dict[tuple, list[dict]] = {}
    for r in results:
        p = r["provenance"]
        key = (p["machine"], p.get("capability", "not recorded"), p["device"], r["config"].get("precision", "fp32"),
               p["torch"], p["git"])
        groups.setdefault(key, []).append(p)
    rows = []
    for (machine, capability, device, precision, torch_version, git), ps in groups.items():
        dates = sorted(p["finished"][:10] for p in ps)
        span = dates[0] if dates[0] == dates[-1] else f"{dates[0]} – {dates[-1]}"
        rows.append((machine, capability, device, precision, torch_version, git, len(ps), span,
                     sum(p["wall_seconds"] for p in ps) / 3600))
    return markdown_table(rows, ["machine", "capability", "device", "precision", "torch", "commit", "runs", "trained",
                                 "hours"], formats=[None] * 8 + [".2f"])


def accuracy_table(results: list[dict]) -> str:
    """Seed-mean ± standard deviation of the test accuracy per loss and d of archived runs (Markdown),
    with the model, data and epochs of each row."""
    from .plotting import markdown_table
    from .stats import pool_seeds

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
    """MSE against cross-entropy per d over the archived runs: ``ncmse.stats.compare`` of their
    seed-pooled test accuracy (the clear-gap rule of the chapter "Deep networks")."""
    from .stats import compare, pool_seeds
    from .variants import CE, MSE

    return compare(pool_seeds(results), MSE, CE, K=K)


def geometry_table(results: list[dict], d: int) -> str:
    """For the archived MSE and cross-entropy runs at feature dimension ``d``: per run, the classes that
    lose the argmax in the network and as the UFM predicts given the network's subspace
    (``ncmse.mean_geometry``), how many agree, and the test accuracy (Markdown)."""
    from .mean_geometry import GeometrySummary
    from .mean_geometry import geometry_table as table
    from .variants import CE, MSE, Variant

    at_d = [r for r in results if r["config"]["d"] == d]
    if not at_d:
        raise ValueError(f"no archived run at d = {d}")
    return table({v: GeometrySummary.of([r for r in at_d if Variant.of(r["config"]) == v]) for v in (MSE, CE)},
                 at_d[0]["classes"])


class _ArchiveCache:
    """The archive folder of one study seen as a read-only results cache (``ncmse.cache.ResultsCache``'s
    interface as ``ncmse.executors.sweep`` uses it): every archived run is served whatever code trained
    it (an archive is a record, not a cache; :func:`stale_runs` says which runs today's code would
    not reproduce)."""

    def __init__(self, root: Path):
        from .cache import ResultsCache

        self._files = ResultsCache(root)
        self.root = root

    def read(self, config: RunConfig, *, fix: bool = False):
        return self._files.read(config)

    def lookup(self, config: RunConfig, current: dict, *, fix: bool = False):
        return self._files.read(config)


def study_results(study: str, profile: str, *, root: Path | str | None = None, data_root=None, **shrink):
    """``ncmse.study.run_study(profile, study=study)`` with every run read from the archive and none
    trained: the :class:`ncmse.study.StudyResults` of the archived runs, whose ``summary()`` is the
    chapter's tables and verdicts.  Raises :class:`ArchiveIncomplete` where the archive lacks runs
    (after the tuning runs: which test runs the study needs depends on the rates they chose).
    ``shrink``: ``grid``, ``overrides`` and base changes of ``run_study``, for checks."""
    from .executors import Sequential
    from .study import run_study

    class _NotArchived(Sequential):
        name = "archive"

        def train(self, configs, **kw):
            raise ArchiveIncomplete(study, profile, list(configs))

    from .results import study_and_profile

    # the precision the archived runs were trained in ("auto" resolved on the machine that trained them,
    # not on this one): the most common among this profile's runs
    ours = [r["config"]["precision"] for r in load(study, root) if study_and_profile(r["config"]) == (study, profile)]
    changes = {"precision": max(set(ours), key=ours.count)} if ours and "precision" not in shrink else {}
    cache = _ArchiveCache(folder(study, root))
    return run_study(profile, study=study, cache=cache, executor=_NotArchived(), progress=False, data_root=data_root,
                     device="cpu", **changes, **shrink)


def stale_runs(results: list[dict]) -> list[dict]:
    """The results among ``results`` whose training code differs from today's
    (``ncmse.fingerprint.code_fingerprint``): today's code would train them again, and might not
    reproduce them exactly."""
    from .fingerprint import code_fingerprint

    now = code_fingerprint()
    return [r for r in results if (r.get("validity") or {}).get("code") != now]


def progress(study: str, profile: str, root: Path | str | None = None) -> tuple[list[dict], int]:
    """The archived runs of ``study`` that belong to ``profile`` (``ncmse.results.study_and_profile``),
    and how many the whole study leaves (``ncmse.study.plan(...).trainings``): a long study committed
    run by run says how far it is."""
    from .results import study_and_profile
    from .study import plan

    ours = [r for r in load(study, root) if study_and_profile(r["config"]) == (study, profile)]
    return ours, plan(profile, study).trainings


def progress_sentence(study: str, profile: str, root: Path | str | None = None) -> str:
    """One Markdown paragraph for the page: how many runs of the study at ``profile`` are in the archive, on
    which machine and in how many hours, whether today's training code would still train them
    (:func:`stale_runs`), and the command that trains the rest."""
    runs, total = progress(study, profile, root)
    command = f"`python -m ncmse study --study {study} --profile {profile} --export`"
    if not runs:
        return (f"*No run of the `{profile}` profile is in the archive yet* ({total} to train): {command} trains "
                "them.")
    hours = sum(r["provenance"]["wall_seconds"] for r in runs) / 3600
    machines = sorted({f"{r['provenance']['machine']}, {r['provenance'].get('capability', 'capability not recorded')}"
                       for r in runs})
    text = (f"**{len(runs)} of the {total} runs** of the `{profile}` profile are in the archive, trained on "
            f"{'; '.join(machines)} in {hours:.1f} hours of training (one worker's time).")
    if len(runs) < total:
        text += f" The rest are still to train: {command} resumes from the archived runs."
    stale = stale_runs(runs)
    if stale:
        text += (f" **{len(stale)} of them were trained by other training code than this build's** (their code "
                 "fingerprint differs): they are the record of the commit that trained them, and this code "
                 "would train them again.")
    return text

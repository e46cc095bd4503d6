"""The results cache of deep-network runs, and one run through it.

A :class:`ncmse.config.RunConfig` names everything that changes a result; its key (a hash of the
canonical JSON) names the cache entry ``data/results/<key>.json``.  An entry is served only to the
code and data that produced it (:mod:`ncmse.fingerprint`), is written atomically and durably with its
provenance (git revision, torch version, device, threads, wall time), and is trained once however
many processes share the cache (a per-key lock, :meth:`ResultsCache.lock`).  A run in progress keeps
an atomic checkpoint in ``data/checkpoints/<key>.pt`` and resumes from it after an interruption; a
run whose loss stops being finite ends as *diverged* and is cached as such.  Training itself is
``ncmse.train``.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from . import paths
from . import train as train_module
from .config import RunConfig
from .files import atomic_write_text, quarantine
from .fingerprint import code_fingerprint, validity
from .variants import loss_label

__all__ = ["ResultsCache", "run", "divergence_text", "describe_run"]


class ResultsCache:
    """Results keyed by :meth:`ncmse.config.RunConfig.key` under ``root``, safe to share.  Default root:
    ``$NCMSE_CACHE/results`` where that variable is set, else ``<repo>/data/results``; checkpoints live
    beside it in ``<root>/../checkpoints``.

    * An entry ``<key>.json`` is used only for the configuration it names *and* the code and data that
      produced it (:func:`ncmse.fingerprint.validity`); an entry from other code is *stale*: it is not
      served, and the run is trained again (one line says so).
    * Writes are atomic and durable (:mod:`ncmse.files`); a torn or foreign entry is moved aside to
      the first free name of ``<key>.json.corrupt``, ``<key>.json.corrupt.1``, ``.2``, … with one
      warning line and retrained (:func:`ncmse.files.quarantine`: earlier evidence is never replaced;
      the higher the number, the later).
    * :meth:`lock` is a per-key inter-process lock (``<root>/.locks/<key>.lock``), so that several
      processes or cluster jobs sharing the cache train each configuration once: the others wait and
      then read its result.  It is an OS file lock (``fcntl``, which NFSv4, Lustre and GPFS honour
      across machines); on a shared file system without working locks set ``lock="soft"`` (or
      ``NCMSE_LOCK=soft``) for lock files that exist while held (a crashed holder leaves one behind:
      delete it).
    """

    REQUIRED = ("config", "complete", "history", "train", "test", "provenance", "validity", "diverged")

    def __init__(self, root: Path | str | None = None, *, lock: str | None = None):
        if root is None:              # $NCMSE_CACHE: a cache folder shared by several checkouts or jobs
            shared = os.environ.get("NCMSE_CACHE")
            root = Path(shared).expanduser() / "results" if shared else paths.DATA / "results"
        self.root = Path(root)
        self.lock_kind = lock or os.environ.get("NCMSE_LOCK", "file")
        if self.lock_kind not in ("file", "soft"):
            raise ValueError(f"unknown lock kind {self.lock_kind!r}; expected 'file' or 'soft'")

    def path(self, config: RunConfig) -> Path:
        return self.root / f"{config.key()}.json"

    def checkpoint_path(self, config: RunConfig) -> Path:
        """Where a run in progress keeps its checkpoint: one file for a schedule, shared by a run stopped
        early (``stop_epoch``) and the full run that resumes from it."""
        return self.root.parent / "checkpoints" / f"{config.full_schedule().key()}.pt"

    def lock_path(self, config: RunConfig) -> Path:
        """The per-key lock; a run stopped early shares its full schedule's, as it shares its checkpoint."""
        return self.root / ".locks" / f"{config.full_schedule().key()}.lock"

    def read(self, config: RunConfig, *, fix: bool = False) -> tuple[dict | None, str]:
        """The entry of ``config`` whatever code produced it, and why there is none: ``(entry, "")``,
        ``(None, "missing")`` or ``(None, "torn")``.  With ``fix`` a torn or foreign file is moved aside
        (do it only while holding :meth:`lock`: a writer may be about to replace it)."""
        p = self.path(config)
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            return None, "missing"
        problem = None
        try:
            entry = json.loads(raw.decode("utf-8"))          # bytes that are not UTF-8: a torn or foreign file
            problem = _entry_problem(entry, config)
        except (ValueError, UnicodeDecodeError) as exc:         # JSONDecodeError is a ValueError
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            return entry, ""
        if fix:
            quarantine(p, problem, then="the run is trained again")
        return None, "torn"

    def lookup(self, config: RunConfig, current: dict, *, fix: bool = False) -> tuple[dict | None, str]:
        """The entry of ``config`` if it is valid for ``current`` (:func:`ncmse.fingerprint.validity`),
        else ``(None, why)`` with why in "missing", "torn", "stale code", "stale data"."""
        entry, why = self.read(config, fix=fix)
        if entry is None:
            return None, why
        got = entry.get("validity") or {}
        if got.get("code") != current["code"]:
            return None, "stale code"
        if got.get("data") != current["data"]:
            return None, "stale data"
        return entry, ""

    def get(self, config: RunConfig, *, data_root=None) -> dict | None:
        """The valid entry of ``config`` for the code and data here, or None (missing, torn or stale)."""
        return self.lookup(config, validity(config.dataset, data_root))[0]

    def put(self, config: RunConfig, result: dict) -> Path:
        problem = _entry_problem(result, config)
        if problem is not None:
            raise ValueError(f"refusing to cache an incomplete result for {config.key()}: {problem}")
        return atomic_write_text(self.path(config), json.dumps(result, indent=1))

    @contextmanager
    def lock(self, config: RunConfig, *, announce: bool = True):
        """Hold the per-key lock of ``config`` (blocking); says once on stderr when it has to wait."""
        import filelock

        path = self.lock_path(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = (filelock.SoftFileLock if self.lock_kind == "soft" else filelock.FileLock)(str(path))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            if announce:
                print(f"[ncmse] waiting for another process that is training {config.key()} "
                      f"({config.dataset} {config.model} d={config.d} {config.loss} seed={config.seed}) …",
                      file=sys.stderr, flush=True)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def entries(self, skipped: list | None = None) -> list[tuple[Path, dict]]:
        """Every readable entry of the cache, sorted by name; torn or foreign files are skipped, not
        moved, and appended to ``skipped`` (a list, when given) so that a caller can name them."""
        out = []
        for p in sorted(self.root.glob("*.json")):
            try:
                entry = json.loads(p.read_text())
            except (OSError, ValueError, UnicodeDecodeError):
                entry = None
            if isinstance(entry, dict) and isinstance(entry.get("config"), dict):
                out.append((p, entry))
            elif skipped is not None:
                skipped.append(p)
        return out

    def audit(self, *, data_root=None) -> list[dict]:
        """One row per entry whose validity or provenance differs from this environment: key, run,
        ``stale`` (True where the entry would be retrained: other code or data) and ``differs`` (what
        differs: code, data, torch, device, threads).  The status page lists them."""
        env = train_module.environment()
        valid = {}
        rows = []
        for p, e in self.entries():
            c = e["config"]
            ds = c.get("dataset", "?")
            if ds not in valid:
                try:
                    valid[ds] = validity(ds, data_root)
                except (ValueError, OSError):
                    valid[ds] = {"code": code_fingerprint(), "data": None}
            got, prov = e.get("validity") or {}, e.get("provenance") or {}
            differs = [k for k in ("code", "data") if got.get(k) != valid[ds][k]]
            differs += [k for k in ("torch", "device", "threads") if prov.get(k) != env[k]]
            if differs:
                rows.append({"key": p.stem, "run": describe_run(c), "stale": bool({"code", "data"} & set(differs)),
                             "differs": differs, "finished": prov.get("finished", "?"),
                             **{k: prov.get(k) for k in ("torch", "device", "threads")}})
        return rows


def describe_run(c: dict) -> str:
    """One line naming a run by its configuration (a ``RunConfig``'s dict): data, model, d, loss, lr, seed."""
    try:
        loss = loss_label(c)
    except (KeyError, TypeError, ValueError):    # a foreign entry's configuration: name what is there
        loss = c.get("loss", "?")
    return f"{c.get('dataset')} {c.get('model')} d={c.get('d')} {loss} lr={c.get('lr')} seed={c.get('seed')}"


def _entry_problem(entry, config: RunConfig) -> str | None:
    """Why ``entry`` is not a complete result of ``config`` (None if it is)."""
    if not isinstance(entry, dict):
        return f"not a JSON object but {type(entry).__name__}"
    missing = [k for k in ResultsCache.REQUIRED if k not in entry]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        other = RunConfig.from_dict(entry["config"])
    except (TypeError, ValueError, AttributeError) as exc:
        return f"unreadable configuration ({exc})"
    if other != config:
        return f"holds another configuration ({other.key()})"
    if entry["complete"] is not True:
        return "an unfinished run"
    if entry["diverged"] is None:
        for split in ("train", "test"):
            if not isinstance(entry[split], dict) or "accuracy" not in entry[split]:
                return f"no {split} metrics"
    return None


def run(config: RunConfig, *, cache: ResultsCache | None = None, device=None, progress: bool = True,
        data_root=None, notes: list | None = None) -> dict:
    """The result of ``config``: from the cache when a valid entry is there (nothing is trained), else
    trained — resuming from its checkpoint if an earlier run was interrupted — and cached atomically.

    Holds the key's lock while training, so concurrent callers train it once.  A stale entry (other
    code or data) is retrained with one line on stderr, or, with ``notes`` (a list), a note appended
    there for the caller to summarize.  The result has ``"cached"`` True or False.  Many runs at once,
    on local workers or a cluster: ``ncmse.executors.sweep``.
    """
    cache = cache or ResultsCache()
    config = config.resolved(train_module.resolve_device(device))      # precision "auto" → bf16 or fp32 here
    current = validity(config.dataset, data_root)
    hit, why = cache.lookup(config, current)
    if hit is not None:
        return {**hit, "cached": True}
    with cache.lock(config, announce=progress):
        hit, why = cache.lookup(config, current, fix=True)     # another process may have finished it
        if hit is not None:
            return {**hit, "cached": True}
        if why.startswith("stale"):
            note = f"{cache.path(config).name} was trained by other {why.split()[1]}"
            if notes is None:
                print(f"[ncmse] {note}: training it again", file=sys.stderr, flush=True)
            else:
                notes.append(note)
        ckpt = cache.checkpoint_path(config)
        result = train_module.train(config, device=device, checkpoint=ckpt, progress=progress, data_root=data_root)
        cache.put(config, result)
        if config.stop_epoch is None:       # a run stopped early keeps it: its full schedule resumes there
            ckpt.unlink(missing_ok=True)
    if result["diverged"] is not None and progress:
        print(f"[ncmse] {describe_run(config.to_dict())}: diverged ({divergence_text(result)})", file=sys.stderr,
              flush=True)
    return {**result, "cached": False}


def divergence_text(result: dict) -> str:
    """'loss nan at epoch 1, batch 3' for a diverged result ('' for one that did not diverge)."""
    d = result.get("diverged")
    return "" if not d else f"loss {d['loss']} at epoch {d['epoch']}, batch {d['batch']}"

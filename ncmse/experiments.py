"""Deep-network experiments: a validated run configuration, the profiles, sweeps, and a results cache.

A :class:`RunConfig` names everything that changes a result; its :meth:`RunConfig.key` (a hash of the
canonical JSON) names the cache entry ``data/results/<key>.json``.  An entry is served only to the
code and data that produced it (:mod:`ncmse.fingerprint`), is written atomically and durably with its
provenance (git revision, torch version, device, threads, wall time), and is trained once however
many processes share the cache (a per-key lock, :meth:`ResultsCache.lock`).  A run in progress keeps
an atomic checkpoint in ``data/checkpoints/<key>.pt`` and resumes from it after an interruption; a
run whose loss stops being finite ends as *diverged* and is cached as such.  Training itself is
``ncmse.train``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checks import as_float, as_int
from .files import atomic_write_text, quarantine
from .fingerprint import code_fingerprint, validity
from .models import MODELS
from .profiles import check_profile

__all__ = ["RunConfig", "DATASETS", "profile_config", "d_grid", "ResultsCache", "sweep_configs", "run", "sweep",
           "summary_rows", "SUMMARY_COLUMNS", "divergence_text"]

DATASETS = ("mnist", "fashion_mnist", "cifar10")
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RunConfig:
    """One training run.  Validated on construction (clear ValueErrors)."""

    dataset: str = "fashion_mnist"
    model: str = "mlp"
    d: int = 16
    loss: str = "mse"                   # "mse", "rmse" (with alpha, M) or "ce"
    alpha: float = 1.0
    M: float = 1.0
    # "torch": (rescaled) MSE averaged over all N·K logits without the ½ — torch.nn.MSELoss and the
    # paper's code, (2/K)× the book's per-sample ½‖z − y‖², so that the paper's lr and weight decay mean
    # what they meant there; "sample": the book's convention of ncmse.losses.
    mse_convention: str = "torch"
    n_per_class: int | None = 1000      # balanced training subsample; None: the whole split
    test_per_class: int | None = None
    # Validation runs: evaluate on this many held-out *training* images a class (disjoint from the
    # training subsample) instead of the test split; the "test" entries of the result then hold them.
    holdout_per_class: int | None = None
    epochs: int = 15
    batch_size: int = 128
    optimizer: str = "sgd"              # "sgd" (momentum) or "adam"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step"              # "step" (× gamma every step_every epochs), "cosine" or "none"
    step_every: int = 40
    gamma: float = 0.1
    augment: bool = False               # random crop (padding 4) + horizontal flip, batched
    feature_relu: bool = True
    seed: int = 0
    nc_epochs: tuple[int, ...] = field(default=())   # epochs (1-based) at which NC is measured; the last always

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; expected one of {', '.join(DATASETS)}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; expected one of {', '.join(MODELS)}")
        if self.loss not in ("mse", "rmse", "ce"):
            raise ValueError(f"unknown loss {self.loss!r}; expected 'mse', 'rmse' or 'ce'")
        try:
            d = as_int("the feature dimension d", self.d, minimum=1)
        except ValueError:
            raise ValueError(f"the feature dimension d must be a positive integer, got {self.d!r}") from None
        ints = {"d": d, "seed": as_int("seed", self.seed, minimum=0)}
        for name in ("epochs", "batch_size", "step_every"):
            ints[name] = as_int(name, getattr(self, name), minimum=1)
        for name in ("n_per_class", "test_per_class", "holdout_per_class"):
            v = getattr(self, name)
            if v is not None:
                try:
                    ints[name] = as_int(name, v, minimum=1)
                except ValueError:
                    raise ValueError(f"{name} must be a positive integer or None, got {v!r}") from None
        floats = {"alpha": as_float("alpha", self.alpha, low=0, low_open=True),
                  "M": as_float("M", self.M, low=0, low_open=True),
                  "lr": as_float("lr", self.lr, low=0, low_open=True),
                  "momentum": as_float("momentum", self.momentum, low=0, high=1, high_open=True),
                  "weight_decay": as_float("weight_decay", self.weight_decay, low=0),
                  "gamma": as_float("gamma", self.gamma, low=0, high=1, low_open=True)}
        for name, v in (*ints.items(), *floats.items()):
            object.__setattr__(self, name, v)
        for name in ("augment", "feature_relu"):
            v = getattr(self, name)
            if not isinstance(v, (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {v!r}")
            object.__setattr__(self, name, bool(v))
        if self.loss != "rmse" and (self.alpha != 1.0 or self.M != 1.0):
            raise ValueError(f"alpha and M apply to loss='rmse' only (got loss={self.loss!r}, alpha={self.alpha:g}, "
                             f"M={self.M:g})")
        if self.holdout_per_class is not None and (self.n_per_class is None or self.test_per_class is not None):
            raise ValueError("holdout_per_class needs n_per_class set and test_per_class None (the held-out "
                             "images replace the test split)")
        if self.mse_convention not in ("torch", "sample"):
            raise ValueError(f"unknown mse_convention {self.mse_convention!r}; expected 'torch' or 'sample'")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected 'sgd' or 'adam'")
        if self.schedule not in ("step", "cosine", "none"):
            raise ValueError(f"unknown schedule {self.schedule!r}; expected 'step', 'cosine' or 'none'")
        try:
            epochs = tuple(sorted({as_int("an entry of nc_epochs", e) for e in self.nc_epochs}))
        except TypeError:
            raise ValueError(f"nc_epochs must be a sequence of epochs, got {self.nc_epochs!r}") from None
        object.__setattr__(self, "nc_epochs", epochs)
        if any(not 1 <= e <= self.epochs for e in self.nc_epochs):
            raise ValueError(f"nc_epochs must lie in [1, {self.epochs}] (epochs={self.epochs}), got {self.nc_epochs}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        d = dict(d)
        d["nc_epochs"] = tuple(d.get("nc_epochs", ()))
        return cls(**d)

    def key(self) -> str:
        """A stable name for the results of this configuration (16 hex digits of a SHA-256)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)


def d_grid(profile: str) -> tuple[int, ...]:
    """Feature dimensions of the d-sweep: dense around K−1 = 9 at ``cpu``; the paper's at ``paper``."""
    grids = {"smoke": (4, 9, 16), "cpu": (2, 4, 6, 8, 9, 10, 16, 64), "paper": (5, 8, 9, 10, 512)}
    return grids[check_profile(profile)]


def profile_config(profile: str, **changes) -> RunConfig:
    """The base configuration of a profile (DESIGN.md): ``paper`` is the paper's d-sweep setting —
    CIFAR-10, ResNet18, SGD momentum 0.9, lr 0.05, batch 128, weight decay 5e-4, 200 epochs, lr × 0.1
    every 40 epochs, crop + flip, seed 6; ``cpu`` is Fashion-MNIST with an MLP, 15 epochs on 1,000
    images a class; ``smoke`` a few hundred images and two epochs."""
    check_profile(profile)
    if profile == "paper":
        base = RunConfig(dataset="cifar10", model="resnet18", d=512, n_per_class=None, epochs=200, batch_size=128,
                         optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="step",
                         step_every=40, gamma=0.1, augment=True, seed=6,
                         nc_epochs=(1, 5) + tuple(range(10, 201, 10)))
    elif profile == "cpu":
        base = RunConfig(dataset="fashion_mnist", model="mlp", d=16, n_per_class=1000, test_per_class=500,
                         epochs=15, batch_size=128, lr=0.05, schedule="cosine", nc_epochs=(1, 2, 3, 5, 7, 10))
    else:
        base = RunConfig(dataset="fashion_mnist", model="mlp", d=9, n_per_class=40, test_per_class=20,
                         epochs=2, batch_size=64, lr=0.05, schedule="cosine", nc_epochs=(1,))
    return base.replace(**changes) if changes else base


def sweep_configs(base: RunConfig, *, ds=(), losses=(), seeds=(), alpha: float | None = None,
                  M: float | None = None, extra: dict | None = None) -> list[RunConfig]:
    """The product d × loss × seed around ``base`` (empty axes keep the base value).  ``alpha`` and ``M``
    set the rescaling of the ``rmse`` runs (the others are plain MSE or CE, α = M = 1); giving them
    without an ``rmse`` run is an error."""
    losses = tuple(losses) or (base.loss,)
    if (alpha is not None or M is not None) and "rmse" not in losses:
        raise ValueError("alpha and M apply to loss 'rmse' only; add rmse to the losses")
    out = []
    for d in ds or (base.d,):
        for loss in losses:
            if loss == "rmse":
                scale = {"alpha": base.alpha if alpha is None else alpha, "M": base.M if M is None else M}
            else:
                scale = {"alpha": 1.0, "M": 1.0}
            for seed in seeds or (base.seed,):
                out.append(base.replace(d=d, loss=loss, seed=seed, **scale, **(extra or {})))
    return out


class ResultsCache:
    """Results keyed by :meth:`RunConfig.key` under ``root``, safe to share.  Default root:
    ``$NCMSE_CACHE/results`` where that variable is set, else ``<repo>/data/results``; checkpoints live
    beside it in ``<root>/../checkpoints``.

    * An entry ``<key>.json`` is used only for the configuration it names *and* the code and data that
      produced it (:func:`ncmse.fingerprint.validity`); an entry from other code is *stale*: it is not
      served, and the run is trained again (one line says so).
    * Writes are atomic and durable (:mod:`ncmse.files`); a torn or foreign entry is moved aside to
      ``<key>.json.corrupt`` with one warning line and retrained.
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
            root = Path(shared).expanduser() / "results" if shared else ROOT / "data" / "results"
        self.root = Path(root)
        self.lock_kind = lock or os.environ.get("NCMSE_LOCK", "file")
        if self.lock_kind not in ("file", "soft"):
            raise ValueError(f"unknown lock kind {self.lock_kind!r}; expected 'file' or 'soft'")

    def path(self, config: RunConfig) -> Path:
        return self.root / f"{config.key()}.json"

    def checkpoint_path(self, config: RunConfig) -> Path:
        return self.root.parent / "checkpoints" / f"{config.key()}.pt"

    def lock_path(self, config: RunConfig) -> Path:
        return self.root / ".locks" / f"{config.key()}.lock"

    def read(self, config: RunConfig, *, fix: bool = False) -> tuple[dict | None, str]:
        """The entry of ``config`` whatever code produced it, and why there is none: ``(entry, "")``,
        ``(None, "missing")`` or ``(None, "torn")``.  With ``fix`` a torn or foreign file is moved aside
        (do it only while holding :meth:`lock`: a writer may be about to replace it)."""
        p = self.path(config)
        try:
            text = p.read_text()
        except FileNotFoundError:
            return None, "missing"
        problem = None
        try:
            entry = json.loads(text)
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

    def entries(self) -> list[tuple[Path, dict]]:
        """Every readable entry of the cache (torn files are skipped, not moved), sorted by name."""
        out = []
        for p in sorted(self.root.glob("*.json")):
            try:
                entry = json.loads(p.read_text())
            except (OSError, ValueError, UnicodeDecodeError):
                continue
            if isinstance(entry, dict) and isinstance(entry.get("config"), dict):
                out.append((p, entry))
        return out

    def audit(self, *, data_root=None) -> list[dict]:
        """One row per entry whose validity or provenance differs from this environment: key, run,
        ``stale`` (True where the entry would be retrained: other code or data) and ``differs`` (what
        differs: code, data, torch, device, threads).  The status page lists them."""
        from .train import environment

        env = environment()
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
                rows.append({"key": p.stem, "run": _describe(c), "stale": bool({"code", "data"} & set(differs)),
                             "differs": differs, "finished": prov.get("finished", "?"),
                             **{k: prov.get(k) for k in ("torch", "device", "threads")}})
        return rows


def _describe(c: dict) -> str:
    loss = c.get("loss", "?")
    if loss == "rmse":
        loss = f"rmse(α={c.get('alpha', 1):g},M={c.get('M', 1):g})"
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
    there for the caller to summarize.  The result has ``"cached"`` True or False.
    """
    cache = cache or ResultsCache()
    current = validity(config.dataset, data_root)
    hit, why = cache.lookup(config, current)
    if hit is not None:
        return {**hit, "cached": True}
    from . import train as train_module

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
        ckpt.unlink(missing_ok=True)
    if result["diverged"] is not None and progress:
        print(f"[ncmse] {_describe(config.to_dict())}: diverged ({divergence_text(result)})", file=sys.stderr,
              flush=True)
    return {**result, "cached": False}


def divergence_text(result: dict) -> str:
    """'loss nan at epoch 1, batch 3' for a diverged result ('' for one that did not diverge)."""
    d = result.get("diverged")
    return "" if not d else f"loss {d['loss']} at epoch {d['epoch']}, batch {d['batch']}"


def sweep(configs: list[RunConfig], *, cache: ResultsCache | None = None, device=None, progress: bool = True,
          data_root=None) -> list[dict]:
    """Run every configuration (cached ones cost nothing); a progress bar over the sweep, and one line
    at the end counting stale entries that were retrained."""
    from tqdm.std import tqdm

    cache = cache or ResultsCache()
    out, notes = [], []
    bar = tqdm(configs, desc="sweep", disable=not progress)
    for config in bar:
        bar.set_postfix(d=config.d, loss=config.loss, seed=config.seed, refresh=False)
        out.append(run(config, cache=cache, device=device, progress=progress, data_root=data_root, notes=notes))
    bar.close()
    if notes:
        kinds = sorted({n.rsplit(" ", 1)[1] for n in notes})
        print(f"[ncmse] {len(notes)} cached result(s) were trained by other {' or '.join(kinds)} and were trained "
              f"again (e.g. {notes[0].split()[0]})", file=sys.stderr, flush=True)
    return out


SUMMARY_COLUMNS = ("dataset", "model", "d", "loss", "seed", "train acc", "test acc", "NC1", "live units",
                   "seconds", "cached")


def summary_rows(results: list[dict]) -> list[tuple]:
    """One row per result for a table (:data:`SUMMARY_COLUMNS`); a diverged run reads "diverged" in its
    accuracy columns."""
    rows = []
    for r in results:
        c = r["config"]
        loss = c["loss"] if c["loss"] != "rmse" else f"rmse(α={c['alpha']:g},M={c['M']:g})"
        if r.get("diverged"):
            metrics = ("diverged", "diverged", "—", "—")
        else:
            metrics = (f"{r['train']['accuracy']:.4f}", f"{r['test']['accuracy']:.4f}", f"{r['train']['NC1']:.3g}",
                       r["train"]["live_units"])
        rows.append((c["dataset"], c["model"], c["d"], loss, c["seed"], *metrics,
                     f"{r['provenance']['wall_seconds']:.1f}", r.get("cached", False)))
    return rows

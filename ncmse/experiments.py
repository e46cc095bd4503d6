"""Deep-network experiments: a validated run configuration, the profiles, sweeps, and a results cache.

A :class:`RunConfig` names everything that changes a result; its :meth:`RunConfig.key` (a hash of the
canonical JSON) names the cache entry ``data/results/<key>.json``, written atomically with provenance
(code version, torch version, device, wall time).  A run in progress keeps an atomic checkpoint in
``data/checkpoints/<key>.pt`` and resumes from it after an interruption.  Training itself is
``ncmse.train``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .losses import loss_module
from .models import MODELS
from .profiles import check_profile

__all__ = ["RunConfig", "DATASETS", "profile_config", "d_grid", "ResultsCache", "sweep_configs", "run", "sweep",
           "summary_rows", "SUMMARY_COLUMNS"]

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
        if isinstance(self.d, bool) or not isinstance(self.d, int) or self.d < 1:
            raise ValueError(f"the feature dimension d must be a positive integer, got {self.d!r}")
        loss_module(self.loss, self.alpha, self.M)                      # validates loss, alpha, M
        if self.loss != "rmse" and (self.alpha != 1.0 or self.M != 1.0):
            raise ValueError("alpha and M apply to loss='rmse' only")
        for name in ("epochs", "batch_size", "step_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("n_per_class", "test_per_class", "holdout_per_class"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
        if self.holdout_per_class is not None and (self.n_per_class is None or self.test_per_class is not None):
            raise ValueError("holdout_per_class needs n_per_class set and test_per_class None (the held-out "
                             "images replace the test split)")
        if self.mse_convention not in ("torch", "sample"):
            raise ValueError(f"unknown mse_convention {self.mse_convention!r}; expected 'torch' or 'sample'")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected 'sgd' or 'adam'")
        if self.schedule not in ("step", "cosine", "none"):
            raise ValueError(f"unknown schedule {self.schedule!r}; expected 'step', 'cosine' or 'none'")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1 or not 0 < self.gamma <= 1:
            raise ValueError("need lr > 0, weight_decay ≥ 0, 0 ≤ momentum < 1 and 0 < gamma ≤ 1")
        object.__setattr__(self, "nc_epochs", tuple(sorted(set(int(e) for e in self.nc_epochs))))
        if any(not 1 <= e <= self.epochs for e in self.nc_epochs):
            raise ValueError(f"nc_epochs must lie in [1, {self.epochs}], got {self.nc_epochs}")

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


def sweep_configs(base: RunConfig, *, ds=(), losses=(), seeds=(), extra: dict | None = None) -> list[RunConfig]:
    """The product d × loss × seed around ``base`` (empty axes keep the base value)."""
    out = []
    for d in ds or (base.d,):
        for loss in losses or (base.loss,):
            for seed in seeds or (base.seed,):
                out.append(base.replace(d=d, loss=loss, seed=seed, **(extra or {})))
    return out


class ResultsCache:
    """Results keyed by :meth:`RunConfig.key` under ``root`` (default ``data/results``), atomic JSON."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else ROOT / "data" / "results"

    def path(self, config: RunConfig) -> Path:
        return self.root / f"{config.key()}.json"

    def checkpoint_path(self, config: RunConfig) -> Path:
        return self.root.parent / "checkpoints" / f"{config.key()}.pt"

    def get(self, config: RunConfig) -> dict | None:
        p = self.path(config)
        if not p.exists():
            return None
        result = json.loads(p.read_text())
        if RunConfig.from_dict(result["config"]) != config:
            raise ValueError(f"cache entry {p} holds another configuration (hash collision?)")
        return result

    def put(self, config: RunConfig, result: dict) -> Path:
        p = self.path(config)
        atomic_write_text(p, json.dumps(result, indent=1))
        return p


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run(config: RunConfig, *, cache: ResultsCache | None = None, device=None, progress: bool = True,
        data_root=None) -> dict:
    """The result of ``config``: from the cache when it is there (nothing is trained), else trained —
    resuming from its checkpoint if an earlier run was interrupted — and cached atomically."""
    cache = cache or ResultsCache()
    hit = cache.get(config)
    if hit is not None:
        return {**hit, "cached": True}
    from .train import train

    ckpt = cache.checkpoint_path(config)
    result = train(config, device=device, checkpoint=ckpt, progress=progress, data_root=data_root)
    cache.put(config, result)
    if ckpt.exists():
        ckpt.unlink()
    return {**result, "cached": False}


def sweep(configs: list[RunConfig], *, cache: ResultsCache | None = None, device=None, progress: bool = True,
          data_root=None) -> list[dict]:
    """Run every configuration (cached ones cost nothing); a progress bar over the sweep."""
    from tqdm.std import tqdm

    cache = cache or ResultsCache()
    out = []
    bar = tqdm(configs, desc="sweep", disable=not progress)
    for config in bar:
        bar.set_postfix(d=config.d, loss=config.loss, seed=config.seed, refresh=False)
        out.append(run(config, cache=cache, device=device, progress=progress, data_root=data_root))
    return out


SUMMARY_COLUMNS = ("dataset", "model", "d", "loss", "seed", "train acc", "test acc", "NC1", "live units",
                   "seconds", "cached")


def summary_rows(results: list[dict]) -> list[tuple]:
    """One row per result for a table (:data:`SUMMARY_COLUMNS`)."""
    rows = []
    for r in results:
        c = r["config"]
        loss = c["loss"] if c["loss"] != "rmse" else f"rmse(α={c['alpha']:g},M={c['M']:g})"
        rows.append((c["dataset"], c["model"], c["d"], loss, c["seed"], r["train"]["accuracy"],
                     r["test"]["accuracy"], r["train"]["NC1"], r["train"]["live_units"],
                     r["provenance"]["wall_seconds"], r.get("cached", False)))
    return rows

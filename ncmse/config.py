"""The configuration of one deep-network run: :class:`RunConfig`.

Everything that changes a result is a field of :class:`RunConfig`, validated on construction (one-line
``ValueError``s; numpy scalars are accepted and stored as Python numbers), and its :meth:`RunConfig.key`
names the result in the cache (``ncmse.cache``).  Training (``ncmse.train``) and the sweeps
(``ncmse.cache``) both import this module; it imports neither.  This module is part of the
training code's fingerprint (``ncmse.fingerprint``); how big each study is — its base run, grids,
seeds — is not, and lives in ``ncmse.profiles``, so that resizing a chapter never marks a cached run
stale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from .checks import as_float, as_int
from .hardware import PRECISION_REQUESTS, resolve_precision
from .models import MODELS

__all__ = ["DATASETS", "RunConfig"]

DATASETS = ("mnist", "fashion_mnist", "cifar10")


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
    # "fp32", or "bf16": the training steps' forward pass under bfloat16 autocast (weights, gradients,
    # the optimizer and every evaluation stay float32); see ncmse.train.  "auto" is a request, not a
    # precision: bf16 where the device runs it natively, else fp32 (ncmse.hardware); :meth:`resolved`
    # turns it into one before a run is keyed, cached or trained.
    precision: str = "fp32"
    seed: int = 0
    nc_epochs: tuple[int, ...] = field(default=())   # epochs (1-based) at which NC is measured; the last always
    # Stop after this epoch of the `epochs`-long schedule (None: train it all): the first rung of a
    # successive halving (ncmse.study.tune_lr).  Such a run shares its checkpoint with the full run
    # (:meth:`full_schedule`), which then resumes where it stopped.  Left out of the dict when None, so
    # that the keys of every other run stay as they were.
    stop_epoch: int | None = None

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
        if self.precision not in PRECISION_REQUESTS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISION_REQUESTS)}")
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
        if self.stop_epoch is not None:
            stop = as_int("stop_epoch", self.stop_epoch, minimum=1)
            if stop >= self.epochs:
                raise ValueError(f"stop_epoch must lie below epochs={self.epochs} (None trains them all), got {stop}")
            object.__setattr__(self, "stop_epoch", stop)

    @property
    def last_epoch(self) -> int:
        """The epoch this run ends after: ``stop_epoch``, else ``epochs``."""
        return self.stop_epoch or self.epochs

    def full_schedule(self) -> RunConfig:
        """This run trained to the end of its schedule (``stop_epoch`` None): the configuration whose
        checkpoint a stopped run writes and resumes."""
        return self if self.stop_epoch is None else self.replace(stop_epoch=None)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["stop_epoch"] is None:
            del d["stop_epoch"]
        return d

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

    def resolved(self, device=None, *, warn: bool = True) -> RunConfig:
        """This configuration with its precision decided for ``device`` (None: CUDA if available, else
        the CPU): ``"auto"`` becomes ``"bf16"`` or ``"fp32"`` by :func:`ncmse.hardware.resolve_precision`,
        which also warns once where an explicit ``"bf16"`` would be emulated."""
        import torch

        device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        precision = resolve_precision(self.precision, device, warn=warn)
        return self if precision == self.precision else self.replace(precision=precision)

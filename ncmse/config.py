"""The configuration of deep-network runs, in one place: :class:`RunConfig` (one run), the base run of
each profile (:func:`profile_config`), its feature-dimension grid (:func:`d_grid`) and the sizes of the
studies (:func:`study_settings`) of the chapters "Deep networks" (``deep``) and "CIFAR-10" (``cifar10``).

Everything that changes a result is a field of :class:`RunConfig`, validated on construction (one-line
``ValueError``s; numpy scalars are accepted and stored as Python numbers), and its :meth:`RunConfig.key`
names the result in the cache (``ncmse.experiments``).  Training (``ncmse.train``) and the sweeps
(``ncmse.experiments``) both import this module; it imports neither.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from .checks import as_float, as_int
from .models import MODELS
from .profiles import GPU_PROFILE, PRECISIONS, STUDIES, check_profile

__all__ = ["DATASETS", "PRECISIONS", "RunConfig", "STUDIES", "d_grid", "profile_config", "study_settings"]

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
    # the optimizer and every evaluation stay float32); see ncmse.train
    precision: str = "fp32"
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
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
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


def _check_study(study: str, profile: str | None = None) -> str:
    """``study`` if known; with ``profile``, also check that the study has it (the ``gpu`` profile
    belongs to the study ``cifar10`` alone)."""
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; expected one of {', '.join(STUDIES)}")
    if profile == GPU_PROFILE:
        if study != "cifar10":
            raise ValueError(f"the {GPU_PROFILE!r} profile belongs to the study 'cifar10' (--study cifar10), "
                             f"not to {study!r}")
    elif profile is not None:
        check_profile(profile)
    return study


def d_grid(profile: str, study: str = "deep") -> tuple[int, ...]:
    """Feature dimensions of a study's d-sweep.  ``deep`` (chapter "Deep networks"): dense around
    K−1 = 9 at ``cpu``, the paper's at ``paper``; ``cifar10`` (chapter "CIFAR-10"): one d below K−1
    and one above at ``smoke`` and ``cpu``, the paper's at ``paper``."""
    grids = {"deep": {"smoke": (4, 9, 16), "cpu": (2, 4, 6, 8, 9, 10, 16, 64), "paper": (5, 8, 9, 10, 512)},
             "cifar10": {"smoke": (4, 16), "cpu": (4, 16), "paper": (5, 8, 9, 10, 512), "gpu": (5, 8, 9, 10, 512)}}
    return grids[_check_study(study, profile)][profile]


def profile_config(profile: str, study: str = "deep", **changes) -> RunConfig:
    """The base configuration of a study at a profile.

    ``paper`` (both studies) is the paper's d-sweep setting — CIFAR-10, ResNet18, SGD momentum 0.9,
    lr 0.05, batch 128, weight decay 5e-4, 200 epochs, lr × 0.1 every 40 epochs, crop + flip, seed 6,
    fp32.  Study ``deep`` at ``cpu`` is Fashion-MNIST with an MLP, 15 epochs on 1,000 images a class;
    study ``cifar10`` at ``cpu`` is CIFAR-10 with the small CNN, 10 epochs on 500 images a class in
    bf16 autocast (``benchmarks/precision_check.py`` compared it with fp32 side by side); ``smoke`` is a
    few hundred images and two epochs.  ``gpu`` (study ``cifar10`` only) is the paper's network and
    data — ResNet18, all 50,000 images, crop + flip, lr 0.05 — for 15 epochs on a cosine schedule in bf16
    autocast: a sweep of the paper's d's sized for one GPU in minutes (``benchmarks/gpu_throughput.py``
    measures what it costs), whose runs reach the book through ``ncmse.archive``."""
    _check_study(study, profile)
    if profile == GPU_PROFILE:
        base = RunConfig(dataset="cifar10", model="resnet18", d=512, n_per_class=None, epochs=15, batch_size=128,
                         optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine",
                         augment=True, precision="bf16", seed=0, nc_epochs=(1, 5, 10))
    elif profile == "paper":
        base = RunConfig(dataset="cifar10", model="resnet18", d=512, n_per_class=None, epochs=200, batch_size=128,
                         optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="step",
                         step_every=40, gamma=0.1, augment=True, seed=6,
                         nc_epochs=(1, 5) + tuple(range(10, 201, 10)))
    elif study == "cifar10":
        # cpu: 10 epochs and no NC curve (the chapter draws none): the chapter's 24 runs fit ~5 min on 2 cores
        sizes = (dict(n_per_class=500, test_per_class=500, epochs=10, batch_size=128, nc_epochs=())
                 if profile == "cpu" else dict(n_per_class=20, test_per_class=20, epochs=2, batch_size=64,
                                               nc_epochs=(1,)))
        base = RunConfig(dataset="cifar10", model="cnn", d=16, lr=0.05, schedule="cosine", precision="bf16",
                         **sizes)
    elif profile == "cpu":
        base = RunConfig(dataset="fashion_mnist", model="mlp", d=16, n_per_class=1000, test_per_class=500,
                         epochs=15, batch_size=128, lr=0.05, schedule="cosine", nc_epochs=(1, 2, 3, 5, 7, 10))
    else:
        base = RunConfig(dataset="fashion_mnist", model="mlp", d=9, n_per_class=40, test_per_class=20,
                         epochs=2, batch_size=64, lr=0.05, schedule="cosine", nc_epochs=(1,))
    return base.replace(**changes) if changes else base


# The study of the chapter "Deep networks" at each profile; the base run is profile_config, the grid
# d_grid.  seeds: of every test run; lrs: candidate learning rates, tuned on holdout_per_class held-out
# training images a class at the feature dimensions tune_ds (a single lr: no tuning, the paper's);
# alphas, Ms: the paper's rescaled-MSE sweeps, trained at rescaled_ds; sweep_rescaled: the (α, M)
# carried through the d-sweep (None: chosen on held-out data); nc_ds: the d's whose NC curves are drawn;
# geometry_d: the d < K−1 whose class means are compared with the UFM; linear_seeds: of the runs
# without the feature ReLU.
_STUDY = {
    "smoke": dict(seeds=(0, 1), lrs=(0.03, 0.1), tune_ds=(4, 16), holdout_per_class=20, alphas=(1, 5),
                  Ms=(1, 3), rescaled_ds=(4, 16), sweep_rescaled=None, nc_ds=(4, 16), geometry_d=4,
                  linear_seeds=(0,)),
    "cpu": dict(seeds=(0, 1, 2), lrs=(0.01, 0.03, 0.1, 0.3), tune_ds=(4, 16), holdout_per_class=500,
                alphas=(1, 5, 15, 20), Ms=(1, 3, 5, 7, 10), rescaled_ds=(4, 16), sweep_rescaled=None,
                nc_ds=(4, 16), geometry_d=4, linear_seeds=(0,)),
    "paper": dict(seeds=(6, 7, 8), lrs=(0.05,), tune_ds=(), holdout_per_class=None, alphas=(1, 5, 15, 20),
                  Ms=(1, 3, 5, 7, 10), rescaled_ds=(5, 512), sweep_rescaled=(1.0, 5.0), nc_ds=(5, 512),
                  geometry_d=5, linear_seeds=(6,)),
}


# The study of the chapter "CIFAR-10" (book/cifar10.md): the same keys.  It trains MSE, CE and the
# rescaled MSE that the chapter "Deep networks" chose on held-out data (sweep_rescaled "deep"), with no
# rescaled sweeps and no linear runs of its own; its learning rates are tuned on held-out CIFAR-10
# training images on each side of K−1.  At ``paper`` its runs are the deep study's own (the same keys).
_CIFAR10 = {
    "smoke": dict(seeds=(0, 1), lrs=(0.05, 0.2), tune_ds=(4, 16), holdout_per_class=10, alphas=(), Ms=(),
                  rescaled_ds=(), sweep_rescaled="deep", nc_ds=(4, 16), geometry_d=4, linear_seeds=()),
    "cpu": dict(seeds=(0, 1), lrs=(0.05, 0.2), tune_ds=(4, 16), holdout_per_class=200, alphas=(), Ms=(),
                rescaled_ds=(), sweep_rescaled="deep", nc_ds=(4, 16), geometry_d=4, linear_seeds=()),
    "paper": dict(_STUDY["paper"], alphas=(), Ms=(), rescaled_ds=(), sweep_rescaled="deep", linear_seeds=()),
    # one seed of each loss at the paper's d's, the paper's lr, the paper profile's rescaled MSE
    "gpu": dict(seeds=(0,), lrs=(0.05,), tune_ds=(), holdout_per_class=None, alphas=(), Ms=(), rescaled_ds=(),
                sweep_rescaled=_STUDY["paper"]["sweep_rescaled"], nc_ds=(5, 512), geometry_d=5, linear_seeds=()),
}


def study_settings(profile: str, study: str = "deep") -> MappingProxyType:
    """Read-only sizes of a study at ``profile`` (the comments above :data:`_STUDY` and :data:`_CIFAR10`)."""
    table = {"deep": _STUDY, "cifar10": _CIFAR10}[_check_study(study, profile)]
    return MappingProxyType(dict(table[profile]))

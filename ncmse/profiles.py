"""Profiles: one knob that sizes every chapter, and every size in one place (the book's page
"Architecture").  This module answers "how big is chapter X at profile P?".

* ``smoke``: CI's papermill run: tiny sizes, every code path, the same assertions; seconds a chapter.
* ``cpu``: the default book build on a laptop CPU: meaningful figures, the whole book in about 15 min
  on 2 cores (the status page has the measured times and the machines they came from).
* ``paper``: the paper's own settings where it has them (GPU hours for the deep-network chapters).

The chapters of the unconstrained features model read their sizes from :func:`settings`, never from
literals in the notebook; the deep-network studies read theirs from :func:`study_settings`,
:func:`profile_config` (the base run) and :func:`d_grid`.

Sizes are not part of the training code's fingerprint (``ncmse.fingerprint``): nothing that training
imports imports this module, so resizing a chapter changes which configurations run, never whether a
cached run of an unchanged configuration is valid (``tests/test_architecture.py`` holds this).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import RunConfig

__all__ = ["PROFILES", "DEFAULT_PROFILE", "STUDIES", "PRECISIONS", "GPU_PROFILE", "LONG_PROFILE", "STUDY_PROFILES",
           "study_profiles",
           "check_profile", "settings", "describe", "check_study", "d_grid", "profile_config", "study_settings"]

PROFILES = ("smoke", "cpu", "paper")
DEFAULT_PROFILE = "cpu"
# The studies of deep-network runs (study_settings below): "deep" for the chapter "Deep networks",
# "cifar10" for the chapter "CIFAR-10"; and the numerical precisions of training (RunConfig.precision).
# Here, not in ncmse.config, so that the command line can name them without importing torch.
STUDIES = ("deep", "cifar10")
PRECISIONS = ("auto", "fp32", "bf16")   # "auto": bf16 where the device runs it natively (ncmse.hardware)
# A profile of the study "cifar10" alone, not of the book: the paper's network and data on a schedule
# short enough for one GPU in minutes.  Its runs reach the book through the archive (ncmse.archive),
# which the chapter "CIFAR-10" shows at every profile.
GPU_PROFILE = "gpu"
# A profile of the study "cifar10" alone, for a CPU: the paper's claim in its regime (a dense d grid,
# trained to the terminal phase), hours on 2 cores, trained once and committed to the archive, which
# the chapter "CIFAR-10" shows at every profile.
LONG_PROFILE = "long"
STUDY_PROFILES = PROFILES + (GPU_PROFILE, LONG_PROFILE)
_CIFAR10_ONLY = (GPU_PROFILE, LONG_PROFILE)

_SETTINGS = {
    # Chapter "Global optimality for d ≥ K−1" (book/ufm_global_optimality.md).
    "ufm_global": {
        "smoke": dict(K=4, n=5, d=4, lambda_W=5e-3, lambda_H=5e-3, n_init=16,
                      phase_K=4, phase_n=5, phase_grid=6, phase_n_init=2, bias_K=4, bias_n=5, bias_grid=5),
        "cpu": dict(K=10, n=20, d=16, lambda_W=5e-4, lambda_H=5e-4, n_init=64,
                    phase_K=4, phase_n=10, phase_grid=14, phase_n_init=3, bias_K=6, bias_n=10, bias_grid=14),
        "paper": dict(K=10, n=100, d=32, lambda_W=5e-4, lambda_H=5e-4, n_init=64,
                      phase_K=10, phase_n=20, phase_grid=24, phase_n_init=4, bias_K=10, bias_n=20, bias_grid=24),
    },
    # Chapter "d < K−1: projections of a simplex ETF" (book/ufm_low_dim.md).
    "ufm_low_dim": {
        "smoke": dict(K=5, n=3, lambda_W=5e-4, lambda_H=5e-4, n_init=3, spread_d=2, spread_n_init=8,
                      mc_samples=500, mc_K=(4, 5, 6), ce_n_init=3, draw_n_init=2),
        "cpu": dict(K=10, n=10, lambda_W=5e-4, lambda_H=5e-4, n_init=8, spread_d=3, spread_n_init=64,
                    mc_samples=20000, mc_K=(3, 4, 5, 6, 8, 10, 12, 16), ce_n_init=16, draw_n_init=8),
        "paper": dict(K=10, n=50, lambda_W=5e-4, lambda_H=5e-4, n_init=32, spread_d=3, spread_n_init=256,
                      mc_samples=100000, mc_K=(3, 4, 5, 6, 8, 10, 12, 16, 20, 32), ce_n_init=64, draw_n_init=32),
    },
    # Chapter "Rescaled MSE" (book/rescaled_mse.md).
    "rescaled": {
        "smoke": dict(K=4, n=3, d=4, lambda_W=5e-4, lambda_H=5e-4, n_init=3, grid=40, race_K=4, race_n=3,
                      race_d=4, race_n_init=3, race_steps=80),
        "cpu": dict(K=10, n=10, d=10, lambda_W=5e-4, lambda_H=5e-4, n_init=8, grid=121, race_K=10, race_n=10,
                    race_d=16, race_n_init=16, race_steps=400),
        "paper": dict(K=10, n=50, d=16, lambda_W=5e-4, lambda_H=5e-4, n_init=32, grid=201, race_K=10, race_n=50,
                      race_d=16, race_n_init=64, race_steps=1000),
    },
    # Chapter "The benign landscape" (book/benign_landscape.md).
    "benign": {
        "smoke": dict(K=4, n=2, d=4, lambda_W=1e-2, lambda_H=2e-2, n_random=64, random_steps=150,
                      eps=(1e-2, 1e-5, 1e-8), escape_steps=200, zero_grid=9),
        "cpu": dict(K=5, n=3, d=6, lambda_W=5e-3, lambda_H=1e-2, n_random=1000, random_steps=400,
                    eps=(1e-2, 1e-4, 1e-6, 1e-8, 1e-10), escape_steps=400, zero_grid=25),
        "paper": dict(K=6, n=4, d=8, lambda_W=5e-3, lambda_H=1e-2, n_random=4000, random_steps=1000,
                      eps=(1e-2, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12), escape_steps=800, zero_grid=41),
    },
    # Page "Measure collapse in your own network" (book/own_network.md): a torchvision ResNet18 trained
    # briefly with MSE on n_per_class CIFAR-10 images a class, NC measured after every epoch.
    "own_network": {
        "smoke": dict(n_per_class=10, epochs=2, batch_size=50, lr=0.05),
        "cpu": dict(n_per_class=50, epochs=25, batch_size=50, lr=0.05),
        "paper": dict(n_per_class=500, epochs=60, batch_size=128, lr=0.05),
    },
}


def check_profile(profile: str) -> str:
    """Return ``profile`` if it is known, else raise a ValueError listing the known ones."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    return profile


def settings(chapter: str, profile: str) -> MappingProxyType:
    """Read-only sizes for ``chapter`` at ``profile``."""
    check_profile(profile)
    if chapter not in _SETTINGS:
        extra = "; the deep-network study's are ncmse.profiles.study_settings" if chapter == "deep" else ""
        raise ValueError(f"no settings for chapter {chapter!r}; known: {', '.join(_SETTINGS)}{extra}")
    return MappingProxyType(dict(_SETTINGS[chapter][profile]))


def describe(chapter, profile: str) -> str:
    """One Markdown line telling the reader which profile produced the page, with its sizes:
    ``chapter`` names settings of :func:`settings`, or is such a mapping itself (e.g.
    ``ncmse.profiles.study_settings(profile)``)."""
    items = (settings(chapter, profile) if isinstance(chapter, str) else chapter).items()
    sizes = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in items)
    return f"**Executed at profile `{profile}`** ({sizes}). See the status page for timings."


# ------------------------------------------------------------------ the studies of deep-network runs


def check_study(study: str, profile: str | None = None) -> str:
    """``study`` if known; with ``profile``, also check that the study has it (the ``gpu`` profile
    belongs to the study ``cifar10`` alone)."""
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; expected one of {', '.join(STUDIES)}")
    if profile in _CIFAR10_ONLY:
        if study != "cifar10":
            raise ValueError(f"the {profile!r} profile belongs to the study 'cifar10' (--study cifar10), "
                             f"not to {study!r}")
    elif profile is not None:
        check_profile(profile)
    return study


def study_profiles(study: str) -> tuple[str, ...]:
    """The profiles a study has: the book's, and for ``cifar10`` also ``gpu`` and ``long``."""
    return PROFILES + (_CIFAR10_ONLY if check_study(study) == "cifar10" else ())


def d_grid(profile: str, study: str = "deep") -> tuple[int, ...]:
    """Feature dimensions of a study's d-sweep.  ``deep`` (chapter "Deep networks"): dense around
    K−1 = 9 at ``cpu``, the paper's at ``paper``; ``cifar10`` (chapter "CIFAR-10"): one d below K−1
    and one above at ``smoke`` and ``cpu``, the paper's at ``paper``."""
    grids = {"deep": {"smoke": (4, 9, 16), "cpu": (2, 4, 6, 8, 9, 10, 16, 64), "paper": (5, 8, 9, 10, 512)},
             "cifar10": {"smoke": (4, 16), "cpu": (4, 16), "paper": (5, 8, 9, 10, 512), "gpu": (5, 8, 9, 10, 512),
                         "long": (2, 4, 6, 8, 9, 10, 16, 64)}}
    return grids[check_study(study, profile)][profile]


def profile_config(profile: str, study: str = "deep", *, device=None, **changes) -> RunConfig:
    """The base configuration of a study at a profile, its precision decided for ``device`` (None: CUDA
    if available, else the CPU; :meth:`ncmse.config.RunConfig.resolved`).

    ``paper`` (both studies) is the paper's d-sweep setting — CIFAR-10, ResNet18, SGD momentum 0.9,
    lr 0.05, batch 128, weight decay 5e-4, 200 epochs, lr × 0.1 every 40 epochs, crop + flip, seed 6,
    fp32.  Study ``deep`` at ``cpu`` is Fashion-MNIST with an MLP, 15 epochs on 1,000 images a class, in
    fp32 (an MLP this small gains nothing from bf16).  Study ``cifar10`` at ``cpu`` is CIFAR-10 with the
    small CNN, 8 epochs on 200 images a class at the paper's lr: the part of the chapter "CIFAR-10" that
    a reader reruns in minutes, in precision ``"auto"`` (bf16 where the machine runs it natively, fp32
    elsewhere; ``ncmse.hardware``); ``smoke`` is a few hundred images and two epochs.  ``gpu`` (study
    ``cifar10`` only) is the paper's network and data — ResNet18, all 50,000 images, crop + flip,
    lr 0.05 — for 15 epochs on a cosine schedule in precision ``"auto"`` (bf16 on every recent GPU): a
    sweep of the paper's d's sized for one GPU in minutes (``benchmarks/gpu_throughput.py`` measures
    what it costs), whose runs reach the book through ``ncmse.archive``."""
    from .config import RunConfig

    check_study(study, profile)
    if profile == GPU_PROFILE:
        base = RunConfig(dataset="cifar10", model="resnet18", d=512, n_per_class=None, epochs=15, batch_size=128,
                         optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine",
                         augment=True, precision="auto", seed=0, nc_epochs=(1, 5, 10))
    elif profile == "paper":
        base = RunConfig(dataset="cifar10", model="resnet18", d=512, n_per_class=None, epochs=200, batch_size=128,
                         optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="step",
                         step_every=40, gamma=0.1, augment=True, seed=6,
                         nc_epochs=(1, 5) + tuple(range(10, 201, 10)))
    elif profile == LONG_PROFILE:
        # sized by probes of MSE at d = 9 and 10 (seed 0, one core each, 2 AMX cores), the loss slowest to fit.
        # The first version (ReLU on the features, batch 128, 40 epochs, commit 831adfc) left MSE short of the
        # terminal phase at d >= K-1 (training accuracy 0.97-0.98), and neither 80 epochs, fp32, nor the sum
        # convention closed it.  Linear features (the UFM's features are unconstrained, not confined to an
        # orthant) and batch 64 (twice the steps an epoch) for 60 epochs fit 0.997 at lr 0.15, d = 10.  fp32,
        # not "auto": a study spread over sessions trains the same keys on every machine, bf16 or not (bf16 is
        # 1.34x faster on AMX, emulated and slower on AVX2).
        base = RunConfig(dataset="cifar10", model="cnn", d=16, n_per_class=1000, test_per_class=None, epochs=60,
                         batch_size=64, lr=0.1, schedule="cosine", feature_relu=False, precision="fp32",
                         nc_epochs=(1, 5, 10, 20, 40))
    elif study == "cifar10":
        # cpu: no NC curve (the chapter draws none); sized so that its 12 runs take a few minutes on 2 AVX2 cores
        sizes = (dict(n_per_class=200, test_per_class=300, epochs=8, batch_size=128, nc_epochs=())
                 if profile == "cpu" else dict(n_per_class=20, test_per_class=20, epochs=2, batch_size=64,
                                               nc_epochs=(1,)))
        base = RunConfig(dataset="cifar10", model="cnn", d=16, lr=0.05, schedule="cosine", precision="auto",
                         **sizes)
    elif profile == "cpu":
        base = RunConfig(dataset="fashion_mnist", model="mlp", d=16, n_per_class=1000, test_per_class=500,
                         epochs=15, batch_size=128, lr=0.05, schedule="cosine", nc_epochs=(1, 2, 3, 5, 7, 10))
    else:
        base = RunConfig(dataset="fashion_mnist", model="mlp", d=9, n_per_class=40, test_per_class=20,
                         epochs=2, batch_size=64, lr=0.05, schedule="cosine", nc_epochs=(1,))
    return (base.replace(**changes) if changes else base).resolved(device, warn=False)


# The study of the chapter "Deep networks" at each profile; the base run is profile_config, the grid
# d_grid.  seeds: of every test run; lrs: candidate learning rates, tuned on holdout_per_class held-out
# training images a class at the feature dimensions tune_ds (a single lr: no tuning, the paper's);
# alphas, Ms: the paper's rescaled-MSE sweeps, trained at rescaled_ds; sweep_rescaled: the (α, M)
# carried through the d-sweep (None: chosen on held-out data); nc_ds: the d's whose NC curves are drawn;
# geometry_d: the d < K−1 whose class means are compared with the UFM; linear_seeds: of the runs
# without the feature ReLU; halving: (rung, keep) of a successive halving of the lr candidates (every
# candidate stops after epoch `rung`, the `keep` best per loss and tuning d go on to the end; None:
# every candidate trains to the end), see ncmse.study.tune_lr.
_STUDY = {
    "smoke": dict(seeds=(0, 1), lrs=(0.03, 0.1), tune_ds=(4, 16), holdout_per_class=20, alphas=(1, 5),
                  Ms=(1, 3), rescaled_ds=(4, 16), sweep_rescaled=None, nc_ds=(4, 16), geometry_d=4,
                  linear_seeds=(0,), halving=(1, 1)),
    # cpu, sized for the whole book in 15 minutes on a 2-core AVX2 CPU: two seeds (three before; on the same
    # cache, seeds 0 and 1 give every verdict that seeds 0, 1 and 2 gave), and the paper's rescaled sweeps
    # without their inner points α = 15 and M = 7 (the other runs are the same runs as before, and the rescaled
    # MSE chosen on held-out data is the same).  No successive halving: under the cosine schedule a rate's
    # rank after 5 of 15 epochs favours small rates (measured: 4 of 18 choices changed, and cross-entropy at
    # d = 2 lost 7.6 points), so every candidate trains to the end.
    "cpu": dict(seeds=(0, 1), lrs=(0.01, 0.03, 0.1, 0.3), tune_ds=(4, 16), holdout_per_class=500,
                alphas=(1, 5, 20), Ms=(1, 3, 5, 10), rescaled_ds=(4, 16), sweep_rescaled=None,
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
    # cpu: the quick rerun; one lr, the paper's (no tuning), so that the chapter's 12 runs take minutes
    "cpu": dict(seeds=(0, 1), lrs=(0.05,), tune_ds=(), holdout_per_class=None, alphas=(), Ms=(),
                rescaled_ds=(), sweep_rescaled="deep", nc_ds=(4, 16), geometry_d=4, linear_seeds=()),
    "paper": dict(_STUDY["paper"], alphas=(), Ms=(), rescaled_ds=(), sweep_rescaled="deep", linear_seeds=()),
    # long: the claim in its regime on a CPU; learning rates tuned on 500 held-out training images a class
    # (at batch 64 and 60 epochs MSE fit 0.993 of its training set at lr 0.05, d = 9, and 0.997 at lr 0.15, d = 10);
    # the rescaled MSE is the one "Deep networks" chose at cpu (RMSE α=5, M=1), named so that the archived
    # runs do not depend on the deep study's cache
    "long": dict(seeds=(0, 1), lrs=(0.05, 0.15, 0.3), tune_ds=(4, 16), holdout_per_class=500, alphas=(), Ms=(),
                 rescaled_ds=(), sweep_rescaled=(5.0, 1.0), nc_ds=(4, 16), geometry_d=4, linear_seeds=()),
    # one seed of each loss at the paper's d's, the paper's lr, the paper profile's rescaled MSE
    "gpu": dict(seeds=(0,), lrs=(0.05,), tune_ds=(), holdout_per_class=None, alphas=(), Ms=(), rescaled_ds=(),
                sweep_rescaled=_STUDY["paper"]["sweep_rescaled"], nc_ds=(5, 512), geometry_d=5, linear_seeds=()),
}


def study_settings(profile: str, study: str = "deep") -> MappingProxyType:
    """Read-only sizes of a study at ``profile`` (the comments above :data:`_STUDY` and :data:`_CIFAR10`)."""
    table = {"deep": _STUDY, "cifar10": _CIFAR10}[check_study(study, profile)]
    return MappingProxyType(dict(table[profile]))

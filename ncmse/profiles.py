"""Profiles: one knob that sizes every chapter (the book's page "Architecture").

* ``smoke``: CI's papermill run: tiny sizes, every code path, the same assertions; seconds a chapter.
* ``cpu``: the default book build on a laptop CPU: meaningful figures, the whole book well under 30 min.
* ``paper``: the paper's own settings where it has them (GPU hours for the deep-network chapters).

The chapters of the unconstrained features model read their sizes from :func:`settings`, never from
literals in the notebook; the deep-network chapter reads its own from ``ncmse.config.study_settings``,
beside the run configuration they size.
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["PROFILES", "DEFAULT_PROFILE", "STUDIES", "PRECISIONS", "GPU_PROFILE", "STUDY_PROFILES",
           "check_profile", "settings", "describe"]

PROFILES = ("smoke", "cpu", "paper")
DEFAULT_PROFILE = "cpu"
# The studies of deep-network runs (ncmse.config.study_settings): "deep" for the chapter "Deep networks",
# "cifar10" for the chapter "CIFAR-10"; and the numerical precisions of training (RunConfig.precision).
# Here, not in ncmse.config, so that the command line can name them without importing torch.
STUDIES = ("deep", "cifar10")
PRECISIONS = ("fp32", "bf16")
# A profile of the study "cifar10" alone, not of the book: the paper's network and data on a schedule
# short enough for one GPU in minutes.  Its runs reach the book through the archive (ncmse.archive),
# which the chapter "CIFAR-10" shows at every profile.
GPU_PROFILE = "gpu"
STUDY_PROFILES = PROFILES + (GPU_PROFILE,)

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
        extra = "; the deep-network study's are ncmse.config.study_settings" if chapter == "deep" else ""
        raise ValueError(f"no settings for chapter {chapter!r}; known: {', '.join(_SETTINGS)}{extra}")
    return MappingProxyType(dict(_SETTINGS[chapter][profile]))


def describe(chapter, profile: str) -> str:
    """One Markdown line telling the reader which profile produced the page, with its sizes:
    ``chapter`` names settings of :func:`settings`, or is such a mapping itself (e.g.
    ``ncmse.config.study_settings(profile)``)."""
    items = (settings(chapter, profile) if isinstance(chapter, str) else chapter).items()
    sizes = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in items)
    return f"**Executed at profile `{profile}`** ({sizes}). See the status page for timings."

"""The losses a deep-network study compares (chapters "Deep networks" and "CIFAR-10"): MSE,
cross-entropy and the rescaled MSE of Hui & Belkin with its α and M, each with one label used by every
table, figure and command-line line of the book.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import RunConfig

__all__ = ["Variant", "MSE", "CE", "rescaled_variants", "loss_label"]


@dataclass(frozen=True)
class Variant:
    """A training loss with its rescaling: ``loss`` in {"mse", "rmse", "ce"}, α and M for "rmse"."""

    loss: str
    alpha: float = 1.0
    M: float = 1.0

    @property
    def label(self) -> str:
        """"MSE", "CE" or "RMSE α=…, M=…": the one name of this loss in every table, figure and line."""
        if self.loss == "rmse":
            return f"RMSE α={self.alpha:g}, M={self.M:g}"
        return {"mse": "MSE", "ce": "CE"}[self.loss]

    def config(self, base: RunConfig, **changes) -> RunConfig:
        """``base`` trained with this loss (and ``changes``)."""
        return base.replace(loss=self.loss, alpha=float(self.alpha), M=float(self.M), **changes)

    @classmethod
    def of(cls, config: RunConfig | dict) -> Variant:
        """The variant a configuration (or its dict) trains with."""
        c = config.to_dict() if isinstance(config, RunConfig) else config
        return cls(c["loss"], float(c["alpha"]), float(c["M"]))


#: plain MSE (α = M = 1)
MSE = Variant("mse")
#: cross-entropy
CE = Variant("ce")


def rescaled_variants(alphas=(1, 5, 15, 20), Ms=(1, 3, 5, 7, 10)) -> list[Variant]:
    """The paper's rescaled-MSE sweeps: α over ``alphas`` at M = 1, then M over ``Ms`` at α = 1.
    The point α = M = 1 is plain MSE and appears once, as :data:`MSE`."""
    out = []
    for a, m in [(a, 1.0) for a in alphas] + [(1.0, m) for m in Ms]:
        v = MSE if (float(a), float(m)) == (1.0, 1.0) else Variant("rmse", float(a), float(m))
        if v not in out:
            out.append(v)
    return out


def loss_label(config: RunConfig | dict) -> str:
    """The label of a run's loss (``"MSE"``, ``"CE"``, ``"RMSE α=5, M=1"``): :attr:`Variant.label` of
    :meth:`Variant.of` the configuration."""
    return Variant.of(config).label

"""Sample losses in one convention, shared by the UFM (``ncmse.ufm``) and by training.

For logits z ∈ R^K of a sample of class k (the book's page Notation):

* MSE            ℓ(z, k) = ½‖z − e_k‖²
* rescaled MSE   ℓ(z, k) = ½[α(z_k − M)² + Σ_{j≠k} z_j²]   (Hui & Belkin, 2021; α = M = 1 is MSE)
* cross-entropy  ℓ(z, k) = −log softmax(z)_k

Relation to PyTorch: ``torch.nn.MSELoss()(z, one_hot)`` averages (z_j − y_j)² over all N·K entries
without the ½, so it equals (2/K) times the mean of our MSE.  A network trained with
``nn.MSELoss`` and weight decay λ therefore corresponds to the UFM with regularization λ·K/2 in our
normalization.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checks import as_float

__all__ = [
    "rescaled_mse",
    "rescaled_mse_grad",
    "mse",
    "cross_entropy",
    "RescaledMSELoss",
    "loss_module",
    "TorchConventionMSELoss",
]


def _check_rescaling(alpha: float, M: float) -> None:
    as_float("alpha", alpha, low=0, low_open=True)
    as_float("M", M, low=0, low_open=True)


def rescaled_mse(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 1.0, M: float = 1.0) -> torch.Tensor:
    """Per-sample rescaled MSE ½[α(z_k − M)² + Σ_{j≠k} z_j²].

    logits: (..., N, K); labels: (N,) integers in [0, K).  Returns (..., N).
    """
    _check_rescaling(alpha, M)
    target = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
    weight = 1.0 + (alpha - 1.0) * target
    return 0.5 * (weight * (logits - M * target) ** 2).sum(-1)


def rescaled_mse_grad(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 1.0,
                      M: float = 1.0) -> torch.Tensor:
    """∂ℓ/∂z of :func:`rescaled_mse`, shape (..., N, K): ω ⊙ (z − M e_k) with ω_k = α, ω_{j≠k} = 1."""
    _check_rescaling(alpha, M)
    target = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
    return (1.0 + (alpha - 1.0) * target) * (logits - M * target)


def mse(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample ½‖z − e_k‖², shape (..., N)."""
    return rescaled_mse(logits, labels, 1.0, 1.0)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample −log softmax(z)_k, shape (..., N)."""
    return -torch.log_softmax(logits, dim=-1).gather(-1, labels.expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)


class RescaledMSELoss(nn.Module):
    """Mean over samples of :func:`rescaled_mse` (our convention, *not* ``nn.MSELoss``)."""

    def __init__(self, alpha: float = 1.0, M: float = 1.0):
        super().__init__()
        _check_rescaling(alpha, M)
        self.alpha, self.M = float(alpha), float(M)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return rescaled_mse(logits, labels, self.alpha, self.M).mean()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, M={self.M}"


class TorchConventionMSELoss(RescaledMSELoss):
    """The same loss averaged over all N·K logits without the ½, as ``torch.nn.MSELoss`` (and the paper's
    code) normalizes it: (2/K) × :class:`RescaledMSELoss`.  With α = M = 1 it equals
    ``nn.MSELoss()(z, one_hot(y))``."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return super().forward(logits, labels) * (2.0 / logits.shape[-1])


def loss_module(name: str, alpha: float = 1.0, M: float = 1.0, *, convention: str = "sample") -> nn.Module:
    """The training loss by name: ``"mse"``, ``"rmse"`` (rescaled, with α and M) or ``"ce"``.

    convention (MSE family only): ``"sample"``, the book's per-sample ½‖·‖²; ``"torch"``, the mean over
    all logits as ``torch.nn.MSELoss`` (:class:`TorchConventionMSELoss`)."""
    if convention not in ("sample", "torch"):
        raise ValueError(f"unknown convention {convention!r}; expected 'sample' or 'torch'")
    cls = RescaledMSELoss if convention == "sample" else TorchConventionMSELoss
    if name == "mse":
        return cls(1.0, 1.0)
    if name == "rmse":
        return cls(alpha, M)
    if name == "ce":
        return nn.CrossEntropyLoss()
    raise ValueError(f"unknown loss {name!r}; expected one of 'mse', 'rmse', 'ce'")

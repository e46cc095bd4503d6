"""The loss of one feature over (s, θ) with the classifier fixed to a simplex ETF (chapter "Rescaled MSE").

One feature of class k is written in polar form around its class's classifier row,

    h(s, θ) = s (cos θ · ŵ_k + sin θ · u),      ŵ_k = w_k/‖w_k‖,  u ⊥ ŵ_k,  ‖u‖ = 1,

and its loss is F(s, θ) = ℓ(W h + b, k) + λ_H s²/2.  The paper's figure leaves the choices open; here
every one is a field of :class:`Landscape`:

* W: the K rows of a simplex ETF of row norm ρ, in R^d with d = K (one spare dimension);
* u: ``"span"``, the unit vector towards another class j inside the span of the ETF, or
  ``"orthogonal"``, the spare dimension, orthogonal to every row of W;
* b = β·1, a bias shared by all classes (β = 0 by default);
* λ_H ≥ 0: the feature's weight decay (cross-entropy needs λ_H > 0 for a finite minimizer in s).

Curvature at the minimizer (s*, 0) — θ = 0 is a critical point for both choices of u (by the ETF's
symmetry Σ_{j≠k} (W u)_j = 0) — with p = W ŵ_k, q = W u and ∇²ℓ the Hessian of the sample loss in z:

    F_ss = pᵀ∇²ℓ p + λ_H,    F_θθ = s*² (qᵀ∇²ℓ q + λ_H),
    κ = F_θθ / (s*² F_ss) = (qᵀ∇²ℓ q + λ_H)/(pᵀ∇²ℓ p + λ_H),

κ compares the curvature along the arc (length s·θ) with the radial one and has no units; the raw
ratio F_θθ/F_ss = κ s*² depends on the scale of s*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import etf
from .losses import cross_entropy, rescaled_mse

__all__ = ["Landscape", "PAPER_LOSSES", "loss_spec"]

# The four panels of the paper's figure: name → (loss, α, M).
PAPER_LOSSES = {
    "MSE": ("rmse", 1.0, 1.0),
    "CE": ("ce", 1.0, 1.0),
    "rescaled MSE, α=5, M=1": ("rmse", 5.0, 1.0),
    "rescaled MSE, α=1, M=5": ("rmse", 1.0, 5.0),
}


def loss_spec(loss: str, alpha: float = 1.0, M: float = 1.0) -> tuple[str, float, float]:
    if loss not in ("rmse", "mse", "ce"):
        raise ValueError(f"unknown loss {loss!r}; expected 'mse', 'rmse' or 'ce'")
    return ("rmse", 1.0, 1.0) if loss == "mse" else (loss, float(alpha), float(M))


@dataclass(frozen=True)
class Landscape:
    """F(s, θ) for one feature of class ``k`` (module docstring states every choice)."""

    K: int = 4
    rho: float = 1.0
    lambda_H: float = 1e-2
    beta: float = 0.0
    direction: str = "span"
    k: int = 0
    j: int = 1

    def __post_init__(self):
        if self.K < 3:
            raise ValueError(f"K must be ≥ 3 (a direction towards another class inside the span), got {self.K}")
        if not self.rho > 0 or not self.lambda_H >= 0:
            raise ValueError("need rho > 0 and lambda_H ≥ 0")
        if self.direction not in ("span", "orthogonal"):
            raise ValueError(f"direction must be 'span' or 'orthogonal', got {self.direction!r}")
        if not (0 <= self.k < self.K and 0 <= self.j < self.K and self.j != self.k):
            raise ValueError("need 0 ≤ k, j < K and j ≠ k")

    # ----------------------------------------------------------- geometry
    @property
    def W(self) -> torch.Tensor:
        """Classifier (K, K): a simplex ETF of row norm ρ in the first K−1 coordinates."""
        return self.rho * etf.simplex_etf(self.K, self.K)

    @property
    def w_hat(self) -> torch.Tensor:
        return self.W[self.k] / self.rho

    @property
    def u(self) -> torch.Tensor:
        """The unit direction orthogonal to ŵ_k in which θ turns the feature."""
        if self.direction == "orthogonal":
            return torch.eye(self.K, dtype=torch.float64)[-1]
        w = self.W[self.j] / self.rho
        v = w - (w @ self.w_hat) * self.w_hat
        return v / v.norm()

    def feature(self, s: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """h(s, θ), shape ``(*broadcast(s, θ), K)``."""
        s, theta = torch.broadcast_tensors(torch.as_tensor(s, dtype=torch.float64),
                                           torch.as_tensor(theta, dtype=torch.float64))
        return s[..., None] * (torch.cos(theta)[..., None] * self.w_hat + torch.sin(theta)[..., None] * self.u)

    # ----------------------------------------------------------- the loss
    def F(self, s, theta, loss: str = "mse", alpha: float = 1.0, M: float = 1.0) -> torch.Tensor:
        """F(s, θ) = ℓ(W h + β1, k) + λ_H s²/2, broadcast over s and θ (differentiable)."""
        kind, alpha, M = loss_spec(loss, alpha, M)
        h = self.feature(s, theta)
        z = h @ self.W.T + self.beta
        labels = torch.full(z.shape[:-1], self.k, dtype=torch.long)
        flat_z, flat_y = z.reshape(-1, self.K), labels.reshape(-1)
        ell = cross_entropy(flat_z, flat_y) if kind == "ce" else rescaled_mse(flat_z, flat_y, alpha, M)
        s_b = torch.as_tensor(s, dtype=torch.float64).expand(z.shape[:-1])
        return ell.reshape(z.shape[:-1]) + 0.5 * self.lambda_H * s_b**2

    def grid(self, s: torch.Tensor, theta: torch.Tensor, **loss) -> torch.Tensor:
        """F on the grid θ × s: shape (len(theta), len(s))."""
        return self.F(s[None, :], theta[:, None], **loss)

    def gradient_field(self, s: torch.Tensor, theta: torch.Tensor, **loss) -> tuple[torch.Tensor, torch.Tensor]:
        """(∂F/∂s, ∂F/∂θ) on the grid θ × s, each (len(theta), len(s))."""
        S_, T_ = torch.meshgrid(s.clone(), theta.clone(), indexing="xy")
        S_.requires_grad_(True)
        T_.requires_grad_(True)
        gs, gt = torch.autograd.grad(self.F(S_, T_, **loss).sum(), (S_, T_))
        return gs.detach(), gt.detach()

    # ------------------------------------------------------ the minimizer
    def s_star(self, loss: str = "mse", alpha: float = 1.0, M: float = 1.0) -> float:
        """The minimizer of F(·, 0): closed form for (rescaled) MSE, bisection on the (monotone)
        derivative for CE (F(·, 0) is convex: a convex loss of z, linear in s, plus λ_H s²/2)."""
        kind, alpha, M = loss_spec(loss, alpha, M)
        K, rho, beta, lam = self.K, self.rho, self.beta, self.lambda_H
        if kind == "rmse":
            # F(s, 0) = ½α(ρs + β − M)² + ½(K−1)(β − ρs/(K−1))² + λ s²/2
            num = alpha * rho * (M - beta) + rho * beta
            den = rho**2 * (alpha + 1 / (K - 1)) + lam
            return max(0.0, num / den) if den > 0 else math.inf
        if lam == 0:
            return math.inf

        def dF(s: float) -> float:
            x = torch.tensor(s, dtype=torch.float64, requires_grad=True)
            (g,) = torch.autograd.grad(self.F(x, torch.zeros((), dtype=torch.float64), loss, alpha, M), x)
            return float(g)

        lo, hi = 0.0, 1.0
        if dF(lo) >= 0:
            return 0.0
        while dF(hi) < 0:
            hi *= 2
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if dF(mid) < 0 else (lo, mid)
        return 0.5 * (lo + hi)

    def curvatures(self, loss: str = "mse", alpha: float = 1.0, M: float = 1.0) -> dict[str, float]:
        """Hessian of F at (s*, 0) by autograd: s*, F_ss, F_θθ, F_sθ, κ = F_θθ/(s*² F_ss) and the raw
        ratio F_θθ/F_ss; plus ``kappa_formula`` from the module docstring (pᵀ∇²ℓp, qᵀ∇²ℓq)."""
        s0 = self.s_star(loss, alpha, M)
        x = torch.tensor([s0, 0.0], dtype=torch.float64)
        Hm = torch.autograd.functional.hessian(lambda v: self.F(v[0], v[1], loss, alpha, M), x)
        F_ss, F_tt, F_st = float(Hm[0, 0]), float(Hm[1, 1]), float(Hm[0, 1])
        p, q = self.W @ self.w_hat, self.W @ self.u
        z = s0 * p + self.beta
        H_ell = self.loss_hessian(z, loss, alpha, M)
        kappa_formula = float((q @ H_ell @ q + self.lambda_H) / (p @ H_ell @ p + self.lambda_H))
        return {"s_star": s0, "F_ss": F_ss, "F_thth": F_tt, "F_sth": F_st, "kappa": F_tt / (s0**2 * F_ss),
                "raw_ratio": F_tt / F_ss, "kappa_formula": kappa_formula}

    def loss_hessian(self, z: torch.Tensor, loss: str = "mse", alpha: float = 1.0, M: float = 1.0) -> torch.Tensor:
        """∇²ℓ(z) (K, K) in closed form: diag(ω) (ω_k = α) for rescaled MSE, diag(π) − ππᵀ for CE."""
        kind, alpha, _ = loss_spec(loss, alpha, M)
        if kind == "ce":
            pi = torch.softmax(z, -1)
            return torch.diag(pi) - torch.outer(pi, pi)
        w = torch.ones(self.K, dtype=torch.float64)
        w[self.k] = alpha
        return torch.diag(w)

"""Critical points of the MSE UFM and the Hessian there (chapter "The benign landscape").

Every function takes the problem (a :class:`ncmse.ufm.UFM`) as first argument, e.g.
``critical_point(problem, rank, seed=0)``, ``hessian_eigenvalues(problem, W, H, b)``.

For MSE (α = 1, any M) with a free bias every critical point has NC1 (∇_H f = 0 gives
H = −(Nλ_H I + WᵀW)^{-1} Wᵀ(b1ᵀ − Y), a function of the label only), so W H = Q Y, and the factored
problem decouples along the singular directions of M C: each one is either off (0) or on with the
shrunk value a = M − Kλ.  The rank-r critical points are therefore Q = a P_S for r-dimensional
subspaces S ⊂ 1^⊥, factored with balance, b = (M/K) 1: the global minimizers of the same model with
d = r, embedded in R^d (``ncmse.minimizers``).  At one of them, the directions ΔW = x s ρᵀ,
ΔH = y ρ sᵀY/√n with s ∈ 1^⊥ ⊥ S and ρ ⊥ range(R) (unit vectors) decouple into 2×2 blocks
[[λ_W, −M/(K√n)], [−M/(K√n), λ_H]]: (K−1−r)(d−r) negative eigenvalues, each equal to
(λ_W+λ_H)/2 − √(((λ_W−λ_H)/2)² + M²/(K² n)) — negative exactly when λ < M/K.

The Hessian functions (:func:`hessian`, :func:`hessian_vector_product`, :func:`hessian_eigenvalues`,
:func:`negative_curvature_direction`) hold for any UFM (any loss, α, M, bias); the closed forms
(:func:`critical_point`, :func:`critical_value`, :func:`predicted_curvature`) for MSE with a free bias.
"""

from __future__ import annotations

import math

import torch

from . import etf
from .minimizers import balanced_factors, low_rank_a
from .ufm import UFM, descent_history

__all__ = ["critical_point", "critical_value", "predicted_curvature", "hessian", "hessian_vector_product",
           "hessian_eigenvalues", "negative_curvature_direction", "escape_saddle"]


def _require_mse_free_bias(problem: UFM, what: str) -> None:
    if not (problem.bias and problem.lambda_b == 0.0 and problem.alpha == 1.0):
        raise NotImplementedError(f"{what} is derived for MSE (α = 1) with a free bias (λ_b = 0)")


# ------------------------------------------------------------------ critical points
def critical_point(problem: UFM, rank: int, seed: int = 0):
    """A critical point (W (K, d), H (d, N), b (K,)) whose product W H has the given rank (module
    docstring).

    rank ∈ {0, …, min(d, K−1)} in the non-trivial regime (the largest is a global minimizer),
    only 0 in the trivial one.  ``seed`` draws the subspace S and the feature-space embedding R.
    """
    _require_mse_free_bias(problem, "critical_point")
    top = min(problem.d, problem.K - 1) if low_rank_a(problem) > 0 else 0
    if not isinstance(rank, int) or not 0 <= rank <= top:
        raise ValueError(f"rank must be an integer in [0, {top}] here, got {rank!r}")
    b = torch.full((problem.K,), problem.M / problem.K, dtype=torch.float64)
    if rank == 0:
        return (torch.zeros(problem.K, problem.d, dtype=torch.float64),
                torch.zeros(problem.d, problem.N, dtype=torch.float64), b)
    gen = torch.Generator().manual_seed(seed)
    S = etf.random_subspace(problem.K, rank, generator=gen)
    R = etf.random_orthonormal(problem.d, rank, generator=gen)
    return (*balanced_factors(problem, S, torch.full((rank,), low_rank_a(problem), dtype=torch.float64), R), b)


def critical_value(problem: UFM, rank: int) -> float:
    """f at a rank-r critical point: [M²(K−1−r) + r (Kλ)²]/(2K) + λ r (M − Kλ) (a = M − Kλ)."""
    _require_mse_free_bias(problem, "critical_value")
    lam = problem.lam
    a, K, M = low_rank_a(problem), problem.K, problem.M
    if rank > 0 and a == 0:
        raise ValueError("in the trivial regime the only critical point is rank 0")
    return (M**2 * (K - 1 - rank) + rank * (M - a) ** 2) / (2 * K) + lam * rank * a


def predicted_curvature(problem: UFM, rank: int) -> dict[str, float]:
    """Prediction at the rank-r critical point: number of negative Hessian eigenvalues
    (K−1−r)(d−r) (0 in the trivial regime) and the smallest eigenvalue (module docstring)."""
    _require_mse_free_bias(problem, "predicted_curvature")
    lw, lh = problem.lambda_W, problem.lambda_H
    smallest = (lw + lh) / 2 - math.sqrt(((lw - lh) / 2) ** 2 + problem.M**2 / (problem.K**2 * problem.n))
    if smallest >= 0:          # trivial regime: 0 is the global minimizer, strictly convex there
        return {"n_negative": 0, "smallest": smallest if rank == 0 else math.nan}
    if rank == min(problem.d, problem.K - 1):   # the global minimizer: no negative eigenvalue
        return {"n_negative": 0, "smallest": math.nan}
    return {"n_negative": (problem.K - 1 - rank) * (problem.d - rank), "smallest": smallest}


# ------------------------------------------------------------------ the Hessian
def hessian(problem: UFM, W, H, b=None, *, max_params: int = 6000) -> torch.Tensor:
    """The exact Hessian of f at (W, H, b), dense (n_params, n_params), by autograd, in the order of
    :meth:`ncmse.ufm.UFM.pack`.  Refuses problems with more than ``max_params`` parameters (use
    :func:`hessian_vector_product` there)."""
    if problem.n_params > max_params:
        raise ValueError(f"{problem.n_params} parameters: too many for a dense Hessian (max_params={max_params})")
    x = problem.pack(*problem.check_point(W, H, b)).detach()
    Hm = torch.autograd.functional.hessian(lambda v: problem.value(*problem.unpack(v)), x)
    return 0.5 * (Hm + Hm.T)


def hessian_vector_product(problem: UFM, W, H, b, V: torch.Tensor) -> torch.Tensor:
    """∇²f(W, H, b) · V for packed directions V (n_params,) or (m, n_params), by double backward."""
    x = problem.pack(*problem.check_point(W, H, b)).detach().requires_grad_(True)
    g = problem.pack(*problem.gradient(*problem.unpack(x)))
    V = torch.as_tensor(V, dtype=torch.float64)
    rows = V if V.ndim == 2 else V[None]
    out = torch.stack([torch.autograd.grad(g, x, v, retain_graph=True)[0] for v in rows])
    return out if V.ndim == 2 else out[0]


def hessian_eigenvalues(problem: UFM, W, H, b=None) -> torch.Tensor:
    """All eigenvalues of the Hessian, ascending, shape (n_params,) (dense; small problems)."""
    return torch.linalg.eigvalsh(hessian(problem, W, H, b))


def negative_curvature_direction(problem: UFM, W, H, b=None):
    """(λ_min, direction): the smallest Hessian eigenvalue and its unit eigenvector, unpacked as
    (ΔW, ΔH, Δb).  At a strict saddle λ_min < 0 and f decreases along ±direction."""
    ev, vec = torch.linalg.eigh(hessian(problem, W, H, b))
    return float(ev[0]), problem.unpack(vec[:, 0])


# ------------------------------------------------------------------ escape
def escape_saddle(problem: UFM, W, H, b, *, eps: float = 1e-3, steps: int = 300,
                  tol: float = 1e-10) -> dict[str, torch.Tensor]:
    """Step ``eps`` along the negative-curvature direction at a saddle (both signs) and follow gradient
    descent (:func:`ncmse.ufm.descent_history`); returns its history for the two starts (each entry
    (steps+1, 2)), plus ``lambda_min``.  Raises where the smallest Hessian eigenvalue is above −``tol``
    (no strict saddle)."""
    lam_min, (dW, dH, db) = negative_curvature_direction(problem, W, H, b)
    if lam_min >= -tol:
        raise ValueError(f"no negative curvature here (smallest eigenvalue {lam_min:.3e}): not a strict saddle")
    x = problem.pack(W, H, b)
    v = problem.pack(dW, dH, db)
    hist = descent_history(problem, x0=torch.stack([x + eps * v, x - eps * v]), steps=steps)
    hist["lambda_min"] = torch.tensor(lam_min, dtype=torch.float64)
    return hist

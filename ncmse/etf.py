"""Simplex equiangular tight frames (ETFs), orthogonal frames and the subspace 1^⊥.

Conventions (the book's page Notation): K classes, C = I_K − 11ᵀ/K is the centring matrix, whose range is 1^⊥.
A *simplex ETF* is a set of K vectors whose Gram matrix is a positive multiple of C: equal lengths,
pairwise cosines −1/(K−1).  Used by the chapter "Global optimality for d ≥ K−1".
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "centering_matrix",
    "centering_basis",
    "simplex_etf",
    "orthogonal_frame",
    "random_orthonormal",
    "is_simplex_etf",
    "coordinate_subspace",
    "random_subspace",
    "check_subspace",
    "projector",
    "argmax_lost",
    "random_projection_lost",
    "random_subspaces",
    "frame_geometry",
    "projector_fit",
    "projected_nc2",
]


def centering_matrix(K: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """C = I_K − 11ᵀ/K, shape (K, K): the orthogonal projector onto 1^⊥."""
    _check_K(K)
    return torch.eye(K, dtype=dtype, device=device) - torch.full((K, K), 1.0 / K, dtype=dtype, device=device)


def centering_basis(K: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """An orthonormal basis U of 1^⊥, shape (K, K−1), with U Uᵀ = C and Uᵀ U = I_{K−1}.

    Deterministic (Helmert's construction): column j is proportional to (1, …, 1, −j, 0, …, 0)
    with j ones, so that results built on it are reproducible without a seed.
    """
    _check_K(K)
    U = torch.zeros(K, K - 1, dtype=dtype, device=device)
    for j in range(1, K):
        U[:j, j - 1] = 1.0
        U[j, j - 1] = -float(j)
        U[:, j - 1] /= math.sqrt(j * (j + 1))
    return U


def simplex_etf(K: int, d: int | None = None, *, R: torch.Tensor | None = None, dtype=torch.float64,
                device=None) -> torch.Tensor:
    """Rows of unit length forming a simplex ETF in R^d, shape (K, d).

    Gram matrix = K/(K−1) · C (unit norms, cosines −1/(K−1)).  Needs d ≥ K−1.  ``R`` (d, K−1) with
    orthonormal columns places the frame in R^d (default: the first K−1 coordinate axes).
    """
    _check_K(K)
    d = K - 1 if d is None else d
    if d < K - 1:
        raise ValueError(f"a simplex ETF of K={K} vectors needs d ≥ K−1 = {K - 1}, got d={d}")
    U = centering_basis(K, dtype=dtype, device=device) * math.sqrt(K / (K - 1))
    R = _embedding(d, K - 1, R, dtype, device)
    return U @ R.T


def orthogonal_frame(K: int, d: int | None = None, *, R: torch.Tensor | None = None, dtype=torch.float64,
                     device=None) -> torch.Tensor:
    """K orthonormal rows in R^d, shape (K, d) (needs d ≥ K): the no-bias minimizer's geometry."""
    _check_K(K)
    d = K if d is None else d
    if d < K:
        raise ValueError(f"an orthogonal frame of K={K} vectors needs d ≥ K, got d={d}")
    return _embedding(d, K, R, dtype, device).T.clone()


def random_orthonormal(d: int, r: int, *, generator: torch.Generator | None = None, dtype=torch.float64,
                       device=None) -> torch.Tensor:
    """A Haar-random d×r matrix with orthonormal columns (QR of a Gaussian, signs fixed)."""
    if not 0 <= r <= d:
        raise ValueError(f"need 0 ≤ r ≤ d, got r={r}, d={d}")
    G = torch.randn(d, r, generator=generator, dtype=dtype, device=device)
    Q, Rr = torch.linalg.qr(G)
    return Q * torch.sign(torch.diagonal(Rr)).where(torch.diagonal(Rr) != 0, torch.ones((), dtype=dtype))


def is_simplex_etf(V: torch.Tensor, *, atol: float = 1e-8) -> bool:
    """Whether the rows of V (K, d) form a simplex ETF up to scale: V Vᵀ ∝ C."""
    K = V.shape[0]
    G = V @ V.T
    scale = torch.trace(G) / (K - 1)
    if scale <= 0:
        return False
    return bool(torch.allclose(G / scale, centering_matrix(K, dtype=G.dtype, device=G.device), atol=atol))


# ---------------------------------------------------------------- projections (chapter "d < K−1")
# A d-dimensional projection of the simplex ETF: the K vectors P_S (e_k − 1/K) = P_S e_k for a
# d-dimensional subspace S of 1^⊥, written in an orthonormal basis S (K, d) of that subspace: the
# rows of S.  Their Gram matrix is the projector P_S = S Sᵀ, a best rank-d approximation of C.

def coordinate_subspace(K: int, d: int, *, within_ones_perp: bool = True, dtype=torch.float64,
                        device=None) -> torch.Tensor:
    """A deterministic d-dimensional subspace, as orthonormal columns (K, d): the first d Helmert
    vectors (in 1^⊥), or the first d coordinate axes of R^K when ``within_ones_perp`` is False."""
    _check_K(K)
    m = K - 1 if within_ones_perp else K
    if not 1 <= d <= m:
        raise ValueError(f"need 1 ≤ d ≤ {m}, got d={d}")
    if within_ones_perp:
        return centering_basis(K, dtype=dtype, device=device)[:, :d].clone()
    return torch.eye(K, d, dtype=dtype, device=device)


def random_subspace(K: int, d: int, *, within_ones_perp: bool = True, generator: torch.Generator | None = None,
                    dtype=torch.float64, device=None) -> torch.Tensor:
    """A uniformly (Haar) random d-dimensional subspace of 1^⊥ (or of R^K), orthonormal columns (K, d)."""
    _check_K(K)
    m = K - 1 if within_ones_perp else K
    if not 1 <= d <= m:
        raise ValueError(f"need 1 ≤ d ≤ {m}, got d={d}")
    basis = centering_basis(K, dtype=dtype, device=device) if within_ones_perp else \
        torch.eye(K, dtype=dtype, device=device)
    return basis @ random_orthonormal(m, d, generator=generator, dtype=dtype, device=device)


def check_subspace(S, K: int, d: int, *, within_ones_perp: bool = True, atol: float = 1e-10) -> torch.Tensor:
    """Validate a subspace given by orthonormal columns (K, d), in 1^⊥ if asked; return it as float64."""
    S = torch.as_tensor(S, dtype=torch.float64)
    if S.shape != (K, d):
        raise ValueError(f"S must have shape (K, d) = ({K}, {d}), got {tuple(S.shape)}")
    if not torch.allclose(S.T @ S, torch.eye(d, dtype=S.dtype, device=S.device), atol=atol):
        raise ValueError("S must have orthonormal columns")
    if within_ones_perp and float(S.sum(0).abs().max()) > atol * K:
        raise ValueError("S must lie in 1^⊥ (its columns must sum to 0) when the model has a bias")
    return S


def projector(S: torch.Tensor) -> torch.Tensor:
    """P_S = S Sᵀ (K, K) for orthonormal columns S (..., K, d)."""
    return S @ S.transpose(-1, -2)


def argmax_lost(G: torch.Tensor) -> torch.Tensor:
    """Which classes lose the argmax at their own class mean, for class-mean logits G (..., K, K)
    whose column k holds the logits of class k's mean (up to a shared constant, as at an MSE
    minimizer where G ∝ P_S).  Returns a bool tensor (..., K): True where some j ≠ k has
    G[j, k] > G[k, k] (ties, of probability 0 for random S, count as kept)."""
    own = torch.diagonal(G, dim1=-2, dim2=-1)                       # (..., K)
    others = G.clone()
    others.diagonal(dim1=-2, dim2=-1).fill_(-torch.inf)
    return others.amax(-2) > own


def projector_fit(G: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """How far Gram matrices G (..., K, K) are from a scaled rank-d projection of the ETF.

    Returns P̂ = G · d/tr G, max|P̂² − P̂| (...) (0 for a projector) and ‖C − P̂‖²_F (...), which is
    K − 1 − d, the Eckart–Young distance, for a projector onto a subspace of 1^⊥.
    """
    P = G * d / G.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    idempotency = (P @ P - P).abs().amax((-1, -2))
    distance = torch.linalg.matrix_norm(centering_matrix(G.shape[-1], dtype=G.dtype, device=G.device) - P) ** 2
    return P, idempotency, distance


def random_subspaces(K: int, d: int, count: int, *, generator: torch.Generator | None = None,
                     dtype=torch.float64, device=None) -> torch.Tensor:
    """``count`` independent Haar-random d-dimensional subspaces of 1^⊥ at once: (count, K, d)."""
    _check_K(K)
    if not 1 <= d <= K - 1:
        raise ValueError(f"need 1 ≤ d ≤ K−1 = {K - 1}, got d={d}")
    G = torch.randn(count, K - 1, d, generator=generator, dtype=dtype, device=device)
    Q, _ = torch.linalg.qr(G)
    return centering_basis(K, dtype=dtype, device=device) @ Q


def random_projection_lost(K: int, d: int, count: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Monte Carlo over global MSE minimizers with a free bias at d < K−1 (class-mean logits ∝ P_S):
    for ``count`` Haar-random subspaces S of 1^⊥, which classes lose the argmax at their own mean,
    a bool tensor (count, K) (:func:`argmax_lost` of :func:`projector` of :func:`random_subspaces`)."""
    return argmax_lost(projector(random_subspaces(K, d, count, generator=generator)))


def frame_geometry(V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lengths and pairwise angles of a frame of K vectors, the rows of V (..., K, d).

    Returns (lengths (..., K) divided by their mean, angles in degrees (..., K(K−1)/2) over pairs
    k < k′).  For a simplex ETF every length is 1 and every angle arccos(−1/(K−1)).
    """
    lengths = V.norm(dim=-1)
    unit = V / lengths.clamp_min(1e-300)[..., None]
    cos = (unit @ unit.transpose(-1, -2)).clamp(-1, 1)
    K = V.shape[-2]
    iu = torch.triu_indices(K, K, offset=1)
    angles = torch.rad2deg(torch.arccos(cos[..., iu[0], iu[1]]))
    return lengths / lengths.mean(-1, keepdim=True), angles


def _embedding(d: int, r: int, R, dtype, device) -> torch.Tensor:
    if R is None:
        return torch.eye(d, r, dtype=dtype, device=device)
    R = torch.as_tensor(R, dtype=dtype, device=device)
    if R.shape != (d, r):
        raise ValueError(f"R must have shape ({d}, {r}), got {tuple(R.shape)}")
    if not torch.allclose(R.T @ R, torch.eye(r, dtype=dtype, device=device), atol=1e-10):
        raise ValueError("R must have orthonormal columns")
    return R


def _check_K(K: int) -> None:
    if not isinstance(K, int) or K < 2:
        raise ValueError(f"K (number of classes) must be an integer ≥ 2, got {K!r}")


def projected_nc2(d: float, K: int) -> float:
    """NC2 (= NC2_M = NC3) of a simplex ETF of K classes projected onto a d-dimensional subspace of
    1^⊥, d ≤ K−1: ‖P_S/√d − C/√(K−1)‖_F = √(2 − 2√(d/(K−1))), the same for every subspace S (chapter
    "d < K − 1"); 0 at d = K−1.  ``d`` may be fractional (for a smooth curve)."""
    if not 1 <= d <= K - 1:
        raise ValueError(f"need 1 ≤ d ≤ K−1 = {K - 1}, got d={d}")
    return math.sqrt(2 - 2 * math.sqrt(d / (K - 1)))

"""Closed-form global minimizers of the UFM and their regimes (chapters "Global optimality for
d ≥ K−1" and "d < K−1").

Every function takes the problem (a :class:`ncmse.ufm.UFM`) as first argument, e.g.
``global_minimum(problem)``, ``global_minimizer(problem, S=...)``, ``regime(problem)``.

Closed form (chapter "Global optimality for d ≥ K−1").  The derivation, in three steps:

1. For a fixed product P = WH, min λ_W/2‖W‖² + λ_H/2‖H‖² over factorizations with inner dimension
   d ≥ rank P equals √(λ_W λ_H) ‖P‖_* (nuclear norm), attained by the balanced factorization
   W = U Σ^{1/2} (λ_H/λ_W)^{1/4} Rᵀ, H = R Σ^{1/2} (λ_W/λ_H)^{1/4} Vᵀ of the SVD P = U Σ Vᵀ.
   For every d the value is ≥ that bound, so the convex problem in (P, b) is a lower bound.
2. The convex problem is invariant under permutations of samples within a class and, jointly, of
   classes; averaging a minimizer over these groups keeps it optimal.  So there is a minimizer with
   P = Q Y, Q = a C + (e/K) 11ᵀ (a: separation of class means in 1^⊥, e: a shared component) and
   b = (u/K) 1, with ‖P‖_* = √n ((K−1)|a| + |e|).
3. With t = (e + u − a)/K the off-target logit (z = a e_k + t 1 for a sample of class k, so z_k =
   a + t, z_j = t) and m = a + K t = e + u, the problem becomes the two-variable convex problem

       G(a, t) = ½ α (a + t − M)² + ½ (K−1) t² + λ (K−1) a + φ(m),   λ = √(n λ_W λ_H),  a ≥ 0,

   where φ(m) = min_u λ|m − u| + λ_b u²/(2K) is how the shared part m is best split between the
   product (e) and the bias (u): φ = 0 with a free bias (λ_b = 0, u = m); the Huber function with
   threshold κ = λK/λ_b for a regularized bias; λ|m| without bias (u = 0).  G is piecewise quadratic;
   its minimizer is found exactly by enumerating the pieces (:func:`reduced_minimizer`).

The minimizer is attained by the UFM when rank Q ≤ d: rank K−1 in the ETF regime, K when the shared
component is on (needs d ≥ K), 0 in the trivial regime.

Rank-constrained closed form (chapter "d < K−1").  A minimizer of rank K−1 (bias) or K (no bias) does
not fit in a smaller d.  For α = 1 (MSE, any target M) with a free bias or no bias the loss is
unitarily invariant and the rank-constrained problem is solved by a truncated, soft-thresholded SVD:
Q = a P_S with P_S the projector on any d-dimensional subspace S of 1^⊥ (bias) or of R^K (no bias),
and a = max(0, M − Kλ).  Otherwise no closed form is implemented here and an error says so.

The cross-entropy UFM (:class:`ncmse.ufm.CrossEntropyUFM`) has no closed form here: the functions
that need one raise NotImplementedError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import etf
from .metrics import nc_metrics
from .ufm import UFM, CrossEntropyUFM, UFMSolution, solve_batch

__all__ = ["ReducedMinimizer", "reduced_minimizer", "reduced", "threshold", "shared_threshold",
           "class_mean_cosine", "minimizer_rank", "regime", "global_minimum", "global_minimizer",
           "nc2_at_minimum", "low_rank_a", "balanced_factors", "summarize", "compare_with_solver", "scan"]


@dataclass(frozen=True)
class ReducedMinimizer:
    """The symmetric global minimizer of the reduced problem G(a, t) (module docstring, step 3).

    a: eigenvalue of Q on 1^⊥ (class-mean separation, ≥ 0); e: eigenvalue of Q along 1 (shared
    component); u: K × bias (b = u/K · 1); t: off-target logit; value: the global minimum of f.
    """

    a: float
    e: float
    u: float
    t: float
    value: float


def reduced_minimizer(K: int, n: int, lambda_W: float, lambda_H: float, lambda_b: float = 0.0,
                      bias: bool = True, alpha: float = 1.0, M: float = 1.0) -> ReducedMinimizer:
    """Exact minimizer of G(a, t) by enumeration of its quadratic pieces (see module docstring).

    Each piece of φ is ½ p m² + q m + r on an interval of m; on a piece, G is a strictly convex
    quadratic whose stationary point solves a 2×2 linear system (or a 1×1 one on the face a = 0, or on
    the kink m = 0 when there is no bias).  The candidates that lie in their piece are feasible points;
    because G is convex the global minimizer is among them, and the smallest value wins.
    """
    lam = math.sqrt(n * lambda_W * lambda_H)
    # Pieces of φ: (p, q, r, m_lo, m_hi, u(m)) with u the bias part of the shared component.
    if bias and lambda_b == 0.0:
        pieces = [(0.0, 0.0, 0.0, -math.inf, math.inf, lambda m: m)]
    elif bias:
        kappa = lam * K / lambda_b
        pieces = [
            (lambda_b / K, 0.0, 0.0, -kappa, kappa, lambda m: m),
            (0.0, lam, -lam * kappa / 2, kappa, math.inf, lambda m: kappa),
            (0.0, -lam, -lam * kappa / 2, -math.inf, -kappa, lambda m: -kappa),
        ]
    else:
        pieces = [
            (0.0, lam, 0.0, 0.0, math.inf, lambda m: 0.0),
            (0.0, -lam, 0.0, -math.inf, 0.0, lambda m: 0.0),
        ]

    def phi(m: float) -> float:
        if bias and lambda_b == 0.0:
            return 0.0
        if bias:
            return lambda_b * m * m / (2 * K) if abs(m) <= kappa else lam * abs(m) - lam * kappa / 2
        return lam * abs(m)

    def G(a: float, t: float) -> float:
        return 0.5 * alpha * (a + t - M) ** 2 + 0.5 * (K - 1) * t * t + lam * (K - 1) * a + phi(a + K * t)

    def u_of(m: float) -> float:
        for _, _, _, lo, hi, u in pieces:
            if lo - 1e-15 <= m <= hi + 1e-15:
                return u(m)
        raise AssertionError("m outside every piece")

    candidates: list[tuple[float, float]] = []
    for p, q, _r, lo, hi, _u in pieces:
        # Interior of a ≥ 0: ∇G = 0.
        A = [[alpha + p, alpha + p * K], [alpha + p * K, alpha + (K - 1) + p * K * K]]
        rhs = [alpha * M - lam * (K - 1) - q, alpha * M - q * K]
        det = A[0][0] * A[1][1] - A[0][1] * A[1][0]
        a = (rhs[0] * A[1][1] - A[0][1] * rhs[1]) / det
        t = (A[0][0] * rhs[1] - A[1][0] * rhs[0]) / det
        candidates.append((a, t))
        # Face a = 0.
        candidates.append((0.0, (alpha * M - q * K) / (alpha + (K - 1) + p * K * K)))
        del lo, hi
    if not bias:  # kink m = 0, i.e. t = −a/K (the class means form an ETF without shared part)
        a = K * (alpha * M - lam * K) / (alpha * (K - 1) + 1)
        candidates += [(max(a, 0.0), -max(a, 0.0) / K), (0.0, 0.0)]

    best = None
    for a, t in candidates:
        if a < -1e-14:
            continue
        a = max(a, 0.0)
        m = a + K * t
        if not any(lo - 1e-12 <= m <= hi + 1e-12 for _, _, _, lo, hi, _ in pieces):
            continue
        value = G(a, t)
        if best is None or value < best[2] - 1e-15 * max(1.0, abs(value)):
            best = (a, t, value)
    assert best is not None
    a, t, value = best
    m = a + K * t
    u = u_of(m)
    e = m - u
    # Snap round-off: e is exactly 0 in the ETF piece.
    if abs(e) < 1e-14 * max(1.0, abs(m)):
        e = 0.0
    return ReducedMinimizer(a=a, e=e, u=u, t=t, value=value)


# ------------------------------------------------------------------ the reduced problem
def reduced(problem: UFM) -> ReducedMinimizer:
    """The reduced closed-form solution (a, e, u, t, value) of ``problem``; module docstring, step 3."""
    if isinstance(problem, CrossEntropyUFM):
        raise NotImplementedError("no closed form is implemented for the cross-entropy UFM; use solve()")
    return reduced_minimizer(problem.K, problem.n, problem.lambda_W, problem.lambda_H, problem.lambda_b,
                             problem.bias, problem.alpha, problem.M)


def threshold(problem: UFM) -> float:
    """λ_c: the minimizer is 0 (trivial) iff √(n λ_W λ_H) ≥ λ_c.

    With a free bias λ_c = αM/(α + K − 1) (MSE: 1/K); without bias λ_c = αM/K.  With a
    regularized bias the boundary also depends on λ_b; use :func:`regime`.
    """
    if problem.bias and problem.lambda_b > 0:
        raise ValueError("with a regularized bias the threshold depends on lambda_b; use regime()")
    a, M = problem.alpha, problem.M
    return a * M / (a + problem.K - 1) if problem.bias else a * M / problem.K


def shared_threshold(problem: UFM) -> float:
    """λ_b*: with a regularized bias, the minimizer leaves the ETF (a shared component e ≠ 0
    appears in W H) iff λ_b > λ_b* = λ K α / (α M − λ K); ∞ when α M ≤ λ K.

    Derivation: on the ETF piece the bias carries the shared part m = a + K t; the piece ends where
    the Huber slope λ_b m / K reaches λ.  There ∇G = 0 gives t = 0 and a = M − λK/α = m = λK/λ_b.
    """
    if not problem.bias:
        raise ValueError("without bias there is no bias regularization threshold")
    lam = problem.lam
    gap = problem.alpha * problem.M - lam * problem.K
    return math.inf if gap <= 0 else lam * problem.K * problem.alpha / gap


def class_mean_cosine(problem: UFM) -> float:
    """Predicted cosine between two class means (or two rows of W) at the minimizer.

    The Gram matrix of the class means is ∝ a C + (|e|/K) 11ᵀ, so the cosine is
    (|e| − a)/((K−1) a + |e|): −1/(K−1) for an ETF, 0 for an orthogonal frame, nan if trivial.
    Not defined for the projected regimes (d too small), where the cosines differ between pairs.
    """
    if _low_rank(problem):
        raise ValueError("class means of a projected frame have unequal cosines; see ncmse.etf")
    r = reduced(problem)
    denom = (problem.K - 1) * r.a + abs(r.e)
    return math.nan if denom == 0 else (abs(r.e) - r.a) / denom


# ------------------------------------------------------- rank-constrained (chapter "d < K−1")
def _low_rank(problem: UFM) -> bool:
    """Whether the closed form is the rank-constrained one (d below the relaxation's rank)."""
    r = reduced(problem)
    full_rank = (problem.K - 1) * (r.a > 0) + (r.e != 0)
    return full_rank > problem.d


def _ambient_dim(problem: UFM) -> int:
    """Dimension of the space the projected frame lives in: K−1 (1^⊥, bias) or K (no bias)."""
    return problem.K - 1 if problem.bias else problem.K


def _low_rank_supported(problem: UFM) -> bool:
    return problem.alpha == 1.0 and problem.lambda_b == 0.0


def low_rank_a(problem: UFM) -> float:
    """a = max(0, M − Kλ): the shrunk separation of every singular direction that a rank-constrained
    minimizer (or a critical point, ``ncmse.saddles``) keeps (module docstring)."""
    lam = problem.lam
    return max(0.0, problem.M - problem.K * lam)


# ------------------------------------------------------------------ regimes
def minimizer_rank(problem: UFM) -> int:
    """rank of W H at the closed-form minimizer: (K−1)[a > 0] + [e ≠ 0], or d where that does not fit."""
    r = reduced(problem)
    if _low_rank(problem):
        return problem.d if low_rank_a(problem) > 0 else 0
    return (problem.K - 1) * (r.a > 0) + (r.e != 0)


def regime(problem: UFM) -> str:
    """'trivial' (W = H = 0), 'etf' (class means and rows of W: a simplex ETF), 'etf+shared'
    (ETF plus a component shared by all classes, bias regularized), 'orthogonal' (no bias:
    orthogonal frame), 'shared' (rank one: all class means equal), or, where d is too small for
    these, 'projected etf' / 'projected orthogonal' (a d-dimensional projection of them)."""
    r = reduced(problem)
    if _low_rank(problem) and _low_rank_supported(problem):
        if low_rank_a(problem) == 0:
            return "trivial"
        return "projected etf" if problem.bias else "projected orthogonal"
    if r.a == 0:
        return "trivial" if r.e == 0 else "shared"
    if r.e == 0:
        return "etf"
    return "etf+shared" if problem.bias else "orthogonal"


def _require_closed_form(problem: UFM) -> ReducedMinimizer:
    r = reduced(problem)
    if _low_rank(problem) and not _low_rank_supported(problem):
        need = (problem.K - 1) * (r.a > 0) + (r.e != 0)
        raise NotImplementedError(
            f"the rank-{need} minimizer of the convex relaxation ({regime(problem)} regime) does not fit "
            f"in d={problem.d}; the rank-constrained closed form is implemented for α = 1 with a free "
            f"bias or no bias (here α={problem.alpha:g}, λ_b={problem.lambda_b:g})")
    return r


# ------------------------------------------------------------------ minimum and minimizers
def global_minimum(problem: UFM) -> float:
    """Closed-form min f (module docstring; chapter "d < K−1" for the rank-constrained case).

    Rank-constrained (α = 1): f* = [d (a − M)² + M² (m − d)]/(2K) + λ d a with a = max(0, M − Kλ),
    m = K−1 (bias) or K (no bias).  Raises where no closed form is implemented.
    """
    r = _require_closed_form(problem)
    if not _low_rank(problem):
        return r.value
    a, m, d, K, M = low_rank_a(problem), _ambient_dim(problem), problem.d, problem.K, problem.M
    lam = problem.lam
    return (d * (a - M) ** 2 + M**2 * (m - d)) / (2 * K) + lam * d * a


def global_minimizer(problem: UFM, R: torch.Tensor | None = None, S: torch.Tensor | None = None):
    """A closed-form global minimizer (W (K, d), H (d, N), b (K,) or None), float64.

    The minimizers are parameterized by a rotation of feature space ``R`` (d, r) with orthonormal
    columns, r = rank of W H (default: the first r coordinate axes), and, when d is below the
    relaxation's rank, by the subspace ``S`` (K, d) with orthonormal columns (in 1^⊥ with a bias)
    that the frame is projected onto (default :func:`ncmse.etf.coordinate_subspace`; a random
    one: :func:`ncmse.etf.random_subspace`).  Columns of H are equal within each class (NC1); in
    the ETF regime the rows of W form a simplex ETF with w_k ∝ h̄_k (NC2, NC3) and
    λ_W‖W‖² = λ_H‖H‖²; in the projected regime W Wᵀ ∝ P_S = S Sᵀ.
    """
    r = _require_closed_form(problem)
    K = problem.K
    if _low_rank(problem):
        if S is None:
            S = etf.coordinate_subspace(K, problem.d, within_ones_perp=problem.bias)
        S = etf.check_subspace(S, K, problem.d, within_ones_perp=problem.bias)
        a = low_rank_a(problem)
        b = torch.full((K,), problem.M / K, dtype=torch.float64) if problem.bias else None
        return (*balanced_factors(problem, S, torch.full((problem.d,), a, dtype=torch.float64), R), b)
    if S is not None:
        raise ValueError("S selects a projection only when d is below the minimizer's rank")
    U = etf.centering_basis(K)
    v = torch.full((K, 1), 1.0 / math.sqrt(K), dtype=torch.float64)
    cols, q = [], []
    if r.a > 0:
        cols.append(U)
        q += [r.a] * (K - 1)
    if r.e != 0:
        cols.append(v)
        q.append(r.e)
    b = torch.full((K,), r.u / K, dtype=torch.float64) if problem.bias else None
    if not q:
        return (torch.zeros(K, problem.d, dtype=torch.float64), torch.zeros(problem.d, problem.N, dtype=torch.float64),
                b)
    return (*balanced_factors(problem, torch.cat(cols, 1), torch.tensor(q, dtype=torch.float64), R), b)


def balanced_factors(problem: UFM, L: torch.Tensor, q: torch.Tensor, R) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced factorization W H = Q Y of class-mean logits Q = Σ_i q_i l_i l_iᵀ (L: (K, r)
    orthonormal columns l_i, q: (r,)): singular values |q_i|√n, left vectors sign(q_i) l_i, right
    vectors Yᵀ l_i/√n; W = L_± Σ^{1/2} (λ_H/λ_W)^{1/4} Rᵀ (K, d) and H = R Σ^{1/2} (λ_W/λ_H)^{1/4} Vᵀ
    (d, N), with ``R`` (d, r) orthonormal columns (None: the first r coordinate axes).  Module
    docstring, step 1."""
    n, r = problem.n, L.shape[1]
    V = problem.Y().T @ L / math.sqrt(n)                         # (N, r)
    s = (q.abs() * math.sqrt(n)).sqrt()
    R = etf._embedding(problem.d, r, R, torch.float64, None)
    ratio = (problem.lambda_H / problem.lambda_W) ** 0.25
    W = (L * torch.sign(q) * (s * ratio)) @ R.T
    H = (R * (s / ratio)) @ V.T
    return W, H


def nc2_at_minimum(problem: UFM) -> float:
    """NC2 (= NC2_M = NC3) at every global minimizer: 0 for the ETF; for the projected ETF
    (d < K−1) ‖P_S/√d − C/√(K−1)‖_F = √(2 − 2√(d/(K−1))), the same for every subspace S."""
    name = regime(problem)
    if name == "etf":
        return 0.0
    if name == "projected etf":
        return etf.projected_nc2(problem.d, problem.K)
    raise ValueError(f"NC2 at the minimum is derived for the 'etf' and 'projected etf' regimes, not {name!r}")


# ------------------------------------------------------------------ solutions against the closed form
def summarize(problem: UFM, sol: UFMSolution) -> dict[str, torch.Tensor]:
    """Per-initialization diagnostics of :meth:`ncmse.ufm.UFM.solve`'s output, each of shape (B,).

    rel_gap: (f − f*)/|f*| against :func:`global_minimum`; NC metrics of (H, W, b)
    (``ncmse.metrics``); balance: λ_W‖W‖² / (λ_H‖H‖²) (1 at every non-zero critical point).
    """
    f_star = global_minimum(problem)
    labels = problem.labels()
    rows = [nc_metrics(sol.H[i].T, labels, sol.W[i], None if sol.b is None else sol.b[i])
            for i in range(len(sol))]
    out = {k: torch.tensor([r[k] for r in rows], dtype=torch.float64) for k in rows[0]}
    out["rel_gap"] = (sol.objective - f_star) / abs(f_star)
    out["balance"] = problem.lambda_W * (sol.W**2).sum((-1, -2)) / (problem.lambda_H * (sol.H**2).sum((-1, -2)))
    out["grad_norm"] = sol.grad_norm
    return out


def compare_with_solver(problem: UFM, seed: int = 0, n_init: int = 4) -> dict:
    """Solve from ``n_init`` initializations and compare the best run with the closed form.

    Returns regime, rank of W H, the predicted and measured mean cosine between class means,
    the largest relative objective gap over all runs, and the solver's class-mean Gram matrix
    H̄ᵀH̄ (K, K).
    """
    sol = problem.solve(seed=seed, n_init=n_init)
    _, H, _ = sol.best()
    means = problem.class_means(H).T                                  # (K, d)
    cos = torch.nn.functional.cosine_similarity(means[:, None], means[None], dim=2)
    off = cos[~torch.eye(problem.K, dtype=torch.bool)]
    f_star = global_minimum(problem)
    return {"regime": regime(problem), "rank": minimizer_rank(problem),
            "cosine_theory": class_mean_cosine(problem), "cosine_solver": float(off.mean()),
            "cosine_spread": float(off.max() - off.min()),
            "rel_gap": float(((sol.objective - f_star) / f_star).abs().max()),
            "class_mean_gram": means @ means.T}


def scan(problems: list[UFM], *, n_init: int = 4, seed: int = 0, progress: bool = False,
         desc: str = "UFM scan") -> list[dict[str, float]]:
    """Solve each UFM of a list (e.g. a grid of λ's) and compare with its closed form.

    Problems that differ only in their λ's are solved together in one batch
    (:func:`ncmse.ufm.solve_batch`).  Returns one dict per problem: the measured reduced coordinates
    a, e, u of the best of ``n_init`` initializations (:meth:`ncmse.ufm.UFM.measured_reduced`), its
    objective ``f``, and the closed-form ``f_star``, ``a_star``, ``e_star``, ``u_star`` and ``regime``.
    """
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(problems):
        groups.setdefault((p.K, p.n, p.d, p.bias, p.alpha, p.M), []).append(i)
    solutions: list[UFMSolution | None] = [None] * len(problems)
    for idx in groups.values():
        for i, sol in zip(idx, solve_batch([problems[i] for i in idx], seed=seed, n_init=n_init,
                                           progress=progress, desc=desc), strict=True):
            solutions[i] = sol
    out = []
    for p, sol in zip(problems, solutions, strict=True):
        W, H, b = sol.best()
        m = p.measured_reduced(W, H, b)
        r = reduced(p)
        out.append({"a": float(m["a"]), "e": float(m["e"]), "u": float(m["u"]),
                    "f": float(sol.objective.min()), "f_star": r.value, "a_star": r.a, "e_star": r.e,
                    "u_star": r.u, "regime": regime(p)})
    return out

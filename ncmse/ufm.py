"""The unconstrained features model (UFM) under regularized (rescaled) MSE.

    f(W, H, b) = 1/N Σ_{k,i} ℓ(W h_{k,i} + b, k) + λ_W/2 ‖W‖²_F + λ_H/2 ‖H‖²_F + λ_b/2 ‖b‖²

with ℓ the rescaled MSE ½[α(z_k − M)² + Σ_{j≠k} z_j²] of ``ncmse.losses`` (α = M = 1: MSE).
Shapes: W (K, d) with rows w_k, H (d, N) with columns h_{k,i} ordered class by class (N = K n),
b (K,).  Leading batch dimensions are allowed in the batched functions.

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
component is on (needs d ≥ K), 0 in the trivial regime.  Otherwise no closed form is implemented here
and an error says so.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from . import etf
from .checks import as_float, as_int, scalar
from .losses import cross_entropy, rescaled_mse, rescaled_mse_grad
from .metrics import nc_metrics
from .optim import gradient_descent, lbfgs

__all__ = ["UFM", "CrossEntropyUFM", "UFMSolution", "ReducedMinimizer", "reduced_minimizer", "solve_batch", "scan",
           "descent_history", "escape_saddle"]


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


@dataclass
class UFMSolution:
    """Output of :meth:`UFM.solve` for B random initializations.

    W (B, K, d), H (B, d, N), b (B, K) or None, objective (B,), grad_norm (B,) (Euclidean norm of the
    full gradient), n_iter (B,), converged (B,).
    """

    W: torch.Tensor
    H: torch.Tensor
    b: torch.Tensor | None
    objective: torch.Tensor
    grad_norm: torch.Tensor
    n_iter: torch.Tensor
    converged: torch.Tensor

    def __len__(self) -> int:
        return self.W.shape[0]

    def best(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(W, H, b) of the initialization with the smallest objective."""
        i = int(torch.argmin(self.objective))
        return self.W[i], self.H[i], None if self.b is None else self.b[i]


class UFM:
    """The regularized (rescaled-)MSE unconstrained features model (module docstring).

    Parameters follow the paper's notation: K classes, n samples per class, feature dimension d,
    regularization λ_W, λ_H (> 0) and λ_b (≥ 0, only with ``bias=True``), rescaling α, M (> 0).
    """

    def __init__(self, K: int, n: int, d: int, lambda_W: float, lambda_H: float, lambda_b: float = 0.0,
                 bias: bool = True, alpha: float = 1.0, M: float = 1.0):
        for name, v in (("K", K), ("n", n), ("d", d)):
            if isinstance(v, bool) or not isinstance(scalar(v), numbers.Integral):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        K, n, d = as_int("K", K), as_int("n", n), as_int("d", d)
        if K < 2:
            raise ValueError(f"K must be ≥ 2, got {K}")
        if n < 1:
            raise ValueError(f"n must be ≥ 1, got {n}")
        if d < 1:
            raise ValueError(f"d must be ≥ 1, got {d}")
        lambda_W = as_float("lambda_W", lambda_W, low=0, low_open=True)
        lambda_H = as_float("lambda_H", lambda_H, low=0, low_open=True)
        lambda_b = as_float("lambda_b", lambda_b, low=0)
        if not bias and lambda_b != 0:
            raise ValueError("lambda_b > 0 needs bias=True (there is no bias to regularize)")
        alpha = as_float("alpha", alpha, low=0, low_open=True)
        M = as_float("M", M, low=0, low_open=True)
        self.K, self.n, self.d = K, n, d
        self.N = K * n
        self.lambda_W, self.lambda_H, self.lambda_b = float(lambda_W), float(lambda_H), float(lambda_b)
        self.bias, self.alpha, self.M = bool(bias), float(alpha), float(M)

    def __repr__(self) -> str:
        return (f"UFM(K={self.K}, n={self.n}, d={self.d}, lambda_W={self.lambda_W:g}, "
                f"lambda_H={self.lambda_H:g}, lambda_b={self.lambda_b:g}, bias={self.bias}, "
                f"alpha={self.alpha:g}, M={self.M:g})")

    # ------------------------------------------------------------------ data
    def labels(self, device=None) -> torch.Tensor:
        """Class of each column of H, shape (N,): 0…0, 1…1, …, (K−1)…(K−1), n of each."""
        return torch.arange(self.K, device=device).repeat_interleave(self.n)

    def Y(self, *, dtype=torch.float64, device=None) -> torch.Tensor:
        """Targets Y = I_K ⊗ 1_nᵀ, shape (K, N)."""
        return torch.eye(self.K, dtype=dtype, device=device).repeat_interleave(self.n, dim=1)

    @property
    def lam(self) -> float:
        """λ = √(n λ_W λ_H): the one combination of λ_W, λ_H that the minimizers depend on."""
        return math.sqrt(self.n * self.lambda_W * self.lambda_H)

    def class_means(self, H) -> torch.Tensor:
        """Class means h̄_k of the columns of H (..., d, N), as columns: shape (..., d, K)."""
        H = torch.as_tensor(H, dtype=torch.float64)
        return H.unflatten(-1, (self.K, self.n)).mean(-1)

    # ------------------------------------------------------------- objective
    def _check(self, W, H, b):
        W = torch.as_tensor(W, dtype=torch.float64)
        H = torch.as_tensor(H, dtype=torch.float64, device=W.device)
        if W.shape[-2:] != (self.K, self.d):
            raise ValueError(f"W must have shape (..., K, d) = (..., {self.K}, {self.d}), got {tuple(W.shape)}")
        if H.shape[-2:] != (self.d, self.N):
            raise ValueError(f"H must have shape (..., d, N) = (..., {self.d}, {self.N}), got {tuple(H.shape)}")
        if self.bias:
            b = torch.zeros(W.shape[:-1], dtype=W.dtype, device=W.device) if b is None else \
                torch.as_tensor(b, dtype=torch.float64, device=W.device)
            if b.shape[-1:] != (self.K,):
                raise ValueError(f"b must have shape (..., K) = (..., {self.K}), got {tuple(b.shape)}")
        elif b is not None:
            raise ValueError("this UFM has no bias (bias=False); pass b=None")
        return W, H, b

    def logits(self, W, H, b=None) -> torch.Tensor:
        """Z = W H + b 1ᵀ, shape (..., K, N)."""
        W, H, b = self._check(W, H, b)
        Z = W @ H
        return Z if b is None else Z + b[..., :, None]

    def value(self, W, H, b=None, *, lambdas=None) -> torch.Tensor:
        """f(W, H, b) as a tensor of shape (...) (batched; differentiable).

        ``lambdas`` = (λ_W, λ_H, λ_b) overrides the problem's regularization, each a float or a
        tensor of the batch shape (...): used to solve a grid of λ's in one batch (:func:`solve_batch`).
        """
        W, H, b = self._check(W, H, b)
        lam_W, lam_H, lam_b = self._lambdas(lambdas)
        Z = self.logits(W, H, b)
        labels = self.labels(Z.device)
        f = self._sample_loss(Z.transpose(-1, -2), labels).mean(-1)
        f = f + 0.5 * lam_W * (W**2).sum((-1, -2)) + 0.5 * lam_H * (H**2).sum((-1, -2))
        if b is not None:
            f = f + 0.5 * lam_b * (b**2).sum(-1)
        return f

    def _sample_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample loss ℓ of logits (..., N, K): here the rescaled MSE of ``ncmse.losses``."""
        return rescaled_mse(logits, labels, self.alpha, self.M)

    def _sample_loss_grad(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """∂ℓ/∂z, shape (..., N, K)."""
        return rescaled_mse_grad(logits, labels, self.alpha, self.M)

    def _lambdas(self, lambdas):
        if lambdas is None:
            return self.lambda_W, self.lambda_H, self.lambda_b
        if len(lambdas) != 3:
            raise ValueError("lambdas must be (lambda_W, lambda_H, lambda_b)")
        return lambdas

    def value_and_gradient_packed(self, x: torch.Tensor, *, lambdas=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(f, ∇f) at packed points x (..., n_params), the logits computed once: the solvers' inner loop."""
        W, H, b = self.unpack(x)
        lam_W, lam_H, lam_b = self._lambdas(lambdas)
        Z = W @ H if b is None else W @ H + b[..., :, None]
        Zt, labels = Z.transpose(-1, -2), self.labels(Z.device)
        f = self._sample_loss(Zt, labels).mean(-1)
        f = f + 0.5 * lam_W * (W**2).sum((-1, -2)) + 0.5 * lam_H * (H**2).sum((-1, -2))
        if b is not None:
            f = f + 0.5 * lam_b * (b**2).sum(-1)
        if isinstance(lam_W, torch.Tensor):   # per-problem λ's: broadcast over the matrix dims
            lam_W, lam_H, lam_b = lam_W[..., None, None], lam_H[..., None, None], lam_b[..., None]
        GZ = self._sample_loss_grad(Zt, labels).transpose(-1, -2) / self.N
        gW = GZ @ H.transpose(-1, -2) + lam_W * W
        gH = W.transpose(-1, -2) @ GZ + lam_H * H
        gb = None if b is None else GZ.sum(-1) + lam_b * b
        return f, self.pack(gW, gH, gb)

    def objective(self, W, H, b=None) -> float:
        """f(W, H, b) for one point: W (K, d), H (d, N), b (K,) or None."""
        v = self.value(W, H, b)
        if v.ndim != 0:
            raise ValueError("objective takes one point; use value() for batches")
        return float(v)

    def gradient(self, W, H, b=None, *, lambdas=None):
        """Exact gradient (∇_W f, ∇_H f, ∇_b f) (batched); ∇_b f is None without bias.

        With G_Z = (1/N) ω ⊙ (Z − M Y) (ω = α on targets, 1 elsewhere):
        ∇_W = G_Z Hᵀ + λ_W W, ∇_H = Wᵀ G_Z + λ_H H, ∇_b = G_Z 1 + λ_b b.  ``lambdas`` as in :meth:`value`.
        """
        W, H, b = self._check(W, H, b)
        _, g = self.value_and_gradient_packed(self.pack(W, H, b), lambdas=lambdas)
        return self.unpack(g)

    # --------------------------------------------------------------- packing
    @property
    def n_params(self) -> int:
        return self.K * self.d + self.d * self.N + (self.K if self.bias else 0)

    def pack(self, W, H, b=None) -> torch.Tensor:
        """Flatten (W, H, b) into vectors of shape (..., n_params)."""
        parts = [W.flatten(-2), H.flatten(-2)] + ([b] if self.bias else [])
        return torch.cat(parts, -1)

    def unpack(self, x: torch.Tensor):
        """Inverse of :meth:`pack`."""
        Kd, dN = self.K * self.d, self.d * self.N
        W = x[..., :Kd].unflatten(-1, (self.K, self.d))
        H = x[..., Kd:Kd + dN].unflatten(-1, (self.d, self.N))
        b = x[..., Kd + dN:] if self.bias else None
        return W, H, b

    # ---------------------------------------------------------------- solver
    def solve(self, seed: int = 0, n_init: int = 8, *, init_scale: float = 1.0, max_iter: int = 5000,
              gtol: float = 1e-10, device=None, progress: bool = False) -> UFMSolution:
        """Minimize f from ``n_init`` random initializations at once (batched L-BFGS, float64).

        Initial entries are i.i.d. N(0, init_scale²/d) for W, H (and b), drawn from ``seed``.
        Returns all B = n_init solutions (see :class:`UFMSolution`).
        """
        return solve_batch([self], seed=seed, n_init=n_init, init_scale=init_scale, max_iter=max_iter,
                           gtol=gtol, device=device, progress=progress)[0]

    # ----------------------------------------------------------- closed form
    @property
    def threshold(self) -> float:
        """λ_c: the minimizer is 0 (trivial) iff √(n λ_W λ_H) ≥ λ_c.

        With a free bias λ_c = αM/(α + K − 1) (MSE: 1/K); without bias λ_c = αM/K.  With a
        regularized bias the boundary also depends on λ_b; use :meth:`regime`.
        """
        if self.bias and self.lambda_b > 0:
            raise ValueError("with a regularized bias the threshold depends on lambda_b; use regime()")
        a, M = self.alpha, self.M
        return a * M / (a + self.K - 1) if self.bias else a * M / self.K

    def shared_threshold(self) -> float:
        """λ_b*: with a regularized bias, the minimizer leaves the ETF (a shared component e ≠ 0
        appears in W H) iff λ_b > λ_b* = λ K α / (α M − λ K); ∞ when α M ≤ λ K.

        Derivation: on the ETF piece the bias carries the shared part m = a + K t; the piece ends where
        the Huber slope λ_b m / K reaches λ.  There ∇G = 0 gives t = 0 and a = M − λK/α = m = λK/λ_b.
        """
        if not self.bias:
            raise ValueError("without bias there is no bias regularization threshold")
        lam = self.lam
        gap = self.alpha * self.M - lam * self.K
        return math.inf if gap <= 0 else lam * self.K * self.alpha / gap

    def class_mean_cosine(self) -> float:
        """Predicted cosine between two class means (or two rows of W) at the minimizer.

        The Gram matrix of the class means is ∝ a C + (|e|/K) 11ᵀ, so the cosine is
        (|e| − a)/((K−1) a + |e|): −1/(K−1) for an ETF, 0 for an orthogonal frame, nan if trivial.
        Not defined for the projected regimes (d too small), where the cosines differ between pairs.
        """
        if self._low_rank():
            raise ValueError("class means of a projected frame have unequal cosines; see ncmse.etf")
        r = self.reduced()
        denom = (self.K - 1) * r.a + abs(r.e)
        return math.nan if denom == 0 else (abs(r.e) - r.a) / denom

    def reduced(self) -> ReducedMinimizer:
        """The reduced closed-form solution (a, e, u, t, value); module docstring, step 3."""
        return reduced_minimizer(self.K, self.n, self.lambda_W, self.lambda_H, self.lambda_b, self.bias,
                                 self.alpha, self.M)

    # A minimizer of rank K−1 (bias) or K (no bias) does not fit in a smaller d.  For α = 1 (MSE,
    # any target M) with a free bias or no bias the loss is unitarily invariant and the
    # rank-constrained problem is solved by a truncated, soft-thresholded SVD (chapter "d < K−1"):
    # Q = a P_S with P_S the projector on any d-dimensional subspace S of 1^⊥ (bias) or of R^K
    # (no bias), and a = max(0, M − Kλ).
    def _low_rank(self) -> bool:
        """Whether the closed form is the rank-constrained one (d below the relaxation's rank)."""
        r = self.reduced()
        full_rank = (self.K - 1) * (r.a > 0) + (r.e != 0)
        return full_rank > self.d

    def _ambient_dim(self) -> int:
        """Dimension of the space the projected frame lives in: K−1 (1^⊥, bias) or K (no bias)."""
        return self.K - 1 if self.bias else self.K

    def _low_rank_supported(self) -> bool:
        return self.alpha == 1.0 and self.lambda_b == 0.0

    def _low_rank_a(self) -> float:
        lam = self.lam
        return max(0.0, self.M - self.K * lam)

    def minimizer_rank(self) -> int:
        """rank of W H at the closed-form minimizer: (K−1)[a > 0] + [e ≠ 0], or d where that does not fit."""
        r = self.reduced()
        if self._low_rank():
            return self.d if self._low_rank_a() > 0 else 0
        return (self.K - 1) * (r.a > 0) + (r.e != 0)

    def regime(self) -> str:
        """'trivial' (W = H = 0), 'etf' (class means and rows of W: a simplex ETF), 'etf+shared'
        (ETF plus a component shared by all classes, bias regularized), 'orthogonal' (no bias:
        orthogonal frame), 'shared' (rank one: all class means equal), or, where d is too small for
        these, 'projected etf' / 'projected orthogonal' (a d-dimensional projection of them)."""
        r = self.reduced()
        if self._low_rank() and self._low_rank_supported():
            if self._low_rank_a() == 0:
                return "trivial"
            return "projected etf" if self.bias else "projected orthogonal"
        if r.a == 0:
            return "trivial" if r.e == 0 else "shared"
        if r.e == 0:
            return "etf"
        return "etf+shared" if self.bias else "orthogonal"

    def _require_closed_form(self):
        r = self.reduced()
        if self._low_rank() and not self._low_rank_supported():
            need = (self.K - 1) * (r.a > 0) + (r.e != 0)
            raise NotImplementedError(
                f"the rank-{need} minimizer of the convex relaxation ({self.regime()} regime) does not fit "
                f"in d={self.d}; the rank-constrained closed form is implemented for α = 1 with a free "
                f"bias or no bias (here α={self.alpha:g}, λ_b={self.lambda_b:g})")
        return r

    def global_minimum(self) -> float:
        """Closed-form min f (module docstring; chapter "d < K−1" for the rank-constrained case).

        Rank-constrained (α = 1): f* = [d (a − M)² + M² (m − d)]/(2K) + λ d a with a = max(0, M − Kλ),
        m = K−1 (bias) or K (no bias).  Raises where no closed form is implemented.
        """
        r = self._require_closed_form()
        if not self._low_rank():
            return r.value
        a, m, d, K, M = self._low_rank_a(), self._ambient_dim(), self.d, self.K, self.M
        lam = self.lam
        return (d * (a - M) ** 2 + M**2 * (m - d)) / (2 * K) + lam * d * a

    def global_minimizer(self, R: torch.Tensor | None = None, S: torch.Tensor | None = None):
        """A closed-form global minimizer (W (K, d), H (d, N), b (K,) or None), float64.

        The minimizers are parameterized by a rotation of feature space ``R`` (d, r) with orthonormal
        columns, r = rank of W H (default: the first r coordinate axes), and, when d is below the
        relaxation's rank, by the subspace ``S`` (K, d) with orthonormal columns (in 1^⊥ with a bias)
        that the frame is projected onto (default :func:`ncmse.etf.coordinate_subspace`; a random
        one: :func:`ncmse.etf.random_subspace`).  Columns of H are equal within each class (NC1); in
        the ETF regime the rows of W form a simplex ETF with w_k ∝ h̄_k (NC2, NC3) and
        λ_W‖W‖² = λ_H‖H‖²; in the projected regime W Wᵀ ∝ P_S = S Sᵀ.
        """
        r = self._require_closed_form()
        K = self.K
        if self._low_rank():
            if S is None:
                S = etf.coordinate_subspace(K, self.d, within_ones_perp=self.bias)
            S = etf.check_subspace(S, K, self.d, within_ones_perp=self.bias)
            a = self._low_rank_a()
            b = torch.full((K,), self.M / K, dtype=torch.float64) if self.bias else None
            return (*self._factor(S, torch.full((self.d,), a, dtype=torch.float64), R), b)
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
        b = torch.full((K,), r.u / K, dtype=torch.float64) if self.bias else None
        if not q:
            return torch.zeros(K, self.d, dtype=torch.float64), torch.zeros(self.d, self.N, dtype=torch.float64), b
        return (*self._factor(torch.cat(cols, 1), torch.tensor(q, dtype=torch.float64), R), b)

    def _factor(self, L: torch.Tensor, q: torch.Tensor, R) -> tuple[torch.Tensor, torch.Tensor]:
        """Balanced factorization W H = Q Y of class-mean logits Q = Σ_i q_i l_i l_iᵀ (L: (K, r)
        orthonormal columns l_i): singular values |q_i|√n, left vectors sign(q_i) l_i, right vectors
        Yᵀ l_i/√n; W = L_± Σ^{1/2} (λ_H/λ_W)^{1/4} Rᵀ and H = R Σ^{1/2} (λ_W/λ_H)^{1/4} Vᵀ."""
        n, r = self.n, L.shape[1]
        V = self.Y().T @ L / math.sqrt(n)                            # (N, r)
        s = (q.abs() * math.sqrt(n)).sqrt()
        R = etf._embedding(self.d, r, R, torch.float64, None)
        ratio = (self.lambda_H / self.lambda_W) ** 0.25
        W = (L * torch.sign(q) * (s * ratio)) @ R.T
        H = (R * (s / ratio)) @ V.T
        return W, H

    def nc2_at_minimum(self) -> float:
        """NC2 (= NC2_M = NC3) at every global minimizer: 0 for the ETF; for the projected ETF
        (d < K−1) ‖P_S/√d − C/√(K−1)‖_F = √(2 − 2√(d/(K−1))), the same for every subspace S."""
        regime = self.regime()
        if regime == "etf":
            return 0.0
        if regime == "projected etf":
            return math.sqrt(2 - 2 * math.sqrt(self.d / (self.K - 1)))
        raise ValueError(f"NC2 at the minimum is derived for the 'etf' and 'projected etf' regimes, not {regime!r}")

    # ------------------------------------------------------- landscape
    # Chapter "The benign landscape".  For MSE (α = 1, any M) with a free bias every critical point has
    # NC1 (∇_H f = 0 gives H = −(Nλ_H I + WᵀW)^{-1} Wᵀ(b1ᵀ − Y), a function of the label only), so
    # W H = Q Y, and the factored problem decouples along the singular directions of M C: each one is
    # either off (0) or on with the shrunk value a = M − Kλ.  The rank-r critical points are therefore
    # Q = a P_S for r-dimensional subspaces S ⊂ 1^⊥, factored with balance, b = (M/K) 1: the global
    # minimizers of the same model with d = r, embedded in R^d.  At one of them, the directions
    # ΔW = x s ρᵀ, ΔH = y ρ sᵀY/√n with s ∈ 1^⊥ ⊥ S and ρ ⊥ range(R) (unit vectors) decouple into 2×2
    # blocks [[λ_W, −M/(K√n)], [−M/(K√n), λ_H]]: (K−1−r)(d−r) negative eigenvalues, each equal to
    # (λ_W+λ_H)/2 − √(((λ_W−λ_H)/2)² + M²/(K² n)) — negative exactly when λ < M/K.
    def _require_mse_free_bias(self, what: str) -> None:
        if not (self.bias and self.lambda_b == 0.0 and self.alpha == 1.0):
            raise NotImplementedError(f"{what} is derived for MSE (α = 1) with a free bias (λ_b = 0)")

    def critical_point(self, rank: int, seed: int = 0):
        """A critical point (W, H, b) whose product W H has the given rank (module comment above).

        rank ∈ {0, …, min(d, K−1)} in the non-trivial regime (the largest is a global minimizer),
        only 0 in the trivial one.  ``seed`` draws the subspace S and the feature-space embedding R.
        """
        self._require_mse_free_bias("critical_point")
        top = min(self.d, self.K - 1) if self._low_rank_a() > 0 else 0
        if not isinstance(rank, int) or not 0 <= rank <= top:
            raise ValueError(f"rank must be an integer in [0, {top}] here, got {rank!r}")
        b = torch.full((self.K,), self.M / self.K, dtype=torch.float64)
        if rank == 0:
            return torch.zeros(self.K, self.d, dtype=torch.float64), torch.zeros(self.d, self.N, dtype=torch.float64), b
        gen = torch.Generator().manual_seed(seed)
        S = etf.random_subspace(self.K, rank, generator=gen)
        R = etf.random_orthonormal(self.d, rank, generator=gen)
        return (*self._factor(S, torch.full((rank,), self._low_rank_a(), dtype=torch.float64), R), b)

    def critical_value(self, rank: int) -> float:
        """f at a rank-r critical point: [M²(K−1−r) + r (Kλ)²]/(2K) + λ r (M − Kλ) (a = M − Kλ)."""
        self._require_mse_free_bias("critical_value")
        lam = self.lam
        a, K, M = self._low_rank_a(), self.K, self.M
        if rank > 0 and a == 0:
            raise ValueError("in the trivial regime the only critical point is rank 0")
        return (M**2 * (K - 1 - rank) + rank * (M - a) ** 2) / (2 * K) + lam * rank * a

    def predicted_curvature(self, rank: int) -> dict[str, float]:
        """Prediction at the rank-r critical point: number of negative Hessian eigenvalues
        (K−1−r)(d−r) (0 in the trivial regime) and the smallest eigenvalue (module comment)."""
        self._require_mse_free_bias("predicted_curvature")
        lw, lh = self.lambda_W, self.lambda_H
        smallest = (lw + lh) / 2 - math.sqrt(((lw - lh) / 2) ** 2 + self.M**2 / (self.K**2 * self.n))
        if smallest >= 0:          # trivial regime: 0 is the global minimizer, strictly convex there
            return {"n_negative": 0, "smallest": smallest if rank == 0 else math.nan}
        if rank == min(self.d, self.K - 1):   # the global minimizer: no negative eigenvalue
            return {"n_negative": 0, "smallest": math.nan}
        return {"n_negative": (self.K - 1 - rank) * (self.d - rank), "smallest": smallest}

    def hessian(self, W, H, b=None, *, max_params: int = 6000) -> torch.Tensor:
        """The exact Hessian of f at (W, H, b), dense (n_params, n_params), by autograd, in the order of
        :meth:`pack`.  Refuses problems with more than ``max_params`` parameters (use
        :meth:`hessian_vector_product` there)."""
        if self.n_params > max_params:
            raise ValueError(f"{self.n_params} parameters: too many for a dense Hessian (max_params={max_params})")
        x = self.pack(*self._check(W, H, b)).detach()
        Hm = torch.autograd.functional.hessian(lambda v: self.value(*self.unpack(v)), x)
        return 0.5 * (Hm + Hm.T)

    def hessian_vector_product(self, W, H, b, V: torch.Tensor) -> torch.Tensor:
        """∇²f(W, H, b) · V for packed directions V (n_params,) or (m, n_params), by double backward."""
        x = self.pack(*self._check(W, H, b)).detach().requires_grad_(True)
        g = self.pack(*self.gradient(*self.unpack(x)))
        V = torch.as_tensor(V, dtype=torch.float64)
        rows = V if V.ndim == 2 else V[None]
        out = torch.stack([torch.autograd.grad(g, x, v, retain_graph=True)[0] for v in rows])
        return out if V.ndim == 2 else out[0]

    def hessian_eigenvalues(self, W, H, b=None) -> torch.Tensor:
        """All eigenvalues of the Hessian, ascending (dense; small problems)."""
        return torch.linalg.eigvalsh(self.hessian(W, H, b))

    def negative_curvature_direction(self, W, H, b=None):
        """(λ_min, direction): the smallest Hessian eigenvalue and its unit eigenvector, unpacked as
        (ΔW, ΔH, Δb).  At a strict saddle λ_min < 0 and f decreases along ±direction."""
        ev, vec = torch.linalg.eigh(self.hessian(W, H, b))
        return float(ev[0]), self.unpack(vec[:, 0])

    # ------------------------------------------------------------- analysis
    def class_mean_logits(self, W, H, b=None) -> torch.Tensor:
        """Logits of the class means, column k for class k: W H̄ + b 1ᵀ, shape (..., K, K)."""
        W, H, b = self._check(W, H, b)
        Q = W @ self.class_means(H)
        return Q if b is None else Q + b[..., :, None]

    def measured_reduced(self, W, H, b=None) -> dict[str, torch.Tensor]:
        """The reduced coordinates of a (batch of) solution(s), to compare with :meth:`reduced`.

        With Q = W H̄ (class-mean logits, (..., K, K)): a = tr(C Q)/(K−1), e = 1ᵀQ1/K, u = 1ᵀb.
        """
        W, H, b = self._check(W, H, b)
        Q = W @ self.class_means(H)
        trace = Q.diagonal(dim1=-2, dim2=-1).sum(-1)
        total = Q.sum((-1, -2))
        a = (trace - total / self.K) / (self.K - 1)
        e = total / self.K
        u = b.sum(-1) if b is not None else torch.zeros_like(a)
        return {"a": a, "e": e, "u": u}

    def summarize(self, sol: UFMSolution) -> dict[str, torch.Tensor]:
        """Per-initialization diagnostics of :meth:`solve`'s output, each of shape (B,).

        rel_gap: (f − f*)/|f*| against :meth:`global_minimum`; NC metrics of (H, W, b)
        (``ncmse.metrics``); balance: λ_W‖W‖² / (λ_H‖H‖²) (1 at every non-zero critical point).
        """
        f_star = self.global_minimum()
        labels = self.labels()
        rows = [nc_metrics(sol.H[i].T, labels, sol.W[i], None if sol.b is None else sol.b[i])
                for i in range(len(sol))]
        out = {k: torch.tensor([r[k] for r in rows], dtype=torch.float64) for k in rows[0]}
        out["rel_gap"] = (sol.objective - f_star) / abs(f_star)
        out["balance"] = self.lambda_W * (sol.W**2).sum((-1, -2)) / (self.lambda_H * (sol.H**2).sum((-1, -2)))
        out["grad_norm"] = sol.grad_norm
        return out

    def compare_with_solver(self, seed: int = 0, n_init: int = 4) -> dict:
        """Solve from ``n_init`` initializations and compare the best run with the closed form.

        Returns regime, rank of W H, the predicted and measured mean cosine between class means,
        the largest relative objective gap over all runs, and the solver's class-mean Gram matrix
        H̄ᵀH̄ (K, K).
        """
        sol = self.solve(seed=seed, n_init=n_init)
        _, H, _ = sol.best()
        means = self.class_means(H).T                                     # (K, d)
        cos = torch.nn.functional.cosine_similarity(means[:, None], means[None], dim=2)
        off = cos[~torch.eye(self.K, dtype=torch.bool)]
        f_star = self.global_minimum()
        return {"regime": self.regime(), "rank": self.minimizer_rank(),
                "cosine_theory": self.class_mean_cosine(), "cosine_solver": float(off.mean()),
                "cosine_spread": float(off.max() - off.min()),
                "rel_gap": float(((sol.objective - f_star) / f_star).abs().max()),
                "class_mean_gram": means @ means.T}


class CrossEntropyUFM(UFM):
    """The same model with the cross-entropy loss −log softmax(z)_k (Zhu et al., 2021), for contrast.

    Same parameters, objective layout, gradient and batched solver as :class:`UFM`; no closed form
    is implemented here (``global_minimum`` and ``regime`` raise NotImplementedError): chapters solve
    it numerically.
    """

    def __init__(self, K: int, n: int, d: int, lambda_W: float, lambda_H: float, lambda_b: float = 0.0,
                 bias: bool = True):
        super().__init__(K, n, d, lambda_W, lambda_H, lambda_b, bias)

    def __repr__(self) -> str:
        return "CrossEntropy" + super().__repr__().split(", alpha")[0] + ")"

    def _sample_loss(self, logits, labels):
        return cross_entropy(logits, labels)

    def _sample_loss_grad(self, logits, labels):
        return torch.softmax(logits, -1) - torch.nn.functional.one_hot(labels, self.K).to(logits.dtype)

    def reduced(self):
        raise NotImplementedError("no closed form is implemented for the cross-entropy UFM; use solve()")


def solve_batch(problems: list[UFM], *, seed: int = 0, n_init: int = 8, init_scale: float = 1.0,
                max_iter: int = 5000, gtol: float = 1e-10, device=None, progress: bool = False,
                desc: str | None = None) -> list[UFMSolution]:
    """Solve several UFMs that differ only in (λ_W, λ_H, λ_b) in one batched L-BFGS run.

    All problems share K, n, d, bias, α and M; each gets ``n_init`` initializations drawn from
    ``seed`` (the same starting points for every problem, so that the result for a problem does not
    depend on the others).  Returns one :class:`UFMSolution` per problem.
    """
    if not problems:
        return []
    p0 = problems[0]
    shape = (p0.K, p0.n, p0.d, p0.bias, p0.alpha, p0.M)
    for p in problems:
        if (p.K, p.n, p.d, p.bias, p.alpha, p.M) != shape:
            raise ValueError(f"solve_batch needs problems that differ only in the λ's; {p} differs from {p0}")
    if n_init < 1:
        raise ValueError(f"n_init must be ≥ 1, got {n_init}")
    gen = torch.Generator(device=device or "cpu").manual_seed(seed)
    x0 = torch.randn(n_init, p0.n_params, generator=gen, dtype=torch.float64, device=device)
    x0 = (x0 * (init_scale / math.sqrt(p0.d))).repeat(len(problems), 1)           # (P·n_init, params)

    def per_row(values):
        return torch.tensor(values, dtype=torch.float64, device=device).repeat_interleave(n_init)

    lambdas = tuple(per_row([getattr(p, k) for p in problems]) for k in ("lambda_W", "lambda_H", "lambda_b"))

    def fun(x):
        return p0.value_and_gradient_packed(x, lambdas=lambdas)

    res = lbfgs(fun, x0, max_iter=max_iter, gtol=gtol, progress=progress,
                desc=desc or f"UFM K={p0.K} d={p0.d} ×{len(problems)}")
    out = []
    for i in range(len(problems)):
        rows = slice(i * n_init, (i + 1) * n_init)
        W, H, b = p0.unpack(res.x[rows])
        out.append(UFMSolution(W=W.contiguous(), H=H.contiguous(), b=None if b is None else b.contiguous(),
                               objective=res.value[rows], grad_norm=res.grad[rows].norm(dim=1),
                               n_iter=res.n_iter[rows], converged=res.converged[rows]))
    return out


def scan(problems: list[UFM], *, n_init: int = 4, seed: int = 0, progress: bool = False,
         desc: str = "UFM scan") -> list[dict[str, float]]:
    """Solve each UFM of a list (e.g. a grid of λ's) and compare with its closed form.

    Problems that differ only in their λ's are solved together in one batch (:func:`solve_batch`).
    Returns one dict per problem: the measured reduced coordinates a, e, u of the best of ``n_init``
    initializations, its objective ``f``, and the closed-form ``f_star``, ``a_star``, ``e_star``,
    ``u_star`` and ``regime``.
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
        r = p.reduced()
        out.append({"a": float(m["a"]), "e": float(m["e"]), "u": float(m["u"]),
                    "f": float(sol.objective.min()), "f_star": r.value, "a_star": r.a, "e_star": r.e,
                    "u_star": r.u, "regime": p.regime()})
    return out


def descent_history(problem: UFM, *, n_init: int = 8, steps: int = 500, seed: int = 0,
                    init_scale: float = 0.1, x0: torch.Tensor | None = None,
                    lr0: float = 1.0) -> dict[str, torch.Tensor]:
    """Gradient descent on a UFM (any loss) from ``n_init`` random starts with the one step-size rule of
    :func:`ncmse.optim.gradient_descent`; records after every step the training accuracy (fraction
    of features h_{k,i} whose logits W h + b peak at k) and the within-class spread
    ‖H − H̄ ⊗ 1ᵀ‖²/‖H̄ ⊗ 1ᵀ − mean‖² (a cheap NC1 proxy).  Each history entry is (steps+1, n_init).
    ``x0`` (B, n_params) replaces the random starts (e.g. points next to a saddle).
    """
    if x0 is None:
        gen = torch.Generator().manual_seed(seed)
        x0 = torch.randn(n_init, problem.n_params, generator=gen, dtype=torch.float64)
        x0 = x0 * (init_scale / math.sqrt(problem.d))
    labels = problem.labels()

    fun = problem.value_and_gradient_packed

    def record(x):
        W, H, b = problem.unpack(x)
        Z = problem.logits(W, H, b)                                  # (B, K, N)
        accuracy = (Z.argmax(-2) == labels).double().mean(-1)
        means = problem.class_means(H)                               # (B, d, K)
        within = ((H - means.repeat_interleave(problem.n, -1)) ** 2).sum((-1, -2))
        between = problem.n * ((means - means.mean(-1, keepdim=True)) ** 2).sum((-1, -2))
        return {"accuracy": accuracy, "within_over_between": within / between.clamp_min(1e-300)}

    return gradient_descent(fun, x0, steps=steps, record=record, lr0=lr0)


def escape_saddle(problem: UFM, W, H, b, *, eps: float = 1e-3, steps: int = 300,
                  tol: float = 1e-10) -> dict[str, torch.Tensor]:
    """Step ``eps`` along the negative-curvature direction at a saddle (both signs) and follow gradient
    descent (:func:`descent_history`); returns its history for the two starts, plus ``lambda_min``.
    Raises where the smallest Hessian eigenvalue is above −``tol`` (no strict saddle)."""
    lam_min, (dW, dH, db) = problem.negative_curvature_direction(W, H, b)
    if lam_min >= -tol:
        raise ValueError(f"no negative curvature here (smallest eigenvalue {lam_min:.3e}): not a strict saddle")
    x = problem.pack(W, H, b)
    v = problem.pack(dW, dH, db)
    hist = descent_history(problem, x0=torch.stack([x + eps * v, x - eps * v]), steps=steps)
    hist["lambda_min"] = torch.tensor(lam_min, dtype=torch.float64)
    return hist

"""The unconstrained features model (UFM) under regularized (rescaled) MSE: the model, its objective and
gradients, and the batched solvers.

    f(W, H, b) = 1/N Σ_{k,i} ℓ(W h_{k,i} + b, k) + λ_W/2 ‖W‖²_F + λ_H/2 ‖H‖²_F + λ_b/2 ‖b‖²

with ℓ the rescaled MSE ½[α(z_k − M)² + Σ_{j≠k} z_j²] of ``ncmse.losses`` (α = M = 1: MSE).
Shapes: W (K, d) with rows w_k, H (d, N) with columns h_{k,i} ordered class by class (N = K n),
b (K,).  Leading batch dimensions are allowed in the batched functions.

What is known about the problem in closed form lives beside it, in modules that take a :class:`UFM`
as first argument: the global minimizers and their regimes in ``ncmse.minimizers`` (chapters "Global
optimality for d ≥ K−1" and "d < K−1"), the critical points and the Hessian in ``ncmse.saddles``
(chapter "The benign landscape").
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from .checks import as_float, as_int, scalar
from .losses import cross_entropy, rescaled_mse, rescaled_mse_grad
from .optim import gradient_descent, lbfgs

__all__ = ["UFM", "CrossEntropyUFM", "UFMSolution", "solve_batch", "descent_history"]


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
    def check_point(self, W, H, b):
        """(W, H, b) as float64 tensors on W's device, shapes checked: W (..., K, d), H (..., d, N), b
        (..., K) (zeros where None and the model has a bias) or None (no bias)."""
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
        W, H, b = self.check_point(W, H, b)
        Z = W @ H
        return Z if b is None else Z + b[..., :, None]

    def value(self, W, H, b=None, *, lambdas=None) -> torch.Tensor:
        """f(W, H, b) as a tensor of shape (...) (batched; differentiable).

        ``lambdas`` = (λ_W, λ_H, λ_b) overrides the problem's regularization, each a float or a
        tensor of the batch shape (...): used to solve a grid of λ's in one batch (:func:`solve_batch`).
        """
        W, H, b = self.check_point(W, H, b)
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
        W, H, b = self.check_point(W, H, b)
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

    # ------------------------------------------------------------- analysis
    def class_mean_logits(self, W, H, b=None) -> torch.Tensor:
        """Logits of the class means, column k for class k: W H̄ + b 1ᵀ, shape (..., K, K)."""
        W, H, b = self.check_point(W, H, b)
        Q = W @ self.class_means(H)
        return Q if b is None else Q + b[..., :, None]

    def measured_reduced(self, W, H, b=None) -> dict[str, torch.Tensor]:
        """The reduced coordinates of a (batch of) solution(s), to compare with
        :func:`ncmse.minimizers.reduced`.

        With Q = W H̄ (class-mean logits, (..., K, K)): a = tr(C Q)/(K−1), e = 1ᵀQ1/K, u = 1ᵀb.
        """
        W, H, b = self.check_point(W, H, b)
        Q = W @ self.class_means(H)
        trace = Q.diagonal(dim1=-2, dim2=-1).sum(-1)
        total = Q.sum((-1, -2))
        a = (trace - total / self.K) / (self.K - 1)
        e = total / self.K
        u = b.sum(-1) if b is not None else torch.zeros_like(a)
        return {"a": a, "e": e, "u": u}


class CrossEntropyUFM(UFM):
    """The same model with the cross-entropy loss −log softmax(z)_k (Zhu et al., 2021), for contrast.

    Same parameters, objective layout, gradient and batched solver as :class:`UFM`; no closed form
    is implemented for it (``ncmse.minimizers.reduced``, ``global_minimum`` and ``regime`` raise
    NotImplementedError): chapters solve it numerically.
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

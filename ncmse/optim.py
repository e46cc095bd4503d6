"""A batched L-BFGS for many independent smooth problems at once (float64, any device).

``torch.optim.LBFGS`` optimizes one parameter vector; summing B independent problems into it couples
their line searches and curvature pairs.  Here every problem keeps its own curvature history, its own
Armijo backtracking step and its own stopping test, while all B problems are evaluated in one batched
call.  Used by :meth:`ncmse.ufm.UFM.solve`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.std import tqdm

__all__ = ["lbfgs", "LBFGSResult", "gradient_descent", "first_hit"]


@dataclass
class LBFGSResult:
    x: torch.Tensor          # (B, P) final iterates
    value: torch.Tensor      # (B,) objective values
    grad: torch.Tensor       # (B, P) gradients at x
    n_iter: torch.Tensor     # (B,) iterations taken by each problem
    converged: torch.Tensor  # (B,) bool: stopped by gtol or at the float64 floor, not by max_iter


def lbfgs(
    fun: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    x0: torch.Tensor,
    *,
    max_iter: int = 5000,
    history: int = 20,
    gtol: float = 1e-10,
    max_backtracks: int = 30,
    progress: bool = False,
    desc: str = "L-BFGS",
) -> LBFGSResult:
    """Minimize B independent problems with L-BFGS (two-loop recursion) and Armijo backtracking.

    fun: maps x (B, P) to (values (B,), gradients (B, P)); row b of x is problem b.
    Stops a problem when max|grad| ≤ gtol or when its line search cannot decrease it any more
    (the precision floor of float64).
    """
    if x0.ndim != 2:
        raise ValueError(f"x0 must have shape (B, P), got {tuple(x0.shape)}")
    x = x0.clone()
    f, g = fun(x)
    B = x.shape[0]
    S: list[torch.Tensor] = []
    Yh: list[torch.Tensor] = []
    rho: list[torch.Tensor] = []
    gamma = torch.ones(B, dtype=x.dtype, device=x.device)
    active = g.abs().amax(1) > gtol
    floor = torch.zeros(B, dtype=torch.bool, device=x.device)
    n_iter = torch.zeros(B, dtype=torch.long, device=x.device)
    first = True
    bar = tqdm(total=max_iter, desc=desc, disable=not progress, leave=False)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        # Two-loop recursion, vectorized over problems; a pair with rho = 0 has no effect.
        q = g.clone()
        alphas = []
        for s, y, r in zip(reversed(S), reversed(Yh), reversed(rho), strict=True):
            a = r * (s * q).sum(1)
            q -= a[:, None] * y
            alphas.append(a)
        q *= gamma[:, None]
        for s, y, r, a in zip(S, Yh, rho, reversed(alphas), strict=True):
            beta = r * (y * q).sum(1)
            q += (a - beta)[:, None] * s
        direction = -q
        slope = (g * direction).sum(1)
        bad = slope >= 0  # not a descent direction: fall back to steepest descent
        if bool(bad.any()):
            direction[bad] = -g[bad]
            slope = (g * direction).sum(1)
        step = torch.ones(B, dtype=x.dtype, device=x.device)
        if first:  # scale the first steepest-descent step to unit length
            step = 1.0 / g.norm(dim=1).clamp_min(1e-300)
            first = False
        step = torch.where(active, step, torch.zeros_like(step))
        pending = active.clone()
        x_new, f_new, g_new = x.clone(), f.clone(), g.clone()
        for _ in range(max_backtracks):
            trial = x + step[:, None] * direction
            f_t, g_t = fun(trial)
            # Armijo with strict decrease: at the float64 floor no step decreases f and the problem stops.
            ok = pending & (f_t <= f + 1e-4 * step * slope) & (f_t < f) & torch.isfinite(f_t)
            x_new[ok], f_new[ok], g_new[ok] = trial[ok], f_t[ok], g_t[ok]
            pending &= ~ok
            if not bool(pending.any()):
                break
            step = torch.where(pending, step * 0.5, step)
        stalled = pending  # no decrease found: at the precision floor
        moved = active & ~stalled
        s_k = torch.where(moved[:, None], x_new - x, torch.zeros_like(x))
        y_k = torch.where(moved[:, None], g_new - g, torch.zeros_like(x))
        sy = (s_k * y_k).sum(1)
        yy = (y_k * y_k).sum(1)
        valid = moved & (sy > 1e-300) & (yy > 0)
        S.append(s_k)
        Yh.append(y_k)
        rho.append(torch.where(valid, 1.0 / sy.where(valid, torch.ones_like(sy)), torch.zeros_like(sy)))
        gamma = torch.where(valid, sy / yy.where(valid, torch.ones_like(yy)), gamma)
        if len(S) > history:
            S.pop(0), Yh.pop(0), rho.pop(0)
        x, f, g = x_new, f_new, g_new
        n_iter += active.long()
        floor |= active & stalled
        active = active & ~stalled & (g.abs().amax(1) > gtol)
        bar.update(1)
        if progress:
            bar.set_postfix(active=int(active.sum()), max_grad=f"{float(g.abs().amax()):.1e}")
    bar.close()
    return LBFGSResult(x=x, value=f, grad=g, n_iter=n_iter, converged=floor | (g.abs().amax(1) <= gtol))


def gradient_descent(
    fun: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    x0: torch.Tensor,
    *,
    steps: int,
    lr0: float = 1.0,
    record: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None,
    max_backtracks: int = 40,
) -> dict[str, torch.Tensor]:
    """Batched gradient descent with one step-size rule for every problem: Armijo backtracking
    (halve until f(x − η∇f) ≤ f(x) − ½η‖∇f‖² + 4ε|f(x)|), each step starting from twice the last
    accepted η.  The round-off allowance 4ε|f| (ε: machine epsilon) lets descent cross plateaus — next
    to a saddle, say — where a step changes f by less than f's last digit; without it the rule would
    shrink η to nothing there.

    fun: x (B, P) ↦ (f (B,), ∇f (B, P)).  ``record(x)`` returns per-problem quantities (B,) to log after
    every step.  Returns the history: ``value`` (steps+1, B), ``lr`` (steps, B) and each recorded key
    (steps+1, B).
    """
    x = x0.clone()
    f, g = fun(x)
    B = x.shape[0]
    lr = torch.full((B,), lr0, dtype=x.dtype, device=x.device)
    hist: dict[str, list[torch.Tensor]] = {"value": [f.clone()], "lr": []}
    if record is not None:
        for k, v in record(x).items():
            hist[k] = [v]
    eps = torch.finfo(x.dtype).eps
    for _ in range(steps):
        gg = (g * g).sum(1)
        roundoff = 4 * eps * f.abs()
        pending = torch.ones(B, dtype=torch.bool, device=x.device)
        x_new, f_new, g_new = x.clone(), f.clone(), g.clone()
        for _ in range(max_backtracks):
            trial = x - lr[:, None] * g
            f_t, g_t = fun(trial)
            ok = pending & (f_t <= f - 0.5 * lr * gg + roundoff)
            x_new[ok], f_new[ok], g_new[ok] = trial[ok], f_t[ok], g_t[ok]
            pending &= ~ok
            if not bool(pending.any()):
                break
            lr = torch.where(pending, lr * 0.5, lr)
        hist["lr"].append(lr.clone())
        x, f, g = x_new, f_new, g_new
        lr = lr * 2
        hist["value"].append(f.clone())
        if record is not None:
            for k, v in record(x).items():
                hist[k].append(v)
    return {k: torch.stack(v) for k, v in hist.items()}


def first_hit(mask: torch.Tensor) -> torch.Tensor:
    """For a history of conditions (steps+1, B) bool, the first step at which each run meets it;
    ``steps+1`` (the history length) for runs that never do."""
    hit = mask.to(torch.int8)
    first = hit.argmax(0)
    return torch.where(mask.any(0), first, torch.full_like(first, mask.shape[0]))

import math

import pytest
import torch

from ncmse import losses
from ncmse.feature_landscape import PAPER_LOSSES, Landscape
from ncmse.ufm import UFM, CrossEntropyUFM, descent_history


@pytest.mark.parametrize("direction", ["span", "orthogonal"])
@pytest.mark.parametrize("name", list(PAPER_LOSSES))
def test_grid_matches_direct_evaluation(direction, name, gen):
    L = Landscape(K=5, rho=1.3, lambda_H=0.02, beta=0.1, direction=direction, k=2, j=4)
    loss, alpha, M = PAPER_LOSSES[name]
    s = torch.rand(4, generator=gen, dtype=torch.float64) * 3
    th = (torch.rand(3, generator=gen, dtype=torch.float64) - 0.5) * 2 * math.pi
    grid = L.grid(s, th, loss=loss, alpha=alpha, M=M)
    for a, t in enumerate(th):
        for c, sv in enumerate(s):
            h = sv * (torch.cos(t) * L.W[2] / 1.3 + torch.sin(t) * L.u)
            z = (L.W @ h + 0.1)[None]
            y = torch.tensor([2])
            ell = losses.cross_entropy(z, y) if loss == "ce" else losses.rescaled_mse(z, y, alpha, M)
            assert math.isclose(float(grid[a, c]), float(ell[0]) + 0.01 * float(sv) ** 2, rel_tol=1e-12)
    assert abs(float(L.u @ L.w_hat)) < 1e-14 and math.isclose(float(L.u.norm()), 1.0)


def test_symmetry_and_scaling():
    th = torch.linspace(-3, 3, 7, dtype=torch.float64)
    s = torch.linspace(0.1, 2, 5, dtype=torch.float64)
    orth = Landscape(direction="orthogonal")
    # u ⊥ every row of W: the logits see cos θ only, so F is even in θ.
    torch.testing.assert_close(orth.grid(s, th), orth.grid(s, -th))
    # Without the λ_H term only ρ s matters: (ρ, s) → (cρ, s/c) leaves F unchanged.
    a, b = Landscape(rho=1.0, lambda_H=0.0), Landscape(rho=2.5, lambda_H=0.0)
    for loss in ("mse", "ce"):
        torch.testing.assert_close(a.grid(s, th, loss=loss), b.grid(s / 2.5, th, loss=loss))


@pytest.mark.parametrize("direction", ["span", "orthogonal"])
def test_curvature_formula_matches_autograd(direction):
    L = Landscape(K=6, lambda_H=0.03, beta=0.05, direction=direction)
    for loss, alpha, M in PAPER_LOSSES.values():
        c = L.curvatures(loss, alpha, M)
        assert math.isclose(c["kappa"], c["kappa_formula"], rel_tol=1e-7)
        assert abs(c["F_sth"]) < 1e-9                      # θ = 0 is a critical direction
        _, gt = L.gradient_field(torch.tensor([c["s_star"]], dtype=torch.float64),
                                 torch.tensor([0.0], dtype=torch.float64), loss=loss, alpha=alpha, M=M)
        assert abs(float(gt)) < 1e-10


def test_mse_kappa_closed_form():
    # span direction, λ_H → 0: κ = K/(α(K−1) + 1), independent of M
    for K in (3, 4, 10):
        for alpha, M in ((1.0, 1.0), (5.0, 1.0), (1.0, 5.0)):
            c = Landscape(K=K, lambda_H=0.0).curvatures("rmse", alpha, M)
            assert math.isclose(c["kappa"], K / (alpha * (K - 1) + 1), rel_tol=1e-9)


def test_bad_landscape_input():
    with pytest.raises(ValueError, match="direction"):
        Landscape(direction="diagonal")
    with pytest.raises(ValueError, match="K must be"):
        Landscape(K=2)
    with pytest.raises(ValueError, match="unknown loss"):
        Landscape().F(1.0, 0.0, loss="hinge")


def test_descent_history_reaches_full_accuracy():
    kw = dict(K=4, n=3, d=4, lambda_W=1e-3, lambda_H=1e-3)
    for p in (UFM(**kw), UFM(**kw, alpha=5.0), CrossEntropyUFM(**kw)):
        h = descent_history(p, n_init=3, steps=150)
        assert h["accuracy"].shape == (151, 3)
        assert bool((h["accuracy"][-1] == 1).all())
        assert bool((h["value"][1:] <= h["value"][:-1] + 1e-15).all())     # monotone under Armijo

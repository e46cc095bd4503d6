"""Critical points of every rank, the Hessian, and escape from saddles (chapter "The benign landscape")."""

import math

import pytest
import torch

from ncmse import minimizers, saddles
from ncmse.ufm import UFM

CASES = [dict(K=4, n=2, d=4, lambda_W=1e-2, lambda_H=2e-2), dict(K=4, n=3, d=3, lambda_W=5e-3, lambda_H=5e-3),
         dict(K=5, n=2, d=6, lambda_W=3e-3, lambda_H=1e-2, M=2.0), dict(K=5, n=2, d=2, lambda_W=3e-3, lambda_H=3e-3)]


@pytest.mark.parametrize("kw", CASES)
def test_critical_points_of_every_rank(kw):
    u = UFM(**kw)
    top = min(u.d, u.K - 1)
    for r in range(top + 1):
        W, H, b = saddles.critical_point(u, r, seed=r)
        assert torch.linalg.matrix_rank(W @ H) == r
        assert max(float(g.abs().max()) for g in u.gradient(W, H, b)) < 1e-14
        assert math.isclose(u.objective(W, H, b), saddles.critical_value(u, r), rel_tol=1e-13)
        ev = saddles.hessian_eigenvalues(u, W, H, b)
        pred = saddles.predicted_curvature(u, r)
        assert int((ev < -1e-10).sum()) == pred["n_negative"]
        if r < top:
            assert math.isclose(float(ev[0]), pred["smallest"], rel_tol=1e-9)
            assert float(ev[0]) < 0                                   # a strict saddle
        else:
            assert float(ev[0]) > -1e-10                              # the global minimizer
            assert math.isclose(saddles.critical_value(u, r), minimizers.global_minimum(u), rel_tol=1e-13)


def test_hessian_symmetric_and_matches_finite_differences(gen):
    u = UFM(K=3, n=2, d=2, lambda_W=0.1, lambda_H=0.05, lambda_b=0.2, alpha=2.0, M=1.5)
    x = torch.randn(u.n_params, generator=gen, dtype=torch.float64)
    Hm = saddles.hessian(u, *u.unpack(x))
    torch.testing.assert_close(Hm, Hm.T)
    h = 1e-6
    for i in range(u.n_params):
        e = torch.zeros(u.n_params, dtype=torch.float64)
        e[i] = h
        gp = u.pack(*u.gradient(*u.unpack(x + e)))
        gm = u.pack(*u.gradient(*u.unpack(x - e)))
        torch.testing.assert_close(Hm[:, i], (gp - gm) / (2 * h), atol=1e-7, rtol=1e-6)
    V = torch.randn(3, u.n_params, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(saddles.hessian_vector_product(u, *u.unpack(x), V), V @ Hm)


def test_trivial_regime_zero_is_the_minimum():
    below = UFM(K=4, n=2, d=4, lambda_W=1e-2, lambda_H=1e-2)       # λ = 0.0141 < 1/K: 0 is a saddle
    above = UFM(K=4, n=2, d=4, lambda_W=0.3, lambda_H=0.3)         # λ = 0.42 > 1/K: 0 is the minimum
    for u, saddle in ((below, True), (above, False)):
        ev = saddles.hessian_eigenvalues(u, *saddles.critical_point(u, 0))
        assert (float(ev[0]) < 0) == saddle
        assert math.isclose(float(ev[0]), saddles.predicted_curvature(u, 0)["smallest"], rel_tol=1e-9)
    with pytest.raises(ValueError, match="rank must be"):
        saddles.critical_point(above, 1)


def test_escape_reaches_the_global_minimum():
    u = UFM(K=4, n=2, d=4, lambda_W=1e-2, lambda_H=2e-2)
    h = saddles.escape_saddle(u, *saddles.critical_point(u, 1), eps=1e-6, steps=300)
    assert float(h["lambda_min"]) < 0
    assert float(((h["value"][-1] - minimizers.global_minimum(u)) / minimizers.global_minimum(u)).abs().max()) < 1e-8
    with pytest.raises(ValueError, match="not a strict saddle"):
        saddles.escape_saddle(u, *minimizers.global_minimizer(u))


def test_not_implemented_and_size_guard():
    with pytest.raises(NotImplementedError, match="MSE"):
        saddles.critical_point(UFM(K=4, n=2, d=4, lambda_W=1e-2, lambda_H=1e-2, alpha=3.0), 1)
    big = UFM(K=10, n=100, d=64, lambda_W=1e-3, lambda_H=1e-3)
    with pytest.raises(ValueError, match="too many"):
        saddles.hessian(big, *saddles.critical_point(big, 0))

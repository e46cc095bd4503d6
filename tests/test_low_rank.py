"""d below the rank of the ETF: the global minimizers are d-dimensional projections (chapter "d < K−1")."""

import math

import pytest
import torch

from ncmse import etf, minimizers
from ncmse.metrics import nc_metrics
from ncmse.ufm import UFM

CASES = [dict(K=4, n=3, d=2, lambda_W=2e-3, lambda_H=4e-3), dict(K=5, n=4, d=1, lambda_W=1e-3, lambda_H=1e-3),
         dict(K=6, n=2, d=3, lambda_W=5e-3, lambda_H=1e-3, M=2.0), dict(K=10, n=3, d=5, lambda_W=1e-4, lambda_H=2e-4),
         dict(K=4, n=3, d=3, lambda_W=2e-3, lambda_H=4e-3, bias=False),
         dict(K=5, n=3, d=2, lambda_W=1e-3, lambda_H=1e-3, bias=False, M=3.0)]


IDS = [f"K{c['K']}d{c['d']}{'' if c.get('bias', True) else 'nobias'}" for c in CASES]


@pytest.mark.parametrize("kw", CASES, ids=IDS)
def test_closed_form_matches_solver_below_k_minus_one(kw):
    ufm = UFM(**kw)
    assert minimizers.regime(ufm) == ("projected etf" if kw.get("bias", True) else "projected orthogonal")
    f_star = minimizers.global_minimum(ufm)
    sol = ufm.solve(seed=11, n_init=6)
    assert float(((sol.objective - f_star) / f_star).abs().max()) < 1e-9
    assert float(sol.objective.min()) >= f_star * (1 - 1e-12)
    S = etf.random_subspace(ufm.K, ufm.d, within_ones_perp=ufm.bias, generator=torch.Generator().manual_seed(2))
    W, H, b = minimizers.global_minimizer(ufm, S=S)
    assert math.isclose(ufm.objective(W, H, b), f_star, rel_tol=1e-13)
    assert max(float(g.abs().max()) for g in ufm.gradient(W, H, b) if g is not None) < 1e-12


def test_independent_formula():
    """f* written out for MSE with a free bias: (K−1−d)/(2K) + dλ − dKλ²/2 (Eckart–Young on C)."""
    for K, d, n, lw, lh in ((7, 3, 5, 1e-3, 2e-3), (10, 2, 8, 3e-4, 3e-4), (4, 1, 2, 1e-2, 5e-3)):
        lam = math.sqrt(n * lw * lh)
        assert lam < 1 / K
        want = (K - 1 - d) / (2 * K) + d * lam - d * K * lam**2 / 2
        assert math.isclose(minimizers.global_minimum(UFM(K=K, n=n, d=d, lambda_W=lw, lambda_H=lh)), want,
                            rel_tol=1e-14)


def test_gram_is_projection_and_nc2_formula():
    K, d = 8, 3
    ufm = UFM(K=K, n=3, d=d, lambda_W=1e-3, lambda_H=1e-3)
    sol = ufm.solve(seed=0, n_init=4)
    C = etf.centering_matrix(K)
    for i in range(len(sol)):
        means = ufm.class_means(sol.H[i])                              # (d, K)
        G = means.T @ means
        P = G * d / torch.trace(G)                                     # scaled to trace d
        torch.testing.assert_close(P @ P, P, atol=1e-6, rtol=0)         # a projector …
        torch.testing.assert_close(P @ torch.ones(K, dtype=torch.float64), torch.zeros(K, dtype=torch.float64),
                                   atol=1e-5, rtol=0)                   # … inside 1^⊥ …
        assert abs(float(torch.linalg.norm(C - P) ** 2) - (K - 1 - d)) < 1e-6   # … at Eckart–Young distance
        m = nc_metrics(sol.H[i].T, ufm.labels(), sol.W[i], sol.b[i])
        for key in ("NC2", "NC2_M", "NC3"):
            assert abs(m[key] - minimizers.nc2_at_minimum(ufm)) < 1e-6, key
        for key in ("NC1", "NC2_spectral", "NC2_M_spectral", "NC3_dual", "NC4_centred"):
            assert m[key] < 1e-6, key


def test_subspaces_and_argmax():
    gen = torch.Generator().manual_seed(0)
    S = etf.random_subspace(6, 2, generator=gen)
    etf.check_subspace(S, 6, 2)
    with pytest.raises(ValueError, match="1\\^⊥"):
        etf.check_subspace(torch.eye(6, 2, dtype=torch.float64), 6, 2)
    with pytest.raises(ValueError, match="orthonormal"):
        etf.check_subspace(2 * S, 6, 2)
    # Full ETF: every class keeps its argmax.  A projector that keeps class 0 only partially loses it.
    assert not bool(etf.argmax_lost(etf.centering_matrix(5)).any())
    G = torch.tensor([[0.1, 0.3, 0.0], [0.3, 0.9, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert etf.argmax_lost(G).tolist() == [True, False, False]


def test_cross_entropy_ufm_solver_converges():
    from ncmse.ufm import CrossEntropyUFM

    ce = CrossEntropyUFM(K=5, n=3, d=2, lambda_W=5e-3, lambda_H=5e-3)
    x = torch.randn(2, ce.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(1),
                    requires_grad=True)
    ce.value(*ce.unpack(x)).sum().backward()              # analytic gradient = autograd
    torch.testing.assert_close(x.grad, ce.pack(*ce.gradient(*ce.unpack(x.detach()))))
    sol = ce.solve(seed=0, n_init=6)
    assert bool(sol.converged.all()) and float(sol.grad_norm.max()) < 1e-7
    assert float(sol.objective.max() - sol.objective.min()) < 1e-9       # every start: the same value
    with pytest.raises(NotImplementedError, match="cross-entropy"):
        minimizers.global_minimum(ce)
    # CE keeps every class's argmax at d = 2 < K − 1
    W, H, b = sol.best()
    Q = W @ ce.class_means(H) + b[:, None]
    assert not bool(etf.argmax_lost(Q).any())


def test_frame_geometry_and_batched_subspaces():
    lengths, angles = etf.frame_geometry(etf.simplex_etf(5))
    torch.testing.assert_close(lengths, torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(angles, torch.full((10,), math.degrees(math.acos(-1 / 4)), dtype=torch.float64))
    S = etf.random_subspaces(6, 2, 7, generator=torch.Generator().manual_seed(0))
    assert S.shape == (7, 6, 2)
    for s in S:
        etf.check_subspace(s, 6, 2)

import math

import pytest
import torch

from ncmse import minimizers
from ncmse.metrics import nc_metrics
from ncmse.ufm import UFM, solve_batch

# (name, UFM kwargs, expected regime): every regime of the closed form, at and above d = K−1.
CASES = [
    ("etf d=K-1", dict(K=4, n=5, d=3, lambda_W=5e-3, lambda_H=1e-2), "etf"),
    ("etf d=K", dict(K=5, n=3, d=5, lambda_W=2e-3, lambda_H=4e-3), "etf"),
    ("etf d>K", dict(K=3, n=4, d=7, lambda_W=1e-2, lambda_H=1e-3), "etf"),
    ("trivial", dict(K=4, n=5, d=4, lambda_W=0.2, lambda_H=0.2), "trivial"),
    ("bias reg. below", dict(K=4, n=5, d=4, lambda_W=5e-3, lambda_H=5e-3, lambda_b=1e-2), "etf"),
    ("bias reg. above", dict(K=4, n=5, d=4, lambda_W=5e-3, lambda_H=5e-3, lambda_b=1.0), "etf+shared"),
    ("bias reg. trivial", dict(K=3, n=4, d=3, lambda_W=0.3, lambda_H=0.3, lambda_b=0.5), "trivial"),
    ("no bias", dict(K=4, n=5, d=5, lambda_W=5e-3, lambda_H=5e-3, bias=False), "orthogonal"),
    ("no bias trivial", dict(K=4, n=5, d=4, lambda_W=0.2, lambda_H=0.2, bias=False), "trivial"),
    ("rescaled alpha", dict(K=4, n=5, d=3, lambda_W=5e-3, lambda_H=5e-3, alpha=5.0), "etf"),
    ("rescaled M", dict(K=4, n=5, d=4, lambda_W=5e-3, lambda_H=5e-3, M=5.0, lambda_b=0.3), "etf+shared"),
    ("rescaled both, no bias", dict(K=3, n=6, d=3, lambda_W=1e-2, lambda_H=2e-2, alpha=3.0, M=2.0, bias=False),
     "orthogonal"),
]


@pytest.mark.parametrize("name,kw,regime", CASES, ids=[c[0] for c in CASES])
def test_closed_form_matches_solver(name, kw, regime):
    ufm = UFM(**kw)
    assert minimizers.regime(ufm) == regime
    f_star = minimizers.global_minimum(ufm)
    sol = ufm.solve(seed=3, n_init=4)
    rel = ((sol.objective - f_star) / f_star).abs().max()
    assert rel < 1e-9, f"solver vs closed form: {rel:.2e}"
    assert float(sol.objective.min()) >= f_star * (1 - 1e-12), "solver found a value below the 'minimum'"
    W, H, b = minimizers.global_minimizer(ufm)
    assert math.isclose(ufm.objective(W, H, b), f_star, rel_tol=1e-13)
    grads = [g for g in ufm.gradient(W, H, b) if g is not None]
    assert max(float(g.abs().max()) for g in grads) < 1e-12
    m = ufm.measured_reduced(W, H, b)
    r = minimizers.reduced(ufm)
    assert abs(float(m["a"]) - r.a) < 1e-12 and abs(float(m["e"]) - r.e) < 1e-12


@pytest.mark.parametrize("kw", [dict(K=4, n=3, d=4, lambda_W=3e-3, lambda_H=6e-3, lambda_b=2.0),
                                dict(K=3, n=5, d=2, lambda_W=1e-2, lambda_H=1e-2, alpha=4.0, M=2.0)])
def test_closed_form_matches_torch_lbfgs(kw):
    """An optimizer independent of ncmse.optim: torch.optim.LBFGS with strong Wolfe line search."""
    ufm = UFM(**kw)
    x = torch.randn(ufm.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1, max_iter=5000, tolerance_grad=1e-13, tolerance_change=1e-16,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        f = ufm.value(*ufm.unpack(x))
        f.backward()
        return f

    opt.step(closure)
    assert math.isclose(float(ufm.value(*ufm.unpack(x.detach()))), minimizers.global_minimum(ufm), rel_tol=1e-9)


@pytest.mark.parametrize("K,n,lam_W,lam_H", [(4, 5, 1e-3, 2e-3), (10, 7, 1e-4, 3e-4), (3, 2, 0.1, 0.05)])
def test_mse_theorem_formula(K, n, lam_W, lam_H):
    """The theorem's explicit value: f* = (K−1)(λ − Kλ²/2) below λ_c = 1/K, (K−1)/(2K) above."""
    ufm = UFM(K=K, n=n, d=K - 1, lambda_W=lam_W, lambda_H=lam_H)
    lam = math.sqrt(n * lam_W * lam_H)
    want = (K - 1) * (lam - K * lam**2 / 2) if lam < 1 / K else (K - 1) / (2 * K)
    assert math.isclose(minimizers.global_minimum(ufm), want, rel_tol=1e-14)
    assert math.isclose(minimizers.threshold(ufm), 1 / K)
    W, H, b = minimizers.global_minimizer(ufm)
    torch.testing.assert_close(b, torch.full((K,), 1 / K, dtype=torch.float64))


def test_minimizer_geometry_and_rotation(gen):
    ufm = UFM(K=5, n=4, d=8, lambda_W=1e-3, lambda_H=4e-3)
    Q, _ = torch.linalg.qr(torch.randn(8, 4, generator=gen, dtype=torch.float64))
    W, H, b = minimizers.global_minimizer(ufm, R=Q)
    m = nc_metrics(H.T, ufm.labels(), W, b)
    assert max(m["NC1"], m["NC2"], m["NC2_M"], m["NC3"], m["NC3_dual"], m["NC4_centred"]) < 1e-12
    assert math.isclose(ufm.lambda_W * float((W**2).sum()), ufm.lambda_H * float((H**2).sum()), rel_tol=1e-12)
    torch.testing.assert_close(W, math.sqrt(ufm.n * ufm.lambda_H / ufm.lambda_W) * ufm.class_means(H).T)
    assert math.isclose(ufm.objective(W, H, b), minimizers.global_minimum(ufm), rel_tol=1e-13)


def test_shared_threshold_and_cosines():
    base = dict(K=4, n=5, d=4, lambda_W=5e-3, lambda_H=5e-3)
    lb_star = minimizers.shared_threshold(UFM(**base, lambda_b=1.0))
    assert minimizers.regime(UFM(**base, lambda_b=0.9 * lb_star)) == "etf"
    assert minimizers.regime(UFM(**base, lambda_b=1.1 * lb_star)) == "etf+shared"
    assert math.isclose(minimizers.class_mean_cosine(UFM(**base)), -1 / 3)
    assert abs(minimizers.class_mean_cosine(UFM(**base, bias=False))) < 1e-15
    assert -1 / 3 < minimizers.class_mean_cosine(UFM(**base, lambda_b=10 * lb_star)) < 0


def test_gradient_matches_autograd(gen):
    ufm = UFM(K=3, n=2, d=4, lambda_W=0.1, lambda_H=0.2, lambda_b=0.3, alpha=2.0, M=1.5)
    x = torch.randn(2, ufm.n_params, generator=gen, dtype=torch.float64, requires_grad=True)
    ufm.value(*ufm.unpack(x)).sum().backward()
    torch.testing.assert_close(x.grad, ufm.pack(*ufm.gradient(*ufm.unpack(x.detach()))))


def test_not_implemented_where_no_closed_form():
    with pytest.raises(NotImplementedError, match="rank-4 .* α = 1"):     # rescaled MSE, d < K−1
        minimizers.global_minimum(UFM(K=5, n=2, d=3, lambda_W=1e-3, lambda_H=1e-3, alpha=2.0))
    with pytest.raises(NotImplementedError, match="rank-5"):   # ETF + shared needs d ≥ K
        minimizers.global_minimizer(UFM(K=5, n=2, d=4, lambda_W=1e-3, lambda_H=1e-3, lambda_b=10.0))
    with pytest.raises(NotImplementedError, match="rank-4"):   # rescaled orthogonal frame needs d ≥ K
        minimizers.global_minimum(UFM(K=4, n=2, d=3, lambda_W=1e-3, lambda_H=1e-3, bias=False, M=2.0, alpha=3.0))
    # the trivial minimizer fits every d
    assert minimizers.global_minimum(UFM(K=4, n=2, d=3, lambda_W=1.0, lambda_H=1.0, bias=False, alpha=3.0)) > 0
    with pytest.raises(ValueError, match="projection only"):
        minimizers.global_minimizer(UFM(K=4, n=2, d=4, lambda_W=1e-3, lambda_H=1e-3), S=torch.eye(4, 4))


@pytest.mark.parametrize("kw,exc,match", [
    (dict(K=1), ValueError, "K must be"),
    (dict(n=0), ValueError, "n must be"),
    (dict(d=0), ValueError, "d must be"),
    (dict(d=2.5), TypeError, "d must be an int"),
    (dict(lambda_W=0.0), ValueError, "lambda_W"),
    (dict(lambda_H=float("nan")), ValueError, "lambda_H"),
    (dict(lambda_b=-1.0), ValueError, "lambda_b"),
    (dict(bias=False, lambda_b=0.1), ValueError, "bias=True"),
    (dict(alpha=-2.0), ValueError, "alpha"),
    (dict(M=0.0), ValueError, "M must be"),
])
def test_bad_parameters(kw, exc, match):
    base = dict(K=3, n=2, d=2, lambda_W=1e-2, lambda_H=1e-2)
    with pytest.raises(exc, match=match):
        UFM(**{**base, **kw})


def test_bad_shapes_and_solver_args():
    ufm = UFM(K=3, n=2, d=2, lambda_W=1e-2, lambda_H=1e-2)
    with pytest.raises(ValueError, match="W must have shape"):
        ufm.objective(torch.zeros(2, 2), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="H must have shape"):
        ufm.objective(torch.zeros(3, 2), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="b must have shape"):
        ufm.objective(torch.zeros(3, 2), torch.zeros(2, 6), torch.zeros(4))
    with pytest.raises(ValueError, match="no bias"):
        UFM(K=3, n=2, d=3, lambda_W=1e-2, lambda_H=1e-2, bias=False).objective(
            torch.zeros(3, 3), torch.zeros(3, 6), torch.zeros(3))
    with pytest.raises(ValueError, match="one point"):
        ufm.objective(torch.zeros(2, 3, 2), torch.zeros(2, 2, 6))
    with pytest.raises(ValueError, match="n_init"):
        ufm.solve(n_init=0)
    with pytest.raises(ValueError, match="regime"):
        minimizers.threshold(UFM(K=3, n=2, d=2, lambda_W=1e-2, lambda_H=1e-2, lambda_b=1.0))


def test_solve_batch_equals_separate_solves():
    base = dict(K=3, n=4, d=3)
    problems = [UFM(**base, lambda_W=lw, lambda_H=2e-3, lambda_b=lb) for lw, lb in ((1e-3, 0.0), (5e-2, 0.0),
                                                                                   (2e-3, 3.0))]
    together = solve_batch(problems, seed=5, n_init=3)
    for p, sol in zip(problems, together, strict=True):
        alone = p.solve(seed=5, n_init=3)
        torch.testing.assert_close(sol.objective, alone.objective, rtol=1e-12, atol=0)
        assert float(((sol.objective - minimizers.global_minimum(p)) / minimizers.global_minimum(p)).abs().max()) < 1e-9
    rows = minimizers.scan(problems, n_init=2)
    assert [r["regime"] for r in rows] == [minimizers.regime(p) for p in problems]
    assert max(abs(r["a"] - r["a_star"]) for r in rows) < 1e-6
    with pytest.raises(ValueError, match="differ only in the λ"):
        solve_batch([UFM(**base, lambda_W=1e-3, lambda_H=1e-3), UFM(K=3, n=4, d=4, lambda_W=1e-3, lambda_H=1e-3)])

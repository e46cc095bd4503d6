import pytest
import torch

from ncmse.optim import first_hit, lbfgs


def test_batched_lbfgs_solves_independent_quadratics(gen):
    B, P = 6, 8
    A = torch.randn(B, P, P, generator=gen, dtype=torch.float64)
    A = A @ A.transpose(1, 2) + torch.logspace(-2, 2, B, dtype=torch.float64)[:, None, None] * torch.eye(P)
    c = torch.randn(B, P, generator=gen, dtype=torch.float64)

    def fun(x):
        Ax = (A @ x[..., None])[..., 0]
        return 0.5 * (x * Ax).sum(1) - (c * x).sum(1), Ax - c

    res = lbfgs(fun, torch.zeros(B, P, dtype=torch.float64), gtol=1e-10)
    x_star = torch.linalg.solve(A, c[..., None])[..., 0]
    torch.testing.assert_close(res.x, x_star, atol=1e-8, rtol=1e-8)
    assert bool(res.converged.all())


def test_rejects_bad_shape():
    with pytest.raises(ValueError, match="shape"):
        lbfgs(lambda x: (x.sum(), x), torch.zeros(3))


def test_first_hit():
    mask = torch.tensor([[False, False, True], [True, False, True], [True, False, False]])
    assert first_hit(mask).tolist() == [1, 3, 0]

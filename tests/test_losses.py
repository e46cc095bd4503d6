import pytest
import torch
import torch.nn.functional as F

from ncmse import losses


def test_rescaled_mse_matches_definition(gen):
    N, K, alpha, M = 7, 4, 5.0, 3.0
    z = torch.randn(N, K, generator=gen, dtype=torch.float64)
    y = torch.randint(0, K, (N,), generator=gen)
    got = losses.rescaled_mse(z, y, alpha, M)
    for i in range(N):
        k = int(y[i])
        want = 0.5 * (alpha * (z[i, k] - M) ** 2 + sum(z[i, j] ** 2 for j in range(K) if j != k))
        assert torch.isclose(got[i], want)


def test_gradient_matches_autograd(gen):
    z = torch.randn(3, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 6, (5,), generator=gen)
    losses.rescaled_mse(z, y, 2.5, 1.5).sum().backward()
    torch.testing.assert_close(z.grad, losses.rescaled_mse_grad(z.detach(), y, 2.5, 1.5))


def test_relation_to_torch_mseloss_and_ce(gen):
    N, K = 11, 10
    z = torch.randn(N, K, generator=gen, dtype=torch.float64)
    y = torch.randint(0, K, (N,), generator=gen)
    ours = losses.mse(z, y).mean()
    torch_mse = torch.nn.MSELoss()(z, F.one_hot(y, K).double())
    torch.testing.assert_close(torch_mse, 2.0 / K * ours)
    torch.testing.assert_close(losses.cross_entropy(z, y), F.cross_entropy(z, y, reduction="none"))
    torch.testing.assert_close(losses.loss_module("rmse", 1.0, 1.0)(z, y), ours)
    torch.testing.assert_close(losses.loss_module("mse", convention="torch")(z, y), torch_mse)


def test_bad_input():
    with pytest.raises(ValueError, match="alpha"):
        losses.RescaledMSELoss(alpha=0)
    with pytest.raises(ValueError, match="M"):
        losses.rescaled_mse(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 1.0, -1.0)
    with pytest.raises(ValueError, match="unknown loss"):
        losses.loss_module("hinge")

import math

import pytest
import torch

from ncmse import etf


@pytest.mark.parametrize("K", [2, 3, 5, 10])
def test_centering_basis_is_orthonormal_basis_of_ones_perp(K):
    U = etf.centering_basis(K)
    assert U.shape == (K, K - 1)
    torch.testing.assert_close(U.T @ U, torch.eye(K - 1, dtype=torch.float64))
    torch.testing.assert_close(U @ U.T, etf.centering_matrix(K))
    torch.testing.assert_close(U.sum(0), torch.zeros(K - 1, dtype=torch.float64))


@pytest.mark.parametrize("K,d", [(3, 2), (4, 7), (10, 9)])
def test_simplex_etf_gram(K, d, gen):
    R = etf.random_orthonormal(d, K - 1, generator=gen)
    V = etf.simplex_etf(K, d, R=R)
    G = V @ V.T
    torch.testing.assert_close(torch.diagonal(G), torch.ones(K, dtype=torch.float64))
    off = G[~torch.eye(K, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1 / (K - 1)))
    assert etf.is_simplex_etf(3.0 * V)
    assert not etf.is_simplex_etf(torch.eye(K, d, dtype=torch.float64))


def test_orthogonal_frame_and_errors():
    F = etf.orthogonal_frame(4, 6)
    torch.testing.assert_close(F @ F.T, torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="d ≥ K−1"):
        etf.simplex_etf(5, 3)
    with pytest.raises(ValueError, match="d ≥ K"):
        etf.orthogonal_frame(5, 4)
    with pytest.raises(ValueError, match="K"):
        etf.centering_basis(1)
    with pytest.raises(ValueError, match="orthonormal"):
        etf.simplex_etf(3, 3, R=torch.ones(3, 2, dtype=torch.float64))
    assert math.isclose(float(etf.random_orthonormal(5, 5).det().abs()), 1.0)


def test_random_projection_lost_is_the_composition_and_empty_at_k_minus_one():
    lost = etf.random_projection_lost(6, 2, 50, generator=torch.Generator().manual_seed(3))
    P = etf.projector(etf.random_subspaces(6, 2, 50, generator=torch.Generator().manual_seed(3)))
    assert lost.shape == (50, 6) and torch.equal(lost, etf.argmax_lost(P)) and bool(lost.any())
    assert not bool(etf.random_projection_lost(6, 5, 50, generator=torch.Generator().manual_seed(3)).any())

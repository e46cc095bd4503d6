import math

import pytest
import torch

from ncmse import etf
from ncmse.metrics import METRIC_NAMES, SAMPLE_METRIC_NAMES, NCAccumulator, nc_metrics, ncc_mismatch


def direct_metrics(X, y, W, b):
    """The definitions of the page Notation (book/notation.md), computed the slow, obvious way (per-sample
    loop, explicit pinv)."""
    N, d = X.shape
    K = W.shape[0]
    mu = torch.stack([X[y == k].mean(0) for k in range(K)])
    muG = X.mean(0)
    SW = sum(torch.outer(X[i] - mu[y[i]], X[i] - mu[y[i]]) for i in range(N)) / N
    SB = sum(torch.outer(mu[k] - muG, mu[k] - muG) for k in range(K)) / K
    ev, V = torch.linalg.eigh(SB)
    r = min(d, K - 1)
    SBp = V[:, -r:] @ torch.diag(1 / ev[-r:]) @ V[:, -r:].T
    C = torch.eye(K, dtype=X.dtype) - 1 / K
    Wt = W - W.mean(0)
    Mbar = (mu - muG).T

    def dist(G):
        return float(torch.linalg.norm(G / torch.linalg.norm(G) - C / math.sqrt(K - 1)))

    # Papyan et al.'s NC4: per sample, does the classifier's argmax differ from the nearest class mean?
    mismatches = 0
    for i in range(N):
        logits = [float(W[k] @ X[i] + b[k]) for k in range(K)]
        distances = [float(torch.linalg.norm(X[i] - mu[k])) for k in range(K)]
        mismatches += logits.index(max(logits)) != distances.index(min(distances))
    return {"NC1": float(torch.trace(SW @ SBp) / K), "NC2": dist(Wt @ Wt.T), "NC2_M": dist(Mbar.T @ Mbar),
            "NC3": dist(Wt @ Mbar), "NC4": float(torch.linalg.norm(W @ muG + b)), "NC4_ncc": mismatches / N}


def random_problem(gen, N=240, d=7, K=5, offset=0.0):
    X = torch.randn(N, d, generator=gen, dtype=torch.float64) + offset
    y = torch.randint(0, K, (N,), generator=gen)
    y[:K] = torch.arange(K)
    W = torch.randn(K, d, generator=gen, dtype=torch.float64)
    b = torch.randn(K, generator=gen, dtype=torch.float64)
    return X, y, W, b


@pytest.mark.parametrize("d,K", [(7, 5), (3, 6), (10, 10)])
def test_matches_direct_definitions(gen, d, K):
    X, y, W, b = random_problem(gen, d=d, K=K)
    got = nc_metrics(X, y, W, b, batch_size=37)   # several batches of unequal class mix
    want = direct_metrics(X, y, W, b)
    for k, v in want.items():
        assert math.isclose(got[k], v, rel_tol=1e-9), (k, got[k], v)
    assert set(got) == set(METRIC_NAMES) | set(SAMPLE_METRIC_NAMES)
    assert 0 < got["NC4_ncc"] < 1          # a random classifier disagrees with the NCC rule on some samples


def test_ncc_mismatch_is_zero_for_the_ncc_classifier_and_counts_flips(gen):
    # The NCC rule as a linear classifier: w_k = μ_k, b_k = −‖μ_k‖²/2 (argmax of μ_k·h − ‖μ_k‖²/2).
    X, y, _, _ = random_problem(gen, N=300, d=6, K=4, offset=2.0)
    mu = torch.stack([X[y == k].mean(0) for k in range(4)])
    b = -(mu**2).sum(1) / 2
    assert nc_metrics(X, y, mu, b, batch_size=41)["NC4_ncc"] == 0.0
    # Swap the classifier rows of classes 0 and 1: exactly the samples nearest to μ_0 or μ_1 now disagree.
    perm = torch.tensor([1, 0, 2, 3])
    nearest = torch.cdist(X, mu).argmin(1)
    want = float(((nearest == 0) | (nearest == 1)).double().mean())
    assert nc_metrics(X, y, mu[perm], b[perm])["NC4_ncc"] == pytest.approx(want, abs=1e-15)
    # the accumulator that keeps its features gives the same rate in its single streaming pass
    acc = NCAccumulator(4, 6, keep_features=True)
    for i in range(0, 300, 64):
        acc.update(X[i:i + 64].float(), y[i:i + 64])
    assert acc.compute(mu[perm], b[perm])["NC4_ncc"] == pytest.approx(want, abs=1e-15)
    plain = NCAccumulator(4, 6)
    plain.update(X, y)
    assert plain.kept is None and "NC4_ncc" not in plain.compute(mu, b)
    assert math.isnan(ncc_mismatch(X, torch.full_like(mu, math.nan), mu, b))   # a diverged network


def test_imbalanced_exact_etf_means_do_not_give_zero_nc2_m():
    # The class means form an exact simplex ETF around 0, but class 0 has 5 times the samples of the
    # others: the sample-weighted global mean μ_G moves towards μ_0, so M̄ = [μ_k − μ_G] is no ETF.
    K, d = 4, 3
    M = etf.simplex_etf(K, d) * 2.0                                 # (K, d), rows sum to 0
    counts = torch.tensor([10, 2, 2, 2])
    X = M.repeat_interleave(counts, 0)
    y = torch.arange(K).repeat_interleave(counts)
    m = nc_metrics(X, y, M)
    assert m["NC1"] < 1e-12                                        # collapsed all the same
    assert m["NC2"] < 1e-12                                        # W = M is an ETF
    assert m["NC2_M"] > 0.05 and m["NC3"] > 0.05                   # but not the means around μ_G
    balanced = nc_metrics(M.repeat_interleave(2, 0), torch.arange(K).repeat_interleave(2), M)
    assert max(balanced["NC2_M"], balanced["NC3"]) < 1e-12


def test_batching_does_not_matter_and_is_stable(gen):
    X, y, W, b = random_problem(gen)
    one = nc_metrics(X, y, W, b, batch_size=10**6)
    for bs in (1, 7, 64):
        many = nc_metrics(X, y, W, b, batch_size=bs)
        for k in one:
            assert math.isclose(one[k], many[k], rel_tol=1e-10, abs_tol=1e-12), (bs, k)
    # A huge common offset: E[hhᵀ] − μμᵀ would lose every digit; the merged update does not.
    big = nc_metrics(X + 1e7, y, W, b, batch_size=50)
    assert math.isclose(big["NC1"], one["NC1"], rel_tol=1e-6)


def test_invariances(gen):
    X, y, W, b = random_problem(gen, d=6, K=4)
    base = nc_metrics(X, y, W, b)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    rotated = nc_metrics(X @ Q.T, y, W @ Q.T, b)        # h → Q h, w → Q w: logits unchanged
    perm = torch.randperm(4, generator=gen)
    inv = torch.argsort(perm)
    permuted = nc_metrics(X, inv[y], W[perm], b[perm])   # relabel class perm[j] as j
    scaled = nc_metrics(2.0 * X, y, 0.5 * W, b)           # logits unchanged
    for k in base:
        assert math.isclose(rotated[k], base[k], rel_tol=1e-9), k
        assert math.isclose(permuted[k], base[k], rel_tol=1e-9), k
        assert math.isclose(scaled[k], base[k], rel_tol=1e-9), k
    w_scaled = nc_metrics(X, y, 7.0 * W, 7.0 * b)
    for k in ("NC1", "NC2", "NC3", "NC2_spectral", "NC3_dual"):
        assert math.isclose(w_scaled[k], base[k], rel_tol=1e-9), k


@pytest.mark.parametrize("K,d", [(4, 3), (5, 8)])
def test_exact_values_on_constructed_etf(K, d):
    n = 3
    M = etf.simplex_etf(K, d) * 2.0                               # class means
    X = M.repeat_interleave(n, 0)
    y = torch.arange(K).repeat_interleave(n)
    m = nc_metrics(X, y, 0.7 * M, torch.full((K,), 0.1, dtype=torch.float64))
    for k in ("NC1", "NC2", "NC2_M", "NC3", "NC2_spectral", "NC3_dual", "NC4_centred"):
        assert m[k] < 1e-12, (k, m[k])
    assert math.isclose(m["NC4"], 0.1 * math.sqrt(K), rel_tol=1e-12)   # μ_G = 0, so Wμ_G + b = b


def test_exact_nc1_two_classes():
    # K = 2, d = 1: means ±1, spread ±σ → Σ_W = σ², Σ_B = 1, NC1 = σ²/K.
    s = 0.3
    X = torch.tensor([[1 - s], [1 + s], [-1 - s], [-1 + s]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    assert math.isclose(nc_metrics(X, y)["NC1"], s**2 / 2, rel_tol=1e-12)


def test_orthogonal_frame_values():
    # Uncentred orthogonal frame: the centred means form an ETF (NC2_M = 0); a non-ETF W has NC2 > 0.
    K = 4
    X = torch.eye(K, dtype=torch.float64).repeat_interleave(2, 0)
    y = torch.arange(K).repeat_interleave(2)
    W = torch.diag(torch.tensor([1.0, 1.0, 1.0, 2.0], dtype=torch.float64))
    m = nc_metrics(X, y, W)
    assert m["NC2_M"] < 1e-12 and m["NC2"] > 0.1 and m["NC2_spectral"] > 0.05


def test_spectral_variant_reaches_zero_below_k_minus_one():
    # d = 2 < K − 1 = 3: class means on a projected ETF; NC2_M cannot be 0, its spectral version is.
    K, d = 4, 2
    U = etf.centering_basis(K)
    M = U[:, :d] * 1.0
    X = M.repeat_interleave(2, 0)
    y = torch.arange(K).repeat_interleave(2)
    m = nc_metrics(X, y, M)
    assert m["NC2_M"] > 0.3 and m["NC2"] > 0.3
    assert m["NC2_M_spectral"] < 1e-12 and m["NC2_spectral"] < 1e-12 and m["NC3_dual"] < 1e-12


def test_accumulator_bad_input():
    acc = NCAccumulator(3, 4)
    with pytest.raises(ValueError, match="features must have shape"):
        acc.update(torch.zeros(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must have shape"):
        acc.update(torch.zeros(5, 4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must lie"):
        acc.update(torch.zeros(2, 4), torch.tensor([0, 3]))
    acc.update(torch.randn(4, 4), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="no samples seen for classes \\[2\\]"):
        acc.compute()
    with pytest.raises(ValueError, match="W must have shape"):
        nc_metrics(torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2]), torch.zeros(3, 5))


def test_accumulator_float32_input_single_pass(gen):
    X, y, W, b = random_problem(gen)
    acc = NCAccumulator(5, 7)
    for i in range(0, len(X), 64):       # a single pass over a stream of float32 batches
        acc.update(X[i:i + 64].float(), y[i:i + 64])
    assert acc.N == len(X)
    got = acc.compute(W, b)
    want = nc_metrics(X.float().double(), y, W, b)
    assert math.isclose(got["NC1"], want["NC1"], rel_tol=1e-10)

"""Neural-collapse metrics NC1–NC4 from a single-pass, numerically stable accumulator.

Definitions (the book's page Notation, as in the paper's official code so that numbers are comparable), for features
h_i ∈ R^d with labels y_i, class means μ_k, global mean μ_G, M̄ = [μ_k − μ_G]_k (d, K):

* Σ_W = 1/N Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ,   Σ_B = 1/K Σ_k (μ_k − μ_G)(μ_k − μ_G)ᵀ
* NC1 = tr(Σ_W Σ_B^†)/K, pseudo-inverse at rank r = min(d, K−1)
* NC2 = ‖W̃W̃ᵀ/‖W̃W̃ᵀ‖_F − C/√(K−1)‖_F, W̃ = W minus its mean row; NC2_M the same for M̄ᵀM̄
* NC3 = ‖W̃M̄/‖W̃M̄‖_F − C/√(K−1)‖_F
* NC4 = ‖W μ_G + b‖

Variants that go to 0 where those cannot (for the reader, see the chapters):

* NC2_spectral, NC2_M_spectral: ‖G/‖G‖_F − P_r/√r‖_F with P_r the projector on the top-r eigenspace
  of G (= W̃W̃ᵀ or M̄ᵀM̄): 0 iff G has r equal non-zero eigenvalues and no others.  Equals NC2 in the
  limit for d ≥ K−1; for d < K−1 it measures "projection of an ETF" (the ETF target is out of reach).
* NC3_dual = ‖W̃/‖W̃‖_F − M̄ᵀ/‖M̄‖_F‖_F: self-duality w̃_k ∝ μ_k − μ_G itself, for every d.
* NC4_centred = ‖C(W μ_G + b)‖: at an MSE optimum W μ_G + b is the optimal bias (a multiple of 1),
  not 0; its centred part does go to 0 and is what matters for the argmax.

Papyan, Han and Donoho's NC4 (2020), "convergence to the nearest class centre", is another quantity
and has its own name here:

* NC4_ncc = 1/N #{i : argmax_k (W h_i + b)_k ≠ argmin_k ‖h_i − μ_k‖}: the fraction of samples on which
  the classifier's prediction disagrees with the nearest-class-mean rule (0 when the classifier acts
  as that rule; a rate in [0, 1], not a norm).  It needs the *final* class means and then a second
  look at every feature, so it cannot come from one streaming pass: :class:`NCAccumulator` with
  ``keep_features=True`` keeps the features it was fed (N × d in their own dtype, on their device) and
  computes it in :meth:`NCAccumulator.compute`; :func:`nc_metrics` always computes it when W is given.
  :func:`nc_metrics_from_statistics` cannot (it sees no samples).

The accumulator keeps per-class counts and means and the pooled within-class scatter, merged batch by
batch with Chan's update (no E[hhᵀ] − μμᵀ cancellation): one GEMM of the centred batch, no per-sample
loop, no B×d×d tensor; statistics in float64 on the features' device.
"""

from __future__ import annotations

import math

import torch

__all__ = ["NCAccumulator", "nc_metrics", "nc_metrics_from_statistics", "ncc_mismatch", "METRIC_NAMES",
           "SAMPLE_METRIC_NAMES"]

#: the metrics that are functions of the class statistics (:func:`nc_metrics_from_statistics`)
METRIC_NAMES = ("NC1", "NC2", "NC2_M", "NC3", "NC4", "NC2_spectral", "NC2_M_spectral", "NC3_dual",
                "NC4_centred")
#: the metrics that need every sample again once the class means are known (:func:`ncc_mismatch`)
SAMPLE_METRIC_NAMES = ("NC4_ncc",)


class NCAccumulator:
    """Streaming class statistics of features: update with batches, then :meth:`~NCAccumulator.compute`.

    K classes, feature dimension d; statistics are held in ``dtype`` (float64) on ``device``.
    ``keep_features``: also keep every batch of features (N × d in the features' own dtype, on
    ``device``) so that :meth:`compute` can add Papyan's NC4_ncc, which needs the final class means
    (module docstring); without it the accumulator's memory does not grow with N.
    """

    def __init__(self, K: int, d: int, *, device=None, dtype=torch.float64, keep_features: bool = False):
        if K < 2 or d < 1:
            raise ValueError(f"need K ≥ 2 and d ≥ 1, got K={K}, d={d}")
        self.K, self.d, self.dtype = K, d, dtype
        self.kept: list[torch.Tensor] | None = [] if keep_features else None   # batches (B, d)
        self.counts = torch.zeros(K, dtype=dtype, device=device)        # (K,)
        self.means = torch.zeros(K, d, dtype=dtype, device=device)      # (K, d)
        self.scatter = torch.zeros(d, d, dtype=dtype, device=device)    # (d, d) Σ_k Σ_i (h−μ_k)(h−μ_k)ᵀ

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: features (B, d), labels (B,) integers in [0, K)."""
        if features.ndim != 2 or features.shape[1] != self.d:
            raise ValueError(f"features must have shape (B, {self.d}), got {tuple(features.shape)}")
        if labels.shape != features.shape[:1]:
            raise ValueError(f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}")
        if labels.numel() == 0:
            return
        labels = labels.to(self.means.device)
        if int(labels.min()) < 0 or int(labels.max()) >= self.K:
            raise ValueError(f"labels must lie in [0, {self.K}), got range [{int(labels.min())}, {int(labels.max())}]")
        if self.kept is not None:
            self.kept.append(features.detach().to(self.means.device))
        X = features.detach().to(device=self.means.device, dtype=self.dtype)
        n_b = torch.bincount(labels, minlength=self.K).to(self.dtype)                    # (K,)
        sums = torch.zeros_like(self.means).index_add_(0, labels, X)                      # (K, d)
        mean_b = sums / n_b.clamp_min(1)[:, None]
        centred = X - mean_b[labels]
        n_a = self.counts
        total = n_a + n_b
        delta = mean_b - self.means                                                       # (K, d)
        c = torch.where(total > 0, n_a * n_b / total.clamp_min(1), torch.zeros_like(total))
        self.scatter += centred.T @ centred + (delta * c[:, None]).T @ delta
        self.means += delta * torch.where(total > 0, n_b / total.clamp_min(1), torch.zeros_like(total))[:, None]
        self.counts = total

    @property
    def N(self) -> int:
        return int(self.counts.sum())

    @property
    def global_mean(self) -> torch.Tensor:
        """μ_G, shape (d,): mean of all features seen."""
        return (self.counts[:, None] * self.means).sum(0) / self.counts.sum()

    @property
    def Sigma_W(self) -> torch.Tensor:
        """Within-class covariance Σ_W, shape (d, d)."""
        return self.scatter / self.counts.sum()

    @property
    def Sigma_B(self) -> torch.Tensor:
        """Between-class covariance Σ_B, shape (d, d)."""
        Mbar = self.means - self.global_mean
        return Mbar.T @ Mbar / self.K

    def compute(self, W: torch.Tensor | None = None, b: torch.Tensor | None = None) -> dict[str, float]:
        """All metrics (module docstring) for W (K, d) and b (K,); those needing W are left out when W is
        None, and NC4_ncc also unless the accumulator keeps its features."""
        if bool((self.counts == 0).any()):
            missing = torch.nonzero(self.counts == 0).flatten().tolist()
            raise ValueError(f"no samples seen for classes {missing}")
        out = nc_metrics_from_statistics(self.means, self.global_mean, self.Sigma_W, W, b)
        if W is not None and self.kept is not None:
            out["NC4_ncc"] = ncc_mismatch(self.kept, self.means, W, b) if self.kept else math.nan
        return out


def _etf_distance(G: torch.Tensor) -> float:
    K = G.shape[0]
    C = torch.eye(K, dtype=G.dtype, device=G.device) - 1.0 / K
    return float(torch.linalg.norm(G / torch.linalg.norm(G) - C / math.sqrt(K - 1)))


def _spectral_distance(G: torch.Tensor, r: int) -> float:
    ev = torch.linalg.eigvalsh(G).flip(0)          # descending, G symmetric PSD
    ev = ev / torch.linalg.norm(ev)
    top, rest = ev[:r], ev[r:]
    return float(torch.sqrt(((top - 1 / math.sqrt(r)) ** 2).sum() + (rest**2).sum()))


def nc_metrics_from_statistics(class_means: torch.Tensor, global_mean: torch.Tensor, Sigma_W: torch.Tensor,
                               W: torch.Tensor | None = None, b: torch.Tensor | None = None) -> dict[str, float]:
    """NC metrics as pure functions of class means (K, d), μ_G (d,), Σ_W (d, d), W (K, d), b (K,).

    The statistics are tiny, so the work happens on the CPU in float64 whatever device they come from
    (cuSOLVER's SVD can fail to converge on the degenerate class-mean matrices of early training).
    Non-finite statistics (a diverged network) give NaN metrics rather than an exception.
    """
    K, d = class_means.shape
    dtype, dev = torch.float64, torch.device("cpu")
    class_means, global_mean, Sigma_W = (t.detach().to(dev, dtype) for t in (class_means, global_mean, Sigma_W))
    if not all(bool(torch.isfinite(t).all()) for t in (class_means, global_mean, Sigma_W)):
        return {k: math.nan for k in METRIC_NAMES if W is not None or k in ("NC1", "NC2_M", "NC2_M_spectral")}
    r = min(d, K - 1)
    Mbar = (class_means - global_mean).T                                    # (d, K)
    U, S, _ = torch.linalg.svd(Mbar, full_matrices=False)
    # Σ_B = Mbar Mbarᵀ / K, so Σ_B^† at rank r is K U_r S_r^{-2} U_rᵀ (tiny singular values dropped).
    keep = S[:r] > S[0] * 1e-12 if S[0] > 0 else torch.zeros(r, dtype=torch.bool, device=dev)
    Ur, Sr = U[:, :r][:, keep], S[:r][keep]
    if Sr.numel() == 0:
        nc1 = math.nan
    else:
        # tr(Σ_W Σ_B^†)/K = Σ_i u_iᵀ Σ_W u_i / s_i²  (the factors K cancel)
        nc1 = float(((Ur.T @ Sigma_W @ Ur).diagonal() / Sr**2).sum())
    out = {"NC1": nc1}
    GM = Mbar.T @ Mbar
    out["NC2_M"] = _etf_distance(GM)
    out["NC2_M_spectral"] = _spectral_distance(GM, r)
    if W is not None:
        W = torch.as_tensor(W).to(device=dev, dtype=dtype)
        if W.shape != (K, d):
            raise ValueError(f"W must have shape (K, d) = ({K}, {d}), got {tuple(W.shape)}")
        Wt = W - W.mean(0)
        GW = Wt @ Wt.T
        out["NC2"] = _etf_distance(GW)
        out["NC2_spectral"] = _spectral_distance(GW, r)
        out["NC3"] = _etf_distance(Wt @ Mbar)
        out["NC3_dual"] = float(torch.linalg.norm(Wt / torch.linalg.norm(Wt) - Mbar.T / torch.linalg.norm(Mbar)))
        z = W @ global_mean
        if b is not None:
            z = z + torch.as_tensor(b).to(device=dev, dtype=dtype)
        out["NC4"] = float(torch.linalg.norm(z))
        out["NC4_centred"] = float(torch.linalg.norm(z - z.mean()))
    return out


def ncc_mismatch(features, class_means: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None = None) -> float:
    """Papyan et al.'s NC4 (``NC4_ncc``): the fraction of samples whose prediction argmax_k (W h + b)_k
    differs from the nearest class mean argmin_k ‖h − μ_k‖ (ties: the first index, for both).

    ``features``: a tensor (N, d) or a list of batches (B, d); class_means (K, d); W (K, d); b (K,) or
    None.  Computed batch by batch in float64 on the features' device: per batch two (B, d) × (d, K)
    products, since argmin_k ‖h − μ_k‖² = argmin_k (‖μ_k‖² − 2 μ_k·h).
    """
    batches = [features] if isinstance(features, torch.Tensor) else list(features)
    if not batches:
        raise ValueError("no features given")
    dev = batches[0].device
    mu = class_means.detach().to(dev, torch.float64)                       # (K, d)
    Wd = torch.as_tensor(W).detach().to(dev, torch.float64)
    bd = None if b is None else torch.as_tensor(b).detach().to(dev, torch.float64)
    if Wd.shape != mu.shape:
        raise ValueError(f"W must have the shape of the class means {tuple(mu.shape)}, got {tuple(Wd.shape)}")
    if not (bool(torch.isfinite(mu).all()) and bool(torch.isfinite(Wd).all())):
        return math.nan                                                    # a diverged network
    sq = (mu**2).sum(1)                                                    # (K,)
    disagree, total = 0, 0
    for X in batches:
        X = X.detach().to(dev, torch.float64)
        z = X @ Wd.T if bd is None else X @ Wd.T + bd                      # (B, K) logits
        nearest = (sq - 2 * X @ mu.T).argmin(1)                            # (B,)
        disagree += int((z.argmax(1) != nearest).sum())
        total += X.shape[0]
    return disagree / total


def nc_metrics(features: torch.Tensor, labels: torch.Tensor, W: torch.Tensor | None = None,
               b: torch.Tensor | None = None, *, batch_size: int = 65536) -> dict[str, float]:
    """NC metrics of features (N, d) (rows are samples) with labels (N,) and classifier W (K, d), b (K,).

    K is taken from W when given, else from the labels.  One pass over the data in batches for the
    class statistics, and with W a second one for NC4_ncc (:func:`ncc_mismatch`).
    """
    if features.ndim != 2:
        raise ValueError(f"features must have shape (N, d), got {tuple(features.shape)}")
    K = W.shape[0] if W is not None else int(labels.max()) + 1
    acc = NCAccumulator(K, features.shape[1], device=features.device, keep_features=W is not None)
    for i in range(0, features.shape[0], batch_size):
        acc.update(features[i:i + batch_size], labels[i:i + batch_size])
    return acc.compute(W, b)

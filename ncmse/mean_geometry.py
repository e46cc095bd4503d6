"""A trained network's class means against the UFM's prediction (chapters "d < K−1" and "Deep networks").

For MSE with a free bias the UFM's global minimizers at d < K−1 have centred class-mean logits
a·P_S with P_S the orthogonal projector onto a d-dimensional subspace S of 1^⊥
(``ncmse.minimizers``, low-rank closed form): the centred class means M̄ = [μ_k − μ_G]_k are, up to
a rotation and a scale, the projection of a simplex ETF onto S.  So their K×K Gram matrix G = M̄ᵀM̄ is a multiple of P_S —
d equal non-zero eigenvalues — and, *given S*, the UFM predicts

* the lengths ‖μ_k − μ_G‖ ∝ √(P_S)_kk (unequal for d < K−1, equal for d ≥ K−1),
* the cosines between centred means (P_S)_kj / √((P_S)_kk (P_S)_jj),
* the classes that lose the argmax at their own mean: those k with (P_S)_jk > (P_S)_kk for some j.

:func:`class_mean_geometry` reads S off the trained means (the top-d eigenvectors of G) and puts each
prediction next to what the network has; at d ≥ K−1, P_S = C and the prediction is the simplex ETF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import etf

__all__ = ["class_mean_geometry", "class_mean_geometries", "GeometrySummary", "geometry_table"]


def class_mean_geometry(result: dict) -> dict:
    """Trained geometry vs the UFM prediction for one result of ``ncmse.cache.run``.

    Uses the training-set class means μ (K, d), global mean μ_G (d,), classifier W (K, d), b (K,) and
    the per-class accuracies.  Returns float64 tensors / floats:

    * ``eigenvalues`` (r,): the r = min(d, K−1) leading eigenvalues of G, divided by their mean (UFM: all 1);
    * ``P_S`` (K, K): the projector onto S, the span of the top-r eigenvectors of G;
    * ``projector_error``: ‖G·r/tr G − P_S‖_F / ‖P_S‖_F (0 when G ∝ P_S);
    * ``lengths`` / ``lengths_ufm`` (K,): ‖μ_k − μ_G‖ and √(P_S)_kk, each divided by its mean;
    * ``cosines`` / ``cosines_ufm`` (K(K−1)/2,): pairwise cosines of the centred means, and of P_S's columns;
    * ``logits`` (K, K): column k = W μ_k + b, the logits of class k's mean;
    * ``lost`` / ``lost_ufm`` (K,) bool: classes losing the argmax at their own mean, in the network
      and as the UFM predicts from S;
    * ``train_accuracy`` / ``test_accuracy`` (K,): per-class accuracies of the run.
    """
    mu = torch.tensor(result["train"]["class_means"], dtype=torch.float64)          # (K, d)
    mu_G = torch.tensor(result["train"]["global_mean"], dtype=torch.float64)        # (d,)
    W = torch.tensor(result["W"], dtype=torch.float64)                              # (K, d)
    b = torch.tensor(result["b"], dtype=torch.float64)                              # (K,)
    K, d = mu.shape
    r = min(d, K - 1)
    M_bar = mu - mu_G                                                               # (K, d), rows sum to 0
    G = M_bar @ M_bar.T                                                             # (K, K)
    evals, evecs = torch.linalg.eigh(G)
    evals, evecs = evals.flip(0)[:r], evecs.flip(1)[:, :r]
    if not float(evals[-1]) > 1e-12 * max(float(evals[0]), 1e-300):
        raise ValueError(f"the class means span fewer than min(d, K−1) = {r} dimensions (dead feature units?)")
    P_S = evecs @ evecs.T
    G_scaled = etf.projector_fit(G, r)[0]                                           # G · r / tr G
    lengths, angles = etf.frame_geometry(M_bar)               # lengths / mean, pairwise angles in degrees
    lengths_ufm, angles_ufm = etf.frame_geometry(evecs)       # the rows of S: a frame with Gram P_S
    logits = W @ mu.T + b[:, None]                                                  # (K, K), column = class
    return {
        "K": K, "d": d, "eigenvalues": evals / evals.mean(), "P_S": P_S,
        "projector_error": float(torch.linalg.matrix_norm(G_scaled - P_S) / torch.linalg.matrix_norm(P_S)),
        "lengths": lengths, "lengths_ufm": lengths_ufm,
        "cosines": torch.cos(torch.deg2rad(angles)), "cosines_ufm": torch.cos(torch.deg2rad(angles_ufm)),
        "logits": logits, "lost": etf.argmax_lost(logits), "lost_ufm": etf.argmax_lost(P_S),
        "train_accuracy": torch.tensor(result["train"]["per_class_accuracy"], dtype=torch.float64),
        "test_accuracy": torch.tensor(result["test"]["per_class_accuracy"], dtype=torch.float64),
    }


def class_mean_geometries(results: list[dict]) -> tuple[list[dict], list[tuple[int, str]]]:
    """:func:`class_mean_geometry` of each run (with its ``seed`` and overall ``test_accuracy_total``
    added), and the (seed, reason) of runs it cannot be computed for — class means spanning fewer
    than min(d, K−1) dimensions, as after feature units died, or runs that diverged."""
    out, skipped = [], []
    for r in results:
        if r.get("diverged"):
            skipped.append((r["config"]["seed"], "the run diverged"))
            continue
        try:
            g = class_mean_geometry(r)
        except ValueError as e:
            skipped.append((r["config"]["seed"], str(e)))
            continue
        out.append({**g, "seed": r["config"]["seed"], "test_accuracy_total": r["test"]["accuracy"]})
    return out, skipped


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


@dataclass(frozen=True)
class GeometrySummary:
    """The class-mean geometry of runs that differ in the seed, summed up for the chapter "Deep networks"
    (build it with :meth:`of`).  Every mean is over the runs in ``geometries`` (NaN where there is none):

    * ``geometries`` / ``skipped``: the two lists of :func:`class_mean_geometries`; ``n`` = len(geometries);
    * ``n_class_runs``: K · n, the (class, run) pairs;
    * ``n_lost`` / ``n_kept``: class-runs the UFM, given each run's subspace S, predicts to lose / keep the
      argmax at their own mean; ``lost_accuracy`` / ``kept_accuracy``: their mean per-class test accuracy;
    * ``agreement``: the fraction of class-runs where the network's own means lose the argmax exactly
      where the UFM predicts (lost in both or kept in both);
    * ``n_lost_network``: class-runs whose own mean loses the argmax in the network;
    * ``projector_error``: the mean of ``projector_error``; ``eigenvalue_ratio``: the mean over runs of the
      largest over the smallest of the leading eigenvalues (UFM: 1);
    * ``predicted_lost_counts`` (K,) int: per class, in how many runs the UFM predicts it lost;
    * ``test_accuracy`` (n, K): the per-class test accuracies, one row per run.
    """

    geometries: list
    skipped: list
    n: int
    n_class_runs: int
    n_lost: int
    n_kept: int
    lost_accuracy: float
    kept_accuracy: float
    agreement: float
    n_lost_network: int
    projector_error: float
    eigenvalue_ratio: float
    predicted_lost_counts: torch.Tensor
    test_accuracy: torch.Tensor

    @classmethod
    def of(cls, results: list[dict]) -> GeometrySummary:
        """The summary of :func:`class_mean_geometries` of ``results`` (runs at one d, any seeds)."""
        gs, skipped = class_mean_geometries(results)
        K = len(gs[0]["lost"]) if gs else 0
        lost = [float(a) for g in gs for a in g["test_accuracy"][g["lost_ufm"]]]
        kept = [float(a) for g in gs for a in g["test_accuracy"][~g["lost_ufm"]]]
        agree = sum(int((g["lost"] == g["lost_ufm"]).sum()) for g in gs)
        return cls(
            geometries=gs, skipped=skipped, n=len(gs), n_class_runs=K * len(gs), n_lost=len(lost),
            n_kept=len(kept), lost_accuracy=_mean(lost), kept_accuracy=_mean(kept),
            agreement=agree / (K * len(gs)) if gs else math.nan,
            n_lost_network=sum(int(g["lost"].sum()) for g in gs),
            projector_error=_mean([g["projector_error"] for g in gs]),
            eigenvalue_ratio=_mean([float(g["eigenvalues"].max() / g["eigenvalues"].min()) for g in gs]),
            predicted_lost_counts=(torch.stack([g["lost_ufm"] for g in gs]).sum(0) if gs
                                   else torch.zeros(0, dtype=torch.int64)),
            test_accuracy=(torch.stack([g["test_accuracy"] for g in gs]) if gs
                           else torch.zeros(0, 0, dtype=torch.float64)))

    def predicted_lost_classes(self, classes) -> list:
        """The names in ``classes`` of the classes the UFM predicts to lose the argmax in at least one run."""
        return [c for c, n in zip(classes, self.predicted_lost_counts.tolist(), strict=True) if n]

    def table_rows(self, label: str, classes) -> list[tuple]:
        """One row per run for the chapter's table: (label, seed, projector_error, classes lost in the
        network, classes lost as the UFM predicts given S, "agreeing/K", overall test accuracy); a
        skipped run gets (label, seed, NaN, why, "", "", NaN)."""
        def names(mask):
            return ", ".join(classes[k] for k in torch.nonzero(mask).flatten().tolist()) or "none"

        rows = []
        for g in self.geometries:
            agree = int((g["lost"] == g["lost_ufm"]).sum())
            rows.append((label, g["seed"], g["projector_error"], names(g["lost"]), names(g["lost_ufm"]),
                         f"{agree}/{len(g['lost'])}", g["test_accuracy_total"]))
        rows += [(label, seed, math.nan, why, "", "", math.nan) for seed, why in self.skipped]
        return rows


def geometry_table(geometry: dict, classes) -> str:
    """One row per run of every loss in ``geometry`` (a label or ``ncmse.variants.Variant`` →
    :class:`GeometrySummary`), as Markdown: the projector error, the classes lost in the network and
    as the UFM predicts given S, how many classes agree, the test accuracy."""
    from .plotting import markdown_table

    rows = [row for v, g in geometry.items() for row in g.table_rows(getattr(v, "label", str(v)), classes)]
    return markdown_table(rows, ["loss", "seed", "‖G − P_S‖ / ‖P_S‖", "lost (network)", "lost (UFM, given S)",
                                 "agree", "test acc"], formats=[None, None, ".3f", None, None, None, ".3f"])

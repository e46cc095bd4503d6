"""The statistics of a deep-network study: runs that differ only in the seed pooled into means and
standard deviations, the *clear gap* rule that compares two losses, and the verdicts built on it
(chapters "Deep networks" and "CIFAR-10").

A gap between the seed means of two losses is *clear* when it exceeds both one accuracy point and two
standard errors of the difference (:func:`clear_gap`).  The claim of Zhou et al. (2022) is reproduced
when MSE is clearly behind cross-entropy at the smallest d and cross-entropy is clearly ahead at no
d ≥ K−1 (:func:`verdict`); a rescaled MSE recovers, partly recovers or does not recover MSE's loss by
the same rule (:func:`recovery`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from .variants import CE, MSE, Variant

__all__ = ["mean_sd", "history_band", "group_seeds", "pool_seeds", "compare", "clear_gap", "Verdict", "verdict",
           "recovery"]


def mean_sd(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for a single value) and count of ``values`` (NaN mean and 0
    for none): the one place the book averages over seeds."""
    v = [float(x) for x in values]
    if not v:
        return math.nan, 0.0, 0
    m = sum(v) / len(v)
    return m, (math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0), len(v)


def history_band(results: list[dict], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """``key`` (e.g. "NC1", "test_accuracy") against epoch over runs that differ in the seed:
    (epochs, mean, min, max) at the epochs where every run measured it."""
    series = [{h["epoch"]: h[key] for h in r["history"] if key in h} for r in results]
    if not series:
        raise ValueError("no results")
    epochs = sorted(set.intersection(*(set(s) for s in series)))
    vals = [[s[e] for s in series] for e in epochs]
    return epochs, [sum(v) / len(v) for v in vals], [min(v) for v in vals], [max(v) for v in vals]


def group_seeds(results: list[dict]) -> dict[tuple, list[dict]]:
    """Results that differ only in the seed, keyed by (variant, d, feature_relu), in input order."""
    groups = defaultdict(list)
    for r in results:
        c = r["config"]
        groups[(Variant.of(c), c["d"], c["feature_relu"])].append(r)
    return dict(groups)


def pool_seeds(results: list[dict]) -> list[dict]:
    """Results grouped by everything but the seed (:func:`group_seeds`): one row per (variant, d,
    feature_relu) with the mean, sample standard deviation and count ``n`` over seeds of train/test
    accuracy and live units.  Diverged runs have no accuracy: they are left out of the statistics and
    counted in ``diverged`` (their seeds in ``diverged_seeds``); a group of diverged runs only has
    NaN statistics and ``n`` = 0.

    The numbers are read from the tidy table of the runs (``ncmse.results.runs_table``), the same one a
    chapter offers as CSV, so that a chapter's tables and its download cannot disagree."""
    from .results import runs_table

    table = runs_table(results)                 # one row per result, in input order
    rows = []
    for v, d, relu in group_seeds(results):      # the groups, in order of first appearance
        mine = table[(table["loss"] == v.loss) & (table["alpha"] == v.alpha) & (table["M"] == v.M)
                     & (table["d"] == d) & (table["feature_relu"] == relu)]
        ok, bad = mine[~mine["diverged"]], mine[mine["diverged"]]
        row = {"variant": v, "label": v.label, "d": d, "feature_relu": relu, "n": len(ok),
               "seeds": sorted(int(s) for s in ok["seed"]), "diverged": len(bad),
               "diverged_seeds": sorted(int(s) for s in bad["seed"])}
        for name, column in (("test", "test_accuracy"), ("train", "train_accuracy"), ("live", "live_units")):
            vals = [float(x) for x in ok[column]]
            row[f"{name}_mean"], row[f"{name}_std"], _ = mean_sd(vals)
            row[f"{name}_values"] = vals
        rows.append(row)
    return sorted(rows, key=lambda r: (r["label"], r["feature_relu"], r["d"]))


def compare(pooled: list[dict], a: Variant, b: Variant, *, K: int, metric: str = "test",
            min_gap: float = 0.01, feature_relu: bool | None = None) -> list[dict]:
    """Per d, the accuracy gap of ``b`` over ``a`` (b − a) with its standard error over seeds, and
    whether it is *clear*: larger than both 2 standard errors and ``min_gap`` (one point).

    ``pooled``: rows of :func:`pool_seeds`.  Runs are compared with runs of the same feature layer:
    ``feature_relu`` picks the rows with (True) or without (False) the feature ReLU; None takes the one
    kind ``pooled`` holds, and a ValueError where it holds both."""
    kinds = {r["feature_relu"] for r in pooled}
    if feature_relu is None and len(kinds) > 1:
        raise ValueError("runs with and without the feature ReLU: pass feature_relu= to compare one kind")
    by = {(r["variant"], r["d"]): r for r in pooled if feature_relu is None or r["feature_relu"] == feature_relu}
    out = []
    for d in sorted({d for (v, d) in by if v in (a, b)}):
        if (a, d) not in by or (b, d) not in by or not (by[(a, d)]["n"] and by[(b, d)]["n"]):
            continue                  # missing, or every seed diverged
        ra, rb = by[(a, d)], by[(b, d)]
        out.append({"d": d, "below": d < K - 1,
                    **clear_gap(ra[f"{metric}_values"], rb[f"{metric}_values"], min_gap=min_gap)})
    return out


def clear_gap(a_values, b_values, *, min_gap: float = 0.01) -> dict:
    """The book's rule for two sets of values over seeds (accuracies of a and of b): their means ``a``,
    ``b``, the ``gap`` b − a, its standard error ``se`` (sample standard deviations; 0 for one value)
    and whether it is ``clear``: larger than both 2 standard errors and ``min_gap``."""
    if not len(a_values) or not len(b_values):
        raise ValueError("clear_gap needs at least one value on each side")
    (ma, sa, na), (mb, sb, nb) = mean_sd(a_values), mean_sd(b_values)
    gap, se = mb - ma, math.sqrt(sa ** 2 / na + sb ** 2 / nb)
    return {"a": ma, "b": mb, "gap": gap, "se": se, "clear": abs(gap) > max(2 * se, min_gap)}


@dataclass(frozen=True)
class Verdict:
    """Whether the claim held: ``below`` — at the smallest d < K−1 ``b`` (cross-entropy) beats ``a``
    (MSE) clearly; ``above`` — at no d ≥ K−1 is ``b`` clearly ahead of ``a`` (the claim is that MSE is
    not worse there; MSE ahead does not contradict it); ``reproduced`` = both."""

    below: bool
    above: bool

    @property
    def reproduced(self) -> bool:
        return self.below and self.above

    def sentence(self, a: str, b: str) -> str:
        if self.reproduced:
            return (f"reproduced: {a} loses accuracy against {b} below K−1 and is not behind it (by more than "
                    f"one point and two standard errors) at and above K−1")
        parts = []
        parts.append(f"{a} {'is' if self.below else 'is not'} clearly behind {b} at the smallest d below K−1")
        parts.append(f"{a} {'is not' if self.above else 'is'} clearly behind {b} somewhere at or above K−1")
        return "not reproduced: " + "; ".join(parts)


def recovery(pooled: list[dict], candidate: Variant, *, d: int, K: int, baseline: Variant = MSE,
             target: Variant = CE) -> str:
    """How much of ``target``'s lead over ``baseline`` at dimension d ``candidate`` wins back, by the
    *clear* rule of :func:`compare`: "does not recover" (not clearly above the baseline), "partly
    recovers" (clearly above it, clearly below the target) or "recovers" (no clear gap to the target)."""
    def at_d(a, b):
        rows = [r for r in compare(pooled, a, b, K=K) if r["d"] == d]
        if not rows:
            raise ValueError(f"no runs of both {a.label} and {b.label} at d = {d}")
        return rows[0]

    up, rest = at_d(baseline, candidate), at_d(candidate, target)
    if not (up["clear"] and up["gap"] > 0):
        return "does not recover"
    return "partly recovers" if rest["clear"] and rest["gap"] > 0 else "recovers"


def verdict(comparison: list[dict]) -> Verdict:
    """The reproduction rule of :class:`Verdict` applied to a :func:`compare` table."""
    below = [r for r in comparison if r["below"]]
    above = [r for r in comparison if not r["below"]]
    if not below or not above:
        raise ValueError("the comparison needs dimensions on both sides of K−1")
    smallest = min(below, key=lambda r: r["d"])
    return Verdict(below=smallest["clear"] and smallest["gap"] > 0,
                   above=not any(r["clear"] and r["gap"] > 0 for r in above))

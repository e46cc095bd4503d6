"""The d-sweep study of the chapter "Deep networks" (book/deep_networks.md): which losses are compared,
how each one's learning rate is chosen, how seeds are pooled, and the rule that says whether the
paper's claim reproduced.

The claim (Zhou et al., 2022, Sec. 5): with feature dimension d ≥ K−1 a network trained with MSE
reaches the accuracy of one trained with cross-entropy; with d < K−1 MSE loses accuracy — the UFM's
global minimizers are then projections of a simplex ETF on which some classes lose the argmax at
their own mean (chapter "d < K−1") — while cross-entropy holds up better.

Learning rates (MSE and cross-entropy want different ones) are tuned per loss and per
side of K−1 on held-out *training* images (:func:`tune_lr`): every candidate lr is trained at one
feature dimension below K−1 and one above, and at each the lr with the best held-out accuracy is kept
(ties → the smaller lr); a run at dimension d uses the lr chosen on its side of K−1.  The test split
is not looked at while tuning.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from .config import RunConfig, d_grid, profile_config, study_settings
from .experiments import ResultsCache, sweep

__all__ = ["StudyResults", "run_study", "Variant", "MSE", "CE", "rescaled_variants", "LRChoice", "tuning_configs",
           "tune_lr", "pick_rescaled", "configs", "history_band", "group_seeds", "pool_seeds", "compare", "recovery",
           "Verdict", "verdict"]


@dataclass(frozen=True)
class Variant:
    """A training loss with its rescaling: ``loss`` in {"mse", "rmse", "ce"}, α and M for "rmse"."""

    loss: str
    alpha: float = 1.0
    M: float = 1.0

    @property
    def label(self) -> str:
        if self.loss == "rmse":
            return f"RMSE α={self.alpha:g}, M={self.M:g}"
        return {"mse": "MSE", "ce": "CE"}[self.loss]

    def config(self, base: RunConfig, **changes) -> RunConfig:
        """``base`` trained with this loss (and ``changes``)."""
        return base.replace(loss=self.loss, alpha=float(self.alpha), M=float(self.M), **changes)

    @classmethod
    def of(cls, config: RunConfig | dict) -> Variant:
        c = config.to_dict() if isinstance(config, RunConfig) else config
        return cls(c["loss"], float(c["alpha"]), float(c["M"]))


MSE = Variant("mse")
CE = Variant("ce")


def rescaled_variants(alphas=(1, 5, 15, 20), Ms=(1, 3, 5, 7, 10)) -> list[Variant]:
    """The paper's rescaled-MSE sweeps: α over ``alphas`` at M = 1, then M over ``Ms`` at α = 1.
    The point α = M = 1 is plain MSE and appears once, as :data:`MSE`."""
    out = []
    for a, m in [(a, 1.0) for a in alphas] + [(1.0, m) for m in Ms]:
        v = MSE if (float(a), float(m)) == (1.0, 1.0) else Variant("rmse", float(a), float(m))
        if v not in out:
            out.append(v)
    return out


@dataclass(frozen=True)
class LRChoice:
    """The learning rates kept for one variant: ``by_d[d]`` is the lr chosen at tuning dimension d and
    ``scores[d][lr]`` its held-out accuracy; ``edge`` lists the tuning d's whose winner is the smallest
    or largest candidate (the grid may be too narrow there).  ``tuned`` is False where a single lr was
    given (no tuning: the paper profile); then ``by_d`` is {0: lr}."""

    variant: Variant
    by_d: dict
    scores: dict
    edge: tuple
    tuned: bool

    def edge_margin(self, d: int) -> float:
        """At tuning dimension d, how much the chosen lr's held-out accuracy beats the best rate strictly
        inside the grid (≤ 0 when an inner rate wins; NaN for grids of fewer than three rates)."""
        lrs = sorted(self.scores[d])
        if len(lrs) < 3:
            return math.nan
        return self.scores[d][self.by_d[d]] - max(self.scores[d][lr] for lr in lrs[1:-1])

    def lr(self, d: int, K: int) -> float:
        """The lr for a run at feature dimension d: the one chosen at the tuning dimension on the same
        side of K−1 (d < K−1 or d ≥ K−1), the nearest in log d; the nearest overall if that side has none."""
        if not self.tuned:
            return self.by_d[0]
        side = [t for t in self.by_d if (t < K - 1) == (d < K - 1)] or list(self.by_d)
        return self.by_d[min(side, key=lambda t: (abs(math.log(t / d)), t))]


def tuning_configs(base: RunConfig, variant: Variant, *, lrs, ds, holdout_per_class: int) -> list[RunConfig]:
    """The validation runs of one variant: every lr × every tuning d, evaluated on held-out images."""
    return [variant.config(base, d=d, lr=float(lr), holdout_per_class=holdout_per_class, test_per_class=None,
                           nc_epochs=()) for lr in lrs for d in ds]


def tune_lr(base: RunConfig, variants, *, lrs, ds, holdout_per_class: int | None,
            cache: ResultsCache | None = None, progress: bool = True, data_root=None,
            device=None) -> dict[Variant, LRChoice]:
    """Choose each variant's learning rate on held-out training data, separately at each tuning
    dimension in ``ds`` (one below K−1, one above: MSE's best lr differs between the two sides);
    rule: the best held-out accuracy, ties → the smaller lr; a run that diverged scores −inf, below
    every run that trained.  With a single lr nothing is trained."""
    lrs = sorted(float(lr) for lr in lrs)
    if not lrs:
        raise ValueError("need at least one learning rate")
    variants = list(variants)
    if len(lrs) == 1:
        return {v: LRChoice(v, {0: lrs[0]}, {}, (), False) for v in variants}
    if not ds or holdout_per_class is None:
        raise ValueError("tuning several learning rates needs tuning dimensions ds and holdout_per_class")
    configs = [c for v in variants for c in tuning_configs(base, v, lrs=lrs, ds=ds,
                                                            holdout_per_class=holdout_per_class)]
    results = sweep(configs, cache=cache, progress=progress, data_root=data_root, device=device)
    acc = {}
    for r in results:
        if r.get("evaluated_on") != "holdout":
            raise RuntimeError("a tuning run was not evaluated on held-out data")
        c = r["config"]
        # a diverged run scores below every run that trained (−inf), so its lr is never chosen
        acc[(Variant.of(c), c["d"], c["lr"])] = -math.inf if r.get("diverged") else r["test"]["accuracy"]
    out = {}
    for v in variants:
        scores = {d: {lr: acc[(v, d, lr)] for lr in lrs} for d in ds}
        by_d = {d: max(lrs, key=lambda lr: (scores[d][lr], -lr)) for d in ds}
        edge = tuple(d for d in ds if by_d[d] in (lrs[0], lrs[-1]))
        out[v] = LRChoice(v, by_d, scores, edge, True)
    return out


def pick_rescaled(choices: dict[Variant, LRChoice], *, fixed: tuple[float, float] | None = None) -> Variant:
    """The rescaled variant carried through the whole d-sweep: ``fixed`` (α, M) where the profile names
    one, else the rescaled variant with the best held-out accuracy at the smallest tuning dimension
    (below K−1, where the question is), at its chosen lr (ties → the earlier variant)."""
    if fixed is not None:
        return Variant("rmse", float(fixed[0]), float(fixed[1]))
    candidates = [c for v, c in choices.items() if v.loss == "rmse" and c.tuned]
    if not candidates:
        raise ValueError("no tuned rescaled variant to pick from; give `fixed`")

    def score(c):
        d = min(c.by_d)
        return c.scores[d][c.by_d[d]]
    return max(candidates, key=score).variant


def configs(base: RunConfig, choices: dict[Variant, LRChoice], variants, *, ds, seeds, K: int = 10,
            **changes) -> list[RunConfig]:
    """The test runs: every variant × d × seed around ``base``, each at its chosen lr for that d."""
    return [v.config(base, d=d, seed=s, lr=choices[v].lr(d, K), **changes) for v in variants for d in ds
            for s in seeds]


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
    NaN statistics and ``n`` = 0."""
    rows = []
    for (v, d, relu), group in group_seeds(results).items():
        rs = [r for r in group if not r.get("diverged")]
        bad = [r for r in group if r.get("diverged")]
        row = {"variant": v, "label": v.label, "d": d, "feature_relu": relu, "n": len(rs),
               "seeds": sorted(r["config"]["seed"] for r in rs), "diverged": len(bad),
               "diverged_seeds": sorted(r["config"]["seed"] for r in bad)}
        for name, get in (("test", lambda r: r["test"]["accuracy"]), ("train", lambda r: r["train"]["accuracy"]),
                          ("live", lambda r: r["train"]["live_units"])):
            vals = [float(get(r)) for r in rs]
            mean = sum(vals) / len(vals) if vals else math.nan
            row[f"{name}_mean"] = mean
            row[f"{name}_std"] = (math.sqrt(sum((x - mean) ** 2 for x in vals) / (len(vals) - 1))
                                  if len(vals) > 1 else 0.0)
            row[f"{name}_values"] = vals
        rows.append(row)
    return sorted(rows, key=lambda r: (r["label"], r["feature_relu"], r["d"]))


def compare(pooled: list[dict], a: Variant, b: Variant, *, K: int, metric: str = "test",
            min_gap: float = 0.01) -> list[dict]:
    """Per d, the accuracy gap of ``b`` over ``a`` (b − a) with its standard error over seeds, and
    whether it is *clear*: larger than both 2 standard errors and ``min_gap`` (one point)."""
    by = {(r["variant"], r["d"]): r for r in pooled if r["feature_relu"]}
    out = []
    for d in sorted({d for (v, d) in by if v in (a, b)}):
        if (a, d) not in by or (b, d) not in by or not (by[(a, d)]["n"] and by[(b, d)]["n"]):
            continue                  # missing, or every seed diverged
        ra, rb = by[(a, d)], by[(b, d)]
        gap = rb[f"{metric}_mean"] - ra[f"{metric}_mean"]
        se = math.sqrt(ra[f"{metric}_std"] ** 2 / ra["n"] + rb[f"{metric}_std"] ** 2 / rb["n"])
        out.append({"d": d, "below": d < K - 1, "a": ra[f"{metric}_mean"], "b": rb[f"{metric}_mean"],
                    "gap": gap, "se": se, "clear": abs(gap) > max(2 * se, min_gap)})
    return out


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


@dataclass
class StudyResults:
    """Everything the chapter "Deep networks" trains at one profile (see :func:`run_study`)."""

    profile: str
    settings: dict
    base: RunConfig
    K: int
    grid: tuple
    choices: dict            # Variant → LRChoice, for MSE, CE and every rescaled variant
    rescaled: list           # the rescaled variants of the paper's sweeps (without plain MSE)
    rmse: Variant            # the rescaled variant carried through the d-sweep
    runs: list               # MSE, CE, rmse × grid × seeds (feature ReLU)
    rescaled_runs: list      # rescaled × rescaled_ds × seeds
    linear_runs: list        # MSE, CE × grid × linear_seeds without the feature ReLU

    @property
    def all_runs(self) -> list:
        return [*self.runs, *self.rescaled_runs, *self.linear_runs]

    @property
    def unique_runs(self) -> list:
        """:attr:`all_runs` with each configuration once, as first seen (the d-sweep's rescaled MSE is
        also part of the rescaled sweeps; its second listing comes from the cache)."""
        first = {}
        for r in self.all_runs:
            first.setdefault(RunConfig.from_dict(r["config"]).key(), r)
        return list(first.values())

    @property
    def diverged(self) -> list:
        """The runs of :attr:`unique_runs` whose loss stopped being finite (tuning runs not included)."""
        return [r for r in self.unique_runs if r.get("diverged")]

    def divergence_summary(self) -> str:
        """One sentence for the chapter: how many runs diverged, which, and what was done with them."""
        bad = self.diverged
        if not bad:
            return f"None of the {len(self.unique_runs)} runs above diverged."
        names = "; ".join(f"{Variant.of(r['config']).label} d={r['config']['d']} seed={r['config']['seed']} "
                          f"lr={r['config']['lr']:g}" for r in bad[:6]) + ("; …" if len(bad) > 6 else "")
        return (f"{len(bad)} of the {len(self.unique_runs)} runs diverged (the training loss stopped being finite) "
                f"and are left out of the means and counted as missing seeds: {names}.")


def run_study(profile: str, *, cache: ResultsCache | None = None, device=None, progress: bool = True,
              data_root=None, grid=None, overrides: dict | None = None, **base_changes) -> StudyResults:
    """Tune, then train (or read from the cache) every run of the chapter at ``profile``: the stages of
    the chapter in order.  ``grid``, ``overrides`` (of ``ncmse.config.study_settings(profile)``) and
    ``base_changes`` (of the base :class:`RunConfig`) shrink it for checks; the chapter uses none."""
    S = {**study_settings(profile), **(overrides or {})}
    base = profile_config(profile, **base_changes)
    grid = tuple(grid or d_grid(profile))
    K = 10                                           # MNIST, Fashion-MNIST and CIFAR-10
    kw = dict(cache=cache, progress=progress, data_root=data_root, device=device)
    rescaled = [v for v in rescaled_variants(S["alphas"], S["Ms"]) if v != MSE]
    choices = tune_lr(base, [MSE, CE, *rescaled], lrs=S["lrs"], ds=S["tune_ds"],
                      holdout_per_class=S["holdout_per_class"], **kw)
    rmse = pick_rescaled(choices, fixed=S["sweep_rescaled"])
    if rmse not in choices:
        choices[rmse] = tune_lr(base, [rmse], lrs=S["lrs"], ds=S["tune_ds"],
                                holdout_per_class=S["holdout_per_class"], **kw)[rmse]
    runs = sweep(configs(base, choices, [MSE, CE, rmse], ds=grid, seeds=S["seeds"], K=K), **kw)
    rescaled_runs = sweep(configs(base, choices, rescaled, ds=S["rescaled_ds"], seeds=S["seeds"], K=K), **kw)
    linear_runs = sweep(configs(base, choices, [MSE, CE], ds=grid, seeds=S["linear_seeds"], K=K, feature_relu=False),
                        **kw)
    return StudyResults(profile, S, base, K, grid, choices, rescaled, rmse, runs, rescaled_runs, linear_runs)

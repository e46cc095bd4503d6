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

:class:`StudySummary` (``run_study(...).summary()``) holds everything the chapter shows of the results:
its tables, its numbers and its sentences, so that the chapter's cells only call it, assert and plot.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from . import etf
from .config import RunConfig
from .executors import Executor, sweep
from .experiments import ROOT, ResultsCache
from .mean_geometry import GeometrySummary, geometry_table
from .profiles import PROFILES, d_grid, profile_config, study_settings

__all__ = ["StudyResults", "run_study", "Variant", "MSE", "CE", "rescaled_variants", "LRChoice", "tuning_configs",
           "tune_lr", "pick_rescaled", "configs", "curves_only_where_drawn", "history_band", "group_seeds",
           "pool_seeds", "compare",
           "clear_gap", "recovery", "Verdict", "verdict", "StudySummary", "NCSummary", "RescaledSummary",
           "LinearSummary", "RunTotals",
           "projected_etf_nc2", "paper_gpu_hours", "Plan", "plan", "deep_rescaled"]


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


#: plain MSE (α = M = 1)
MSE = Variant("mse")
#: cross-entropy
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
    # successive halving: ``early[d][lr]`` the held-out accuracy of every candidate after epoch ``rung``;
    # ``scores[d]`` then holds only the rates trained to the end
    early: dict = field(default_factory=dict)
    rung: int | None = None

    def edge_margin(self, d: int) -> float:
        """At tuning dimension d, how much the chosen lr's held-out accuracy beats the best rate strictly
        inside the grid that was trained to the end (≤ 0 when an inner rate wins; NaN for grids of fewer
        than three rates, or where every inner rate was stopped early)."""
        grid = sorted(self.early[d]) if self.early else sorted(self.scores[d])
        inner = [lr for lr in grid[1:-1] if lr in self.scores[d]]
        if len(grid) < 3 or not inner:
            return math.nan
        return self.scores[d][self.by_d[d]] - max(self.scores[d][lr] for lr in inner)

    def lr(self, d: int, K: int) -> float:
        """The lr for a run at feature dimension d: the one chosen at the tuning dimension on the same
        side of K−1 (d < K−1 or d ≥ K−1), the nearest in log d; the nearest overall if that side has none."""
        if not self.tuned:
            return self.by_d[0]
        side = [t for t in self.by_d if (t < K - 1) == (d < K - 1)] or list(self.by_d)
        return self.by_d[min(side, key=lambda t: (abs(math.log(t / d)), t))]


def tuning_configs(base: RunConfig, variant: Variant, *, lrs, ds, holdout_per_class: int,
                   rung: int | None = None) -> list[RunConfig]:
    """The validation runs of one variant: every lr × every tuning d, evaluated on held-out images
    (with ``rung``, also after that epoch: the successive halving's first look)."""
    return [variant.config(base, d=d, lr=float(lr), holdout_per_class=holdout_per_class, test_per_class=None,
                           nc_epochs=(rung,) if rung else ()) for lr in lrs for d in ds]


def _holdout_scores(results: list[dict]) -> dict:
    """(variant, d, lr) → held-out accuracy of tuning results; a diverged run scores −inf, below every
    run that trained, so its lr is never chosen."""
    acc = {}
    for r in results:
        if r.get("evaluated_on") != "holdout":
            raise RuntimeError("a tuning run was not evaluated on held-out data")
        c = r["config"]
        acc[(Variant.of(c), c["d"], c["lr"])] = -math.inf if r.get("diverged") else r["test"]["accuracy"]
    return acc


def tune_lr(base: RunConfig, variants, *, lrs, ds, holdout_per_class: int | None,
            cache: ResultsCache | None = None, progress: bool = True, data_root=None,
            device=None, executor: Executor | None = None, on_done=None,
            halving: tuple[int, int] | None = None) -> dict[Variant, LRChoice]:
    """Choose each variant's learning rate on held-out training data, separately at each tuning
    dimension in ``ds`` (one below K−1, one above: MSE's best lr differs between the two sides);
    rule: the best held-out accuracy, ties → the smaller lr; a run that diverged scores −inf, below
    every run that trained.  With a single lr nothing is trained.

    ``halving = (rung, keep)``: successive halving.  Every candidate trains its schedule up to epoch
    ``rung`` only (``RunConfig.stop_epoch``), and is scored there on the held-out images; per variant
    and tuning d, the ``keep`` best go on to the end of the schedule, resuming from where they stopped
    (the same checkpoint: training is exactly that of an uninterrupted run), and the rule above picks
    among them.  The other candidates cost ``rung`` epochs instead of all.  Use it where a rate's rank
    settles early: under a cosine schedule the large rates are still high at an early rung and rank
    low there (seen on the deep study at ``cpu``: after 5 of 15 epochs, 4 of 18 choices differed from
    the full grid's), so no profile but ``smoke`` (which exercises it) uses it today."""
    lrs = sorted(float(lr) for lr in lrs)
    if not lrs:
        raise ValueError("need at least one learning rate")
    variants = list(variants)
    if len(lrs) == 1:
        return {v: LRChoice(v, {0: lrs[0]}, {}, (), False) for v in variants}
    if not ds or holdout_per_class is None:
        raise ValueError("tuning several learning rates needs tuning dimensions ds and holdout_per_class")
    rung, keep = halving if halving is not None else (None, len(lrs))
    kw = dict(cache=cache, progress=progress, data_root=data_root, device=device, executor=executor, on_done=on_done)
    configs = {(v, c.d, c.lr): c for v in variants
               for c in tuning_configs(base, v, lrs=lrs, ds=ds, holdout_per_class=holdout_per_class, rung=rung)}
    early = {}
    if rung is not None:
        early = _holdout_scores(sweep([c.replace(stop_epoch=rung) for c in configs.values()], **kw))
        kept = {(v, d): sorted(lrs, key=lambda lr: (-early[(v, d, lr)], lr))[:keep] for v in variants for d in ds}
        full = [configs[(v, d, lr)] for (v, d), rates in kept.items() for lr in rates]
    else:
        full = list(configs.values())
    acc = _holdout_scores(sweep(full, **kw))
    out = {}
    for v in variants:
        scores = {d: {lr: acc[(v, d, lr)] for lr in lrs if (v, d, lr) in acc} for d in ds}
        by_d = {d: max(scores[d], key=lambda lr: (scores[d][lr], -lr)) for d in ds}
        edge = tuple(d for d in ds if by_d[d] in (lrs[0], lrs[-1]))
        out[v] = LRChoice(v, by_d, scores, edge, True,
                          early={d: {lr: early[(v, d, lr)] for lr in lrs} for d in ds} if early else {}, rung=rung)
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


def curves_only_where_drawn(config: RunConfig, nc_ds, variants) -> RunConfig:
    """``config`` measuring NC during training (its ``nc_epochs``) only if the chapter draws its curve:
    a run of one of ``variants`` at a d of ``nc_ds`` with the feature ReLU; every other run measures
    NC once, after its last epoch.  Measuring does not change training (evaluation draws no random
    numbers and updates nothing), so the two configurations train the same network; an evaluation
    pass costs about a third of an epoch's steps per image."""
    drawn = config.feature_relu and config.d in tuple(nc_ds) and Variant.of(config) in tuple(variants)
    return config if drawn else config.replace(nc_epochs=())


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
        out.append({"d": d, "below": d < K - 1,
                    **clear_gap(ra[f"{metric}_values"], rb[f"{metric}_values"], min_gap=min_gap)})
    return out


def clear_gap(a_values, b_values, *, min_gap: float = 0.01) -> dict:
    """The book's rule for two sets of values over seeds (accuracies of a and of b): their means ``a``,
    ``b``, the ``gap`` b − a, its standard error ``se`` (sample standard deviations; 0 for one value)
    and whether it is ``clear``: larger than both 2 standard errors and ``min_gap``."""
    def mean_sd(v):
        v = [float(x) for x in v]
        if not v:
            raise ValueError("clear_gap needs at least one value on each side")
        m = sum(v) / len(v)
        return m, (math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0), len(v)

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


@dataclass
class StudyResults:
    """Everything a chapter's study ("Deep networks", "CIFAR-10") trains at one profile (see :func:`run_study`)."""

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
    study: str = "deep"      # ncmse.config.STUDIES

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

    def summary(self) -> StudySummary:
        """The numbers, tables and sentences of the chapter computed from these results."""
        return StudySummary(self)


def run_study(profile: str, *, study: str = "deep", cache: ResultsCache | None = None, device=None,
              progress: bool = True, data_root=None, grid=None, overrides: dict | None = None,
              executor: Executor | None = None, on_done=None, **base_changes) -> StudyResults:
    """Tune, then train (or read from the cache) every run of a chapter's study at ``profile``, stage by
    stage: the learning-rate tuning, then every test run at the chosen rates.  ``study``: "deep" (the
    chapter "Deep networks") or "cifar10" (the chapter "CIFAR-10"; its rescaled MSE is the one the deep
    study chose, :func:`deep_rescaled`).  ``executor``: where runs train (``ncmse.executors``; default
    from the environment, sequential unless ``NCMSE_EXECUTOR`` says otherwise).  ``on_done(config)``:
    called for every run (tuning runs included) once its result is in the cache.  ``grid``,
    ``overrides`` (of ``ncmse.profiles.study_settings(profile, study)``) and ``base_changes`` (of the base
    :class:`~ncmse.config.RunConfig`) shrink it for checks; the chapters use none."""
    S = {**study_settings(profile, study), **(overrides or {})}
    base = profile_config(profile, study, device=device, **base_changes)
    grid = tuple(grid or d_grid(profile, study))
    K = 10                                           # MNIST, Fashion-MNIST and CIFAR-10
    kw = dict(cache=cache, progress=progress, data_root=data_root, device=device, executor=executor, on_done=on_done)
    rescaled = [v for v in rescaled_variants(S["alphas"], S["Ms"]) if v != MSE]
    if S["sweep_rescaled"] == "deep":
        rmse = deep_rescaled(profile, **{**kw, "on_done": None})     # the deep study's runs, not this one's
        choices = tune_lr(base, [MSE, CE, rmse], lrs=S["lrs"], ds=S["tune_ds"],
                          holdout_per_class=S["holdout_per_class"], halving=S.get("halving"), **kw)
    else:
        choices = tune_lr(base, [MSE, CE, *rescaled], lrs=S["lrs"], ds=S["tune_ds"],
                          holdout_per_class=S["holdout_per_class"], halving=S.get("halving"), **kw)
        rmse = pick_rescaled(choices, fixed=S["sweep_rescaled"])
        if rmse not in choices:
            choices[rmse] = tune_lr(base, [rmse], lrs=S["lrs"], ds=S["tune_ds"],
                                    holdout_per_class=S["holdout_per_class"], halving=S.get("halving"), **kw)[rmse]
    # the test runs depend only on the chosen rates: one stage, so that parallel workers stay busy
    stage = [configs(base, choices, [MSE, CE, rmse], ds=grid, seeds=S["seeds"], K=K),
             configs(base, choices, rescaled, ds=S["rescaled_ds"], seeds=S["seeds"], K=K),
             configs(base, choices, [MSE, CE], ds=grid, seeds=S["linear_seeds"], K=K, feature_relu=False)]
    stage = [[curves_only_where_drawn(c, S["nc_ds"], (MSE, CE, rmse)) for c in part] for part in stage]
    done = sweep([c for part in stage for c in part], **kw)
    runs, rescaled_runs, linear_runs = (done[sum(map(len, stage[:i])):sum(map(len, stage[:i + 1]))] for i in range(3))
    return StudyResults(profile, S, base, K, grid, choices, rescaled, rmse, runs, rescaled_runs, linear_runs,
                        study=study)


def deep_rescaled(profile: str, **kw) -> Variant:
    """The rescaled MSE of the chapter "Deep networks"' d-sweep at ``profile``: the one its profile names,
    else the one chosen on held-out data by its tuning (read from the cache, trained where missing);
    ``kw``: cache, progress, data_root, device, executor, on_done as for :func:`run_study`."""
    S = study_settings(profile, "deep")
    if S["sweep_rescaled"] is not None:
        return pick_rescaled({}, fixed=S["sweep_rescaled"])
    rescaled = [v for v in rescaled_variants(S["alphas"], S["Ms"]) if v != MSE]
    base = profile_config(profile, "deep", device=kw.get("device"))
    return pick_rescaled(tune_lr(base, rescaled, lrs=S["lrs"], ds=S["tune_ds"],
                                 holdout_per_class=S["holdout_per_class"], halving=S.get("halving"), **kw))


# ------------------------------------------------------------------ the chapter's summary


@dataclass(frozen=True)
class Plan:
    """How much :func:`run_study` trains at a profile, from its settings alone (no run needed): the
    number of tuning candidates (configurations; with successive halving each trains a rung first, the
    kept ones then train on) and of distinct test runs, the epochs of each, the training images an epoch
    and the epochs all tuning runs train together."""

    profile: str
    tuning: int
    test: int
    epochs: int
    images: int
    tuning_epochs: int | None = None     # of all tuning runs together (None: tuning × epochs)
    kept: int = 0                        # successive halving: candidates that resume to the end

    @property
    def runs(self) -> int:
        return self.tuning + self.test

    @property
    def trainings(self) -> int:
        """Results the study leaves (what ``study --export`` archives): the test runs, one per tuning
        candidate, and with successive halving one more per candidate that resumed to the end."""
        return self.test + self.tuning + self.kept


    @property
    def image_epochs(self) -> int:
        """Training images seen by every run of the study together (a successive halving's candidates
        that stopped early count with the epochs they trained)."""
        tuning = self.tuning * self.epochs if self.tuning_epochs is None else self.tuning_epochs
        return (tuning + self.test * self.epochs) * self.images


TRAIN_SPLIT_SIZE = {"mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000}


def plan(profile: str, study: str = "deep") -> Plan:
    """The :class:`Plan` of :func:`run_study` at ``profile``.  The count does not depend on which
    learning rates the tuning picks: each (loss, side of K−1) gets one rate, so every test run is one
    configuration, and the d-sweep's rescaled MSE is one of the rescaled sweeps' variants (the
    ``cifar10`` study tunes the one of the deep study, which it does not count)."""
    S = study_settings(profile, study)
    base = profile_config(profile, study)
    grid = d_grid(profile, study)
    rescaled = [v for v in rescaled_variants(S["alphas"], S["Ms"]) if v != MSE]
    if S["sweep_rescaled"] == "deep":
        rmse = Variant("rmse", 2.0, 2.0)              # a stand-in: which one does not change the count
        variants = [MSE, CE, rmse]
    else:
        variants = [MSE, CE, *rescaled]
        rmse = Variant("rmse", *map(float, S["sweep_rescaled"])) if S["sweep_rescaled"] is not None else rescaled[0]
    lrs = sorted(float(lr) for lr in S["lrs"])
    tuning = 0 if len(lrs) == 1 else len(set(variants) | {rmse}) * len(lrs) * len(S["tune_ds"])
    halving = S.get("halving") if tuning else None
    # epochs of all tuning runs together: with successive halving every candidate to the rung, the kept
    # ones on to the end
    kept = 0 if halving is None else tuning // len(lrs) * min(halving[1], len(lrs))
    tuning_epochs = (tuning * base.epochs if halving is None else
                     tuning * halving[0] + kept * (base.epochs - halving[0]))
    choices = {v: LRChoice(v, {0: lrs[0]}, {}, (), False) for v in variants}
    choices.setdefault(rmse, LRChoice(rmse, {0: lrs[0]}, {}, (), False))
    test = {c.key() for c in [*configs(base, choices, [MSE, CE, rmse], ds=grid, seeds=S["seeds"]),
                              *configs(base, choices, rescaled, ds=S["rescaled_ds"], seeds=S["seeds"]),
                              *configs(base, choices, [MSE, CE], ds=grid, seeds=S["linear_seeds"], feature_relu=False)]}
    images = base.n_per_class * 10 if base.n_per_class is not None else TRAIN_SPLIT_SIZE[base.dataset]
    return Plan(profile, tuning, len(test), base.epochs, images, tuning_epochs, kept)


def projected_etf_nc2(d: int, K: int) -> float:
    """NC2 (= NC3) of a simplex ETF of K classes projected onto a d-dimensional subspace, d < K−1:
    √(2 − 2√(d/(K−1))), the same for every subspace (chapter "d < K − 1")."""
    if not 1 <= d <= K - 1:
        raise ValueError(f"need 1 ≤ d ≤ K−1 = {K - 1}, got d={d}")
    return math.sqrt(2 - 2 * math.sqrt(d / (K - 1)))


DEVICE_CHECK = ROOT / "benchmarks" / "results" / "device_deep_check_h200.json"


def paper_gpu_hours(path: Path | str = DEVICE_CHECK) -> float | None:
    """The GPU hours the paper profile would take by ``benchmarks/device_deep_check.py``'s extrapolation
    (its ``paper_gpu_hours_estimate``), or None where that benchmark has not been run."""
    path = Path(path)
    return float(json.loads(path.read_text())["paper_gpu_hours_estimate"]) if path.exists() else None


@dataclass(frozen=True)
class NCSummary:
    """Neural collapse during training at the d's of ``settings["nc_ds"]`` (first one below K−1):
    ``drop[(variant, d)]`` is the seed-mean NC1 at its last measurement over that at its first, and
    ``drop_max`` the largest; ``nc2_below_min`` the smallest last seed-mean NC2 at ``d_below`` over the
    losses, and ``nc2_floor`` the NC2 of an exactly projected ETF there (:func:`projected_etf_nc2`)."""

    d_below: int
    drop: dict
    drop_max: float
    nc2_below_min: float
    nc2_floor: float


@dataclass(frozen=True)
class RescaledSummary:
    """Rescaled MSE at the smallest d of the rescaled sweeps (``d``): MSE's and CE's seed-mean test
    accuracy; the rescaled variant of the d-sweep (``picked``, chosen on held-out data) and the best of
    the sweep on the test set (``best``; ties → the earlier), each with its accuracy and the percentage
    of CE's lead over MSE it wins back (NaN when CE does not lead); ``picked_improvement``: "a clear" or
    "no clear" improvement over MSE (the rule of :func:`compare`); ``recovery``: label → the words of
    :func:`recovery` for every rescaled variant; ``verdict`` those of ``picked``; ``recovering`` /
    ``m_recovering``: the labels (comma-separated, "none" if none) of the rescalings (of those at α = 1)
    that at least partly recover."""

    d: int
    mse_acc: float
    ce_acc: float
    picked: Variant
    picked_acc: float
    picked_recovered: float
    picked_improvement: str
    best: Variant
    best_acc: float
    best_recovered: float
    recovery: dict
    verdict: str
    recovering: str
    m_recovering: str


@dataclass(frozen=True)
class LinearSummary:
    """ReLU against a linear feature layer: ``dead_mse`` / ``dead_ce`` the dead feature units (d minus
    the seed-mean live units) summed over the d grid with the ReLU, ``dead_linear`` the same without it,
    MSE and CE together; ``relu_gap`` / ``linear_gap`` CE's lead in seed-mean test accuracy over MSE at
    the smallest d (``d``), with and without the ReLU."""

    d: int
    dead_mse: float
    dead_ce: float
    dead_linear: float
    relu_gap: float
    linear_gap: float


@dataclass(frozen=True)
class RunTotals:
    """The test runs of the page, each configuration once: ``n_runs``, of which ``n_trained`` were trained
    in this build (not read from the cache), their recorded training minutes, the machine of the first
    run; ``n_tuning`` the tuning runs (candidate lr × tuning d × variant)."""

    n_runs: int
    n_trained: int
    train_minutes: float
    machine: str
    n_tuning: int


@dataclass(frozen=True, eq=False)
class StudySummary:
    """What the chapter "Deep networks" says about a :class:`StudyResults`: its tables (Markdown), its
    numbers and its sentences.  Seed means come from :func:`pool_seeds`; ``sweep``, ``rescaled_rows`` and
    ``linear_rows`` map (variant, d) to a pooled row."""

    results: StudyResults

    # --------------------------------------------------------- pooled tables

    @cached_property
    def sweep(self) -> dict:
        """(variant, d) → pooled row of the d-sweep (MSE, CE and the rescaled MSE, with the ReLU)."""
        return {(r["variant"], r["d"]): r for r in pool_seeds(self.results.runs)}

    @cached_property
    def rescaled_rows(self) -> dict:
        """(variant, d) → pooled row of the rescaled sweeps, completed by the d-sweep's rows (which win
        where both have a configuration: the same runs, listed twice)."""
        return {(r["variant"], r["d"]): r for r in pool_seeds(self.results.rescaled_runs)} | self.sweep

    @cached_property
    def linear_rows(self) -> dict:
        """(variant, d) → pooled row of the runs without the feature ReLU (MSE, CE)."""
        return {(r["variant"], r["d"]): r for r in pool_seeds(self.results.linear_runs)}

    @property
    def title(self) -> str:
        """The figures' title: data source, model, profile."""
        return f"{self.results.runs[0]['data_source']}, {self.results.base.model}, profile {self.results.profile}"

    @property
    def classes(self) -> list:
        """The class names of the data set."""
        return self.results.runs[0]["classes"]

    # --------------------------------------------------------- learning rates

    @property
    def _lrs(self) -> list:
        """The candidate learning rates (tuned profiles only)."""
        c, d = self.results.choices[MSE], self.results.settings["tune_ds"][0]
        return sorted(c.early[d] if c.early else c.scores[d])      # every candidate, stopped early or not

    def tuning_table(self) -> str:
        """Held-out accuracy of every candidate lr per variant and tuning d, the chosen lr and whether it is
        at the grid's edge (Markdown); where nothing was tuned, a sentence naming the single lr."""
        from .plotting import markdown_table
        R = self.results
        if not R.choices[MSE].tuned:
            return f"No tuning at this profile: every loss uses lr = {R.choices[MSE].lr(R.grid[0], R.K):g}."
        lrs, tune_ds = self._lrs, R.settings["tune_ds"]

        def cell(c, d, lr):     # a rate stopped by the successive halving shows its score then, marked
            return f"{c.scores[d][lr]:.3f}" if lr in c.scores[d] else f"({c.early[d][lr]:.3f})"
        rows = [(c.variant.label, d, *(cell(c, d, lr) for lr in lrs), c.by_d[d], "yes" if d in c.edge else "")
                for c in R.choices.values() for d in tune_ds]
        table = markdown_table(rows, ["loss", "d", *(f"lr {lr:g}" for lr in lrs), "chosen", "at grid edge"],
                               formats=[None, None, *([None] * len(lrs)), "g", None])
        rung = R.choices[MSE].rung
        if rung:
            table += (f"\n\nSuccessive halving: every rate trained to epoch {rung} of {R.base.epochs} and was scored "
                      f"there; the {R.settings['halving'][1]} best of each row went on to the end. In parentheses: "
                      f"the held-out accuracy at epoch {rung} of a rate that stopped there.")
        return table

    def rmse_rule(self) -> str:
        """Why the d-sweep's rescaled MSE is the one it is (the end of a sentence)."""
        if self.results.settings["sweep_rescaled"] is not None:
            return "the profile names it"
        return "it had the best held-out accuracy below K − 1 among the rescaled losses"

    def edge_note(self) -> str:
        """A sentence on the chosen lr's at the edge of the lr grid: how many; with three or more rates,
        by how much the worst case beats the best inner rate and whether a wider grid could matter (a
        margin of one point); empty where nothing was tuned."""
        R = self.results
        edges = [(c, d) for c in R.choices.values() for d in c.edge]
        if not edges:
            return "No chosen rate sits at the edge of the grid." if R.choices[MSE].tuned else ""
        lrs = self._lrs
        cases = f"In {len(edges)} of {len(R.choices) * len(R.settings['tune_ds'])} cases"
        if len(lrs) < 3:
            return (f"{cases} the chosen rate sits at the edge of the grid (marked), which has only {len(lrs)} "
                    f"rates at this profile.")
        known = [e for e in edges if not math.isnan(e[0].edge_margin(e[1]))]
        if not known:
            return (f"{cases} the chosen rate sits at the edge of the grid (marked); every rate inside the grid "
                    "stopped early in the successive halving there, so no margin to an inner rate is known.")
        c, d = max(known, key=lambda e: e[0].edge_margin(e[1]))
        margin = c.edge_margin(d)
        return (f"{cases} the chosen rate sits at the edge of the grid (marked); there it beats the best rate "
                f"inside the grid by at most {margin:.3f} in held-out accuracy ({c.variant.label} at d = {d}), "
                + ("so a wider grid would change little." if margin < 0.01 else
                   "so a wider grid might do better there."))

    # --------------------------------------------------------- accuracy against d

    @cached_property
    def comparison(self) -> list:
        """:func:`compare` of MSE against CE over the d-sweep (test accuracy)."""
        return compare(list(self.sweep.values()), MSE, CE, K=self.results.K)

    @cached_property
    def verdict(self) -> Verdict:
        """The reproduction rule (:func:`verdict`) applied to :attr:`comparison`."""
        return verdict(self.comparison)

    def comparison_table(self) -> str:
        """:attr:`comparison` as a Markdown table."""
        from .plotting import markdown_table
        rows = [(r["d"], "yes" if r["below"] else "no", r["a"], r["b"], r["gap"], r["se"],
                 "yes" if r["clear"] else "no") for r in self.comparison]
        return markdown_table(rows, ["d", "d < K−1", "MSE test acc", "CE test acc", "CE − MSE", "std. error",
                                     "clear gap"], formats=[None, None, ".3f", ".3f", "+.3f", ".3f", None])

    @cached_property
    def ufm_kept(self) -> dict:
        """d → the fraction of classes that keep the argmax at their own mean at a UFM global minimizer
        with a uniformly random subspace S (4000 subspaces a d, one generator seeded 0 drawn along the
        grid; 1 for d ≥ K−1)."""
        K, gen = self.results.K, torch.Generator().manual_seed(0)
        return {d: 1.0 - float(etf.random_projection_lost(K, d, 4000, generator=gen).float().mean())
                if d < K - 1 else 1.0 for d in self.results.grid}

    def train_floor_above(self, variant: Variant) -> float:
        """The lowest seed-mean training accuracy of ``variant`` over the sweep's d ≥ K−1."""
        R = self.results
        return min(self.sweep[(variant, d)]["train_mean"] for d in R.grid if d >= R.K - 1)

    # --------------------------------------------------------- neural collapse

    def seed_runs(self, variant: Variant, d: int) -> list:
        """The d-sweep's runs of ``variant`` at ``d``, one per seed."""
        return [r for r in self.results.runs if Variant.of(r["config"]) == variant and r["config"]["d"] == d]

    def nc_band(self, variant: Variant, d: int, key: str) -> tuple:
        """:func:`history_band` of ``key`` over the seeds of ``variant`` at ``d``."""
        return history_band(self.seed_runs(variant, d), key)

    def nc(self) -> NCSummary:
        """:class:`NCSummary` for MSE, CE and the rescaled MSE at ``settings["nc_ds"]``."""
        R = self.results
        ds, losses = R.settings["nc_ds"], (MSE, CE, R.rmse)
        drop = {}
        for v in losses:
            for d in ds:
                mean = self.nc_band(v, d, "NC1")[1]
                drop[(v, d)] = mean[-1] / mean[0]
        return NCSummary(d_below=ds[0], drop=drop, drop_max=max(drop.values()),
                         nc2_below_min=min(self.nc_band(v, ds[0], "NC2")[1][-1] for v in losses),
                         nc2_floor=projected_etf_nc2(ds[0], R.K))

    # --------------------------------------------------------- class-mean geometry

    @cached_property
    def geometry(self) -> dict:
        """MSE and CE → :class:`ncmse.mean_geometry.GeometrySummary` of their runs at
        ``settings["geometry_d"]``."""
        gd = self.results.settings["geometry_d"]
        return {v: GeometrySummary.of(self.seed_runs(v, gd)) for v in (MSE, CE)}

    def geometry_table(self) -> str:
        """One row per run of :attr:`geometry` (Markdown): the projector error, the classes lost in the
        network and as the UFM predicts given S, how many classes agree, the test accuracy."""
        return geometry_table(self.geometry, self.classes)

    # --------------------------------------------------------- rescaled MSE

    def rescaled_line(self, axis: str) -> list:
        """The variants along one of the paper's rescaled sweeps, ``axis`` "alpha" (at M = 1) or "M" (at
        α = 1), plain MSE included, in increasing α or M."""
        if axis not in ("alpha", "M"):
            raise ValueError(f"axis is 'alpha' or 'M', not {axis!r}")
        other = "M" if axis == "alpha" else "alpha"
        vs = [v for v in [MSE, *self.results.rescaled] if getattr(v, other) == 1.0]
        return sorted(vs, key=lambda v: getattr(v, axis))

    def rescaled(self) -> RescaledSummary:
        """:class:`RescaledSummary` at the smallest d of ``settings["rescaled_ds"]``."""
        R, rows = self.results, self.rescaled_rows
        d = min(R.settings["rescaled_ds"])
        mse, ce = self.sweep[(MSE, d)]["test_mean"], self.sweep[(CE, d)]["test_mean"]
        gap = ce - mse

        def recovered(v):
            return 100 * ((rows[(v, d)]["test_mean"] - mse) / gap if gap > 0 else math.nan)

        pooled = list(rows.values())
        clear = {c["d"]: c for c in compare(pooled, MSE, R.rmse, K=R.K)}[d]
        best = max(R.rescaled, key=lambda v: rows[(v, d)]["test_mean"])
        by = {v: recovery(pooled, v, d=d, K=R.K) for v in R.rescaled}

        def up(vs):
            return ", ".join(v.label for v in vs if by[v] != "does not recover") or "none"
        return RescaledSummary(
            d=d, mse_acc=mse, ce_acc=ce, picked=R.rmse, picked_acc=rows[(R.rmse, d)]["test_mean"],
            picked_recovered=recovered(R.rmse),
            picked_improvement="a clear" if clear["clear"] and clear["gap"] > 0 else "no clear",
            best=best, best_acc=rows[(best, d)]["test_mean"], best_recovered=recovered(best),
            recovery={v.label: by[v] for v in R.rescaled}, verdict=recovery(pooled, R.rmse, d=d, K=R.K),
            recovering=up(R.rescaled), m_recovering=up(v for v in R.rescaled if v.alpha == 1.0))

    def rescaled_table(self) -> str:
        """Seed-mean ± standard deviation of the test accuracy and the lr of MSE, every rescaled variant and
        CE at each d of ``settings["rescaled_ds"]`` (Markdown)."""
        from .plotting import markdown_table
        R, rows, ds = self.results, self.rescaled_rows, self.results.settings["rescaled_ds"]
        table = [(v.label, *(x for d in ds for x in (
            f"{rows[(v, d)]['test_mean']:.3f} ± {rows[(v, d)]['test_std']:.3f}", f"{R.choices[v].lr(d, R.K):g}")))
                 for v in [MSE, *R.rescaled, CE]]
        return markdown_table(table, ["loss", *(x for d in ds for x in (f"test acc, d = {d}", "lr"))])

    # --------------------------------------------------------- the feature nonlinearity

    def dead_units(self, variant: Variant, *, linear: bool = False) -> float:
        """Dead feature units of ``variant`` (d minus its seed-mean live units) summed over the d grid,
        with the feature ReLU or (``linear``) without it."""
        rows = self.linear_rows if linear else self.sweep
        return sum(d - rows[(variant, d)]["live_mean"] for d in self.results.grid)

    def linear(self) -> LinearSummary:
        """:class:`LinearSummary` for MSE and CE."""
        low, lin = min(self.results.grid), self.linear_rows
        return LinearSummary(
            d=low, dead_mse=self.dead_units(MSE), dead_ce=self.dead_units(CE),
            dead_linear=self.dead_units(MSE, linear=True) + self.dead_units(CE, linear=True),
            relu_gap=self.sweep[(CE, low)]["test_mean"] - self.sweep[(MSE, low)]["test_mean"],
            linear_gap=lin[(CE, low)]["test_mean"] - lin[(MSE, low)]["test_mean"])

    # --------------------------------------------------------- what reproduced

    def totals(self) -> RunTotals:
        """:class:`RunTotals` of the page's runs."""
        R, unique = self.results, self.results.unique_runs
        return RunTotals(n_runs=len(unique), n_trained=sum(not r["cached"] for r in unique),
                         train_minutes=sum(r["provenance"]["wall_seconds"] for r in unique) / 60,
                         machine=R.runs[0]["provenance"]["machine"],
                         n_tuning=sum(len(c.scores[d]) for c in R.choices.values() for d in c.scores))

    def reproduction_table(self, gpu_hours: float | None = None) -> str:
        """What reproduced, per profile (Markdown): this page's verdict and rescaled MSE's recovery in the
        row of its profile; for the other profiles, how to run them and what they are (``gpu_hours``: the
        paper profile's estimate, :func:`paper_gpu_hours`)."""
        from .plotting import markdown_table
        R = self.results
        hours = (f", about {gpu_hours:.0f} GPU hours on an H200 by benchmarks/device_deep_check.py's "
                 "extrapolation") if gpu_hours is not None else ""
        others = {"smoke": "a code-path check (a few hundred images, two epochs): its numbers mean nothing",
                  "cpu": f"{profile_config('cpu').dataset} with an MLP on a laptop CPU",
                  "paper": f"the paper's settings (CIFAR-10, ResNet18, 200 epochs){hours}; train the runs with "
                           "`python -m ncmse study --profile paper` on the GPU first"}
        rows = [(p, "this page", self.verdict.sentence("MSE", "CE"), f"{R.rmse.label}: {self.rescaled().verdict}")
                if p == R.profile else
                (p, "not run for this page", f"run `./run.sh book --profile {p}`: {others[p]}", "—")
                for p in PROFILES]
        return markdown_table(rows, ["profile", "executed", "claim: MSE vs CE across K−1",
                                     "rescaled MSE below K−1"])

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

:class:`ncmse.summary.StudySummary` (``run_study(...).summary()``) holds everything the chapter shows of the results:
its tables, its numbers and its sentences, so that the chapter's cells only call it, assert and plot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .cache import ResultsCache
from .config import RunConfig
from .executors import Executor, sweep
from .profiles import d_grid, profile_config, study_settings
from .variants import CE, MSE, Variant, rescaled_variants

__all__ = ["StudyResults", "run_study", "sweep_runs", "LRChoice", "tuning_configs", "tune_lr", "pick_rescaled",
           "configs",
           "curves_only_where_drawn", "Plan", "plan", "deep_rescaled"]



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


def curves_only_where_drawn(config: RunConfig, nc_ds, variants, *, feature_relu: bool = True) -> RunConfig:
    """``config`` measuring NC during training (its ``nc_epochs``) only if the chapter draws its curve:
    a run of one of ``variants`` at a d of ``nc_ds`` with the study's feature layer (``feature_relu``,
    its base run's: the runs without the ReLU that a study adds are not drawn); every other run measures
    NC once, after its last epoch.  Measuring does not change training (evaluation draws no random
    numbers and updates nothing), so the two configurations train the same network; an evaluation
    pass costs about a third of an epoch's steps per image."""
    drawn = config.feature_relu == feature_relu and config.d in tuple(nc_ds) and Variant.of(config) in tuple(variants)
    return config if drawn else config.replace(nc_epochs=())


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
        pronoun = "it is" if len(bad) == 1 else "they are"
        return (f"{len(bad)} of the {len(self.unique_runs)} runs diverged (the training loss stopped being finite), "
                f"and {pronoun} left out of the means and counted as missing seeds: {names}.")

    def summary(self):
        """The numbers, tables and sentences of the chapter computed from these results."""
        from .summary import StudySummary  # the page's view of these results (ncmse.summary)

        return StudySummary(self)


def sweep_runs(base: RunConfig, choices: dict, S, *, grid, rescaled, rmse: Variant, K: int = 10) -> list[list]:
    """The test runs of a study, as :func:`run_study` trains them and :func:`plan` counts them: [the
    d-sweep (MSE, CE, ``rmse``) × ``grid`` × seeds, the rescaled sweeps (``rescaled`` at
    ``S["rescaled_ds"]``), the runs without the feature ReLU (MSE, CE × ``grid`` × ``S["linear_seeds"]``)],
    each at its chosen rate, NC measured during training only where a chapter draws it."""
    if S["linear_seeds"] and not base.feature_relu:
        raise ValueError("linear_seeds adds runs without the feature ReLU to a study whose base run has it; "
                         "this base run has none")
    parts = [configs(base, choices, [MSE, CE, rmse], ds=grid, seeds=S["seeds"], K=K),
             configs(base, choices, rescaled, ds=S["rescaled_ds"], seeds=S["seeds"], K=K),
             configs(base, choices, [MSE, CE], ds=grid, seeds=S["linear_seeds"], K=K, feature_relu=False)]
    return [[curves_only_where_drawn(c, S["nc_ds"], (MSE, CE, rmse), feature_relu=base.feature_relu) for c in part]
            for part in parts]


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
    stage = sweep_runs(base, choices, S, grid=grid, rescaled=rescaled, rmse=rmse, K=K)
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
    test = {c.key() for part in sweep_runs(base, choices, S, grid=grid, rescaled=rescaled, rmse=rmse)
            for c in part}
    images = base.n_per_class * 10 if base.n_per_class is not None else TRAIN_SPLIT_SIZE[base.dataset]
    return Plan(profile, tuning, len(test), base.epochs, images, tuning_epochs, kept)

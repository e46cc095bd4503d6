"""What the chapters "Deep networks" and "CIFAR-10" say about a study's results: :class:`StudySummary`
(``ncmse.study.run_study(...).summary()``) holds their tables, numbers and sentences, so that a
chapter's cells only call it, assert and plot.  The statistics it applies are ``ncmse.stats``'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from . import etf
from .mean_geometry import GeometrySummary, geometry_table
from .profiles import PROFILES, profile_config
from .stats import Verdict, compare, history_band, mean_sd, pool_seeds, recovery, verdict
from .variants import CE, MSE, Variant

__all__ = ["GapProfile", "StudySummary", "NCSummary", "RescaledSummary", "LinearSummary", "RunTotals", "TerminalPhase"]


@dataclass(frozen=True)
class NCSummary:
    """Neural collapse during training at the d's of ``settings["nc_ds"]`` (first one below K−1):
    ``drop[(variant, d)]`` is the seed-mean NC1 at its last measurement over that at its first, and
    ``drop_max`` the largest; ``nc2_below_min`` the smallest last seed-mean NC2 at ``d_below`` over the
    losses, and ``nc2_floor`` the NC2 of an exactly projected ETF there (:func:`ncmse.etf.projected_nc2`)."""

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
    "no clear" improvement over MSE (the rule of :func:`ncmse.stats.compare`); ``recovery``: label → the words of
    :func:`ncmse.stats.recovery` for every rescaled variant; ``verdict`` those of ``picked``; ``recovering`` /
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
class TerminalPhase:
    """Whether the d-sweep's runs at d ≥ K−1 fit their training set (the terminal phase, where the
    paper's claim lives): ``below`` lists (loss label, d, seed-mean training accuracy) of every loss and
    d ≥ K−1 under ``threshold``; ``reached`` is True when none is."""

    threshold: float
    below: tuple
    reached: bool

    def sentence(self) -> str:
        """One sentence for the page."""
        if self.reached:
            return (f"Every loss fits its training set at every d ≥ K − 1 (seed-mean training accuracy at least "
                    f"{self.threshold:g}): these runs are in the terminal phase.")
        cases = "; ".join(f"{label} at d = {d}: {acc:.3f}" for label, d, acc in self.below)
        return (f"Not every run at d ≥ K − 1 reaches a training accuracy of {self.threshold:g} (seed means): {cases}. "
                "Read the comparison at those d's with that in mind.")


@dataclass(frozen=True)
class GapProfile:
    """How the accuracy gap of cross-entropy over MSE (CE − MSE, test, seed means) changes across K − 1:
    ``below`` and ``above`` list (d, gap, clear) for d < K − 1 and d ≥ K − 1; ``grows_as_d_shrinks`` is
    True when the gap below K − 1 rises strictly with every smaller d; ``ratio`` is the mean gap below
    over the mean gap above (None without both, or with a mean gap above ≤ 0)."""

    below: tuple
    above: tuple
    grows_as_d_shrinks: bool
    ratio: float | None

    def sentence(self) -> str:
        """What the gaps say, in one or two sentences for the page."""
        def span(rows):
            gaps = [g for _, g, _ in rows]
            clear = sum(c for _, _, c in rows)
            lo, hi = min(gaps), max(gaps)
            value = f"{lo:+.3f}" if len(rows) == 1 else f"{lo:+.3f} to {hi:+.3f}"
            return f"{value} ({clear} of {len(rows)} clear)"
        parts = []
        if self.below:
            trend = ", growing as d shrinks" if self.grows_as_d_shrinks and len(self.below) > 1 else ""
            parts.append(f"Below K − 1, cross-entropy leads MSE by {span(self.below)}{trend}")
        if self.above:
            parts.append(f"at and above K − 1 by {span(self.above)}")
        text = "; ".join(parts)
        text = text[:1].upper() + text[1:] + "." if text else ""
        if self.ratio is not None:
            text += f" The mean gap below K − 1 is {self.ratio:.1f} times the mean gap above it."
        return text


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
    """What the chapter "Deep networks" says about a :class:`ncmse.study.StudyResults`: its tables (Markdown), its
    numbers and its sentences.  Seed means come from :func:`ncmse.stats.pool_seeds`; ``sweep``, ``rescaled_rows`` and
    ``linear_rows`` map (variant, d) to a pooled row."""

    results: object          # an ncmse.study.StudyResults (not imported: the study imports this module)

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
        """:func:`ncmse.stats.compare` of MSE against CE over the d-sweep (test accuracy)."""
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

    def gap_profile(self) -> GapProfile:
        """:class:`GapProfile` of :attr:`comparison` (CE − MSE across K − 1)."""
        rows = [(r["d"], r["gap"], bool(r["clear"]), r["below"]) for r in self.comparison]
        below = tuple((d, g, c) for d, g, c, b in rows if b)
        above = tuple((d, g, c) for d, g, c, b in rows if not b)
        gaps_by_d = [g for _, g, _ in sorted(below)]                 # ascending d
        grows = len(gaps_by_d) > 1 and all(x > y for x, y in zip(gaps_by_d[:-1], gaps_by_d[1:], strict=True))
        mean_above = sum(g for _, g, _ in above) / len(above) if above else None
        ratio = (sum(g for _, g, _ in below) / len(below) / mean_above
                 if below and mean_above is not None and mean_above > 0 else None)
        return GapProfile(below, above, grows, ratio)

    def terminal_phase(self, threshold: float = 0.99) -> TerminalPhase:
        """:class:`TerminalPhase` of the d-sweep (MSE, CE and the rescaled MSE) at d ≥ K−1."""
        R = self.results
        below = tuple((v.label, d, self.sweep[(v, d)]["train_mean"]) for v in (MSE, CE, R.rmse)
                      for d in R.grid if d >= R.K - 1 and (v, d) in self.sweep
                      and not self.sweep[(v, d)]["train_mean"] >= threshold)
        return TerminalPhase(threshold, below, not below)

    def nc_against_d(self) -> list[dict]:
        """NC1 and NC2 of the training features after the last epoch against d, per loss of the d-sweep
        (MSE, CE and the rescaled MSE): one row per (loss, d) with ``variant``, ``label``, ``d``, the seed
        means and standard deviations ``NC1_mean``, ``NC1_std``, ``NC2_mean``, ``NC2_std``, and
        ``NC2_floor``: below K−1 the NC2 of an exactly projected simplex ETF
        (:func:`ncmse.etf.projected_nc2`), which no network's class means can go under; 0 at and above."""
        R = self.results
        rows = []
        for v in (MSE, CE, R.rmse):
            for d in R.grid:
                runs = [r for r in self.seed_runs(v, d) if not r.get("diverged")]
                if not runs:
                    continue
                last = [[h for h in r["history"] if "NC1" in h][-1] for r in runs]
                row = {"variant": v, "label": v.label, "d": d,
                       "NC2_floor": etf.projected_nc2(d, R.K) if d < R.K - 1 else 0.0}
                for key in ("NC1", "NC2"):
                    row[f"{key}_mean"], row[f"{key}_std"], _ = mean_sd(h[key] for h in last)
                rows.append(row)
        return rows

    def recovery_below(self) -> dict:
        """At each d < K−1 of the d-sweep, how much of cross-entropy's lead over MSE the rescaled MSE wins
        back (:func:`ncmse.stats.recovery`: "recovers", "partly recovers", "does not recover")."""
        R = self.results
        pooled = pool_seeds(R.runs)
        return {d: recovery(pooled, R.rmse, d=d, K=R.K) for d in R.grid if d < R.K - 1}

    def train_floor_above(self, variant: Variant) -> float:
        """The lowest seed-mean training accuracy of ``variant`` over the sweep's d ≥ K−1."""
        R = self.results
        return min(self.sweep[(variant, d)]["train_mean"] for d in R.grid if d >= R.K - 1)

    # --------------------------------------------------------- neural collapse

    def seed_runs(self, variant: Variant, d: int) -> list:
        """The d-sweep's runs of ``variant`` at ``d``, one per seed."""
        return [r for r in self.results.runs if Variant.of(r["config"]) == variant and r["config"]["d"] == d]

    def nc_band(self, variant: Variant, d: int, key: str) -> tuple:
        """:func:`ncmse.stats.history_band` of ``key`` over the seeds of ``variant`` at ``d``."""
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
                         nc2_floor=etf.projected_nc2(ds[0], R.K))

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
        paper profile's estimate, :func:`ncmse.costs.paper_gpu_hours`)."""
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

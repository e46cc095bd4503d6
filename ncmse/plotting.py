"""One figure style for the whole book: call :func:`use_style` once at the top of a chapter.

Colour-blind-safe palette (seaborn ``colorblind``), lower-case axis labels with units where there are
units, no titles (the caption says it), one figure size.
"""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.patches import Patch

__all__ = ["use_style", "PALETTE", "FIGSIZE", "gram_heatmap", "subplots", "figure", "markdown_table", "draw_frame",
           "accuracy_against_d", "accuracy_figure", "per_class_figure", "setting_table", "nc_against_d",
           "per_class_accuracy", "d_ticks", "cost_figure", "architecture_figure", "collapse_history_figure"]

PALETTE = sns.color_palette("colorblind")
FIGSIZE = (6.4, 3.6)
# The sizes of text that follow the figure's width (see _scale_text).
_FONT_KEYS = ("font.size", "axes.labelsize", "axes.titlesize", "xtick.labelsize", "ytick.labelsize",
              "legend.fontsize", "legend.title_fontsize", "figure.titlesize")
_BASE_FONTS: dict = {}


def use_style() -> None:
    """Set seaborn/matplotlib defaults for every figure of the book."""
    sns.set_theme(context="notebook", style="ticks", palette=PALETTE, font_scale=1.0)
    mpl.rcParams.update({
        "figure.figsize": FIGSIZE,
        "figure.dpi": 110,
        "savefig.dpi": 150,
        "savefig.bbox": "tight",
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "legend.frameon": False,
        "image.cmap": "viridis",
    })
    _BASE_FONTS.clear()
    _BASE_FONTS.update({k: mpl.rcParams[k] for k in _FONT_KEYS if isinstance(mpl.rcParams[k], (int, float))})


def _scale_text(width: float) -> None:
    """Scale the text of the next figure with its width: the page shows every figure at the width of the
    content column (about a figure of :data:`FIGSIZE`), so a wider figure is shrunk and its text with
    it; text grows as (width / 6.4)^0.6 to stay legible without crowding the panels."""
    scale = max(1.0, width / FIGSIZE[0]) ** 0.6
    for k, v in _BASE_FONTS.items():
        mpl.rcParams[k] = v * scale


def subplots(nrows: int = 1, ncols: int = 1, *, width: float | None = None, height: float | None = None,
             **kwargs):
    """``plt.subplots`` with the book's figure size scaled to the grid, constrained layout on."""
    w = width or FIGSIZE[0]
    h = height or FIGSIZE[1] * (nrows if nrows > 1 else 1)
    _scale_text(w)
    return plt.subplots(nrows, ncols, figsize=(w, h), layout="constrained", **kwargs)


def figure(width: float | None = None, height: float | None = None, **kwargs):
    """``plt.figure`` with the book's size and text scaling (as :func:`subplots`), constrained layout on;
    for figures that place their own axes (3-D panels beside 2-D ones, say)."""
    w, h = width or FIGSIZE[0], height or FIGSIZE[1]
    _scale_text(w)
    return plt.figure(figsize=(w, h), layout="constrained", **kwargs)


def gram_heatmap(ax, G, *, vmax: float | None = None, label: str | None = None, colorbar: bool = True):
    """Draw a (K, K) Gram matrix with a diverging, zero-centred colour map and class indices on the axes."""
    G = np.asarray(G, dtype=float)
    vmax = vmax or float(np.abs(G).max()) or 1.0
    im = ax.imshow(G, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    K = G.shape[0]
    ticks = np.arange(K) if K <= 10 else np.arange(0, K, max(1, K // 5))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel("class k′")
    ax.set_ylabel("class k")
    ax.grid(False)
    if colorbar:
        cb = ax.figure.colorbar(im, ax=ax, shrink=0.8)
        if label:
            cb.set_label(label)
    return im


def markdown_table(rows, columns, formats=None) -> str:
    """A Markdown table of ``rows`` (sequences) under ``columns``; ``formats`` gives a format spec per
    column (None: ``str``).  Display it with ``IPython.display.Markdown``."""
    formats = formats or [None] * len(columns)
    if len(formats) != len(columns):
        raise ValueError("need one format per column")
    def cell(text: str) -> str:            # a '|' inside a cell would end it
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row {row!r} has {len(row)} entries, expected {len(columns)}")
        cells = [cell(str(v) if f is None else format(v, f)) for v, f in zip(row, formats, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def draw_frame(ax, V, *, lost=None, label_points: bool = True):
    """Draw K vectors (rows of V, (K, 2) or (K, 3)) as arrows from the origin, labelled by class.

    ``lost`` (K,) bool marks classes whose own mean loses the argmax: drawn in a second colour.
    A 3-D frame needs ``ax`` created with ``projection="3d"``.
    """
    V = np.asarray(V, dtype=float)
    K, dim = V.shape
    lost = np.zeros(K, dtype=bool) if lost is None else np.asarray(lost, dtype=bool)
    colors = [PALETTE[3] if lk else PALETTE[0] for lk in lost]
    zeros = np.zeros(K)
    if dim == 2:
        ax.quiver(zeros, zeros, V[:, 0], V[:, 1], color=colors, angles="xy", scale_units="xy", scale=1,
                  width=0.008)
        ax.set_aspect("equal")
    elif dim == 3:
        ax.quiver(zeros, zeros, zeros, V[:, 0], V[:, 1], V[:, 2], colors=colors, arrow_length_ratio=0.08)
    else:
        raise ValueError(f"draw_frame draws 2-D or 3-D frames, got d={dim}")
    r = 1.15 * float(np.abs(V).max() or 1.0)
    for axis in "xyz"[:dim]:
        getattr(ax, f"set_{axis}lim")(-r, r)
    if label_points:
        for k in range(K):
            ax.text(*(1.08 * V[k]), str(k), ha="center", va="center", fontsize=8, color=colors[k])
    ax.set_xlabel("feature 1")
    ax.set_ylabel("feature 2")
    if dim == 3:
        ax.set_zlabel("feature 3")


def accuracy_against_d(ax, sweep: dict, variants, grid, *, metric: str = "test", K: int = 10) -> None:
    """Seed-mean ``metric`` ("test" or "train") accuracy against the feature dimension, one line per
    loss of ``variants`` (``ncmse.variants.Variant``), bars one standard deviation, a dashed line at
    d = K − 1 and a log axis ticked at the d's of ``grid`` (chapters "Deep networks" and "CIFAR-10").
    ``sweep`` maps (variant, d) to a pooled row of ``ncmse.stats.pool_seeds``."""
    for i, v in enumerate(variants):
        m = [sweep[(v, d)][f"{metric}_mean"] for d in grid]
        s = [sweep[(v, d)][f"{metric}_std"] for d in grid]
        ax.errorbar(grid, m, yerr=s, marker="o", ms=4, capsize=3, color=PALETTE[i], label=v.label)
    ax.axvline(K - 1, color="0.5", ls="--", lw=1)
    ax.set(xscale="log", xlabel="feature dimension d", ylabel=f"{metric} accuracy")
    d_ticks(ax, grid)


def accuracy_figure(summary, variants=None):
    """Test (left) and training (right) accuracy against d of a study's d-sweep, one line per loss
    (default MSE, CE and the study's rescaled MSE), legend bottom right, the summary's title above:
    the figure of the chapters "Deep networks" and "CIFAR-10" (``summary``: an
    ``ncmse.summary.StudySummary``).  Returns (fig, axes) for a chapter to add to."""
    from .variants import CE, MSE

    R = summary.results
    variants = variants or (MSE, CE, R.rmse)
    fig, axes = subplots(1, 2, width=11, height=3.8)
    for ax, metric in zip(axes, ("test", "train"), strict=True):
        accuracy_against_d(ax, summary.sweep, variants, R.grid, metric=metric, K=R.K)
    axes[0].legend(loc="lower right")
    fig.suptitle(summary.title)
    return fig, axes


def per_class_figure(summary):
    """Per-class test accuracy at the study's ``geometry_d`` (below K − 1), MSE against cross-entropy,
    with the UFM's predicted losses counted over MSE's runs (:func:`per_class_accuracy`), the summary's
    title and d above: the figure of the chapters "Deep networks" and "CIFAR-10" (``summary``: an
    ``ncmse.summary.StudySummary``).  Returns (fig, ax)."""
    from .variants import MSE

    fig, ax = subplots(1, 1, width=11, height=3.6)
    per_class_accuracy(ax, summary.geometry, summary.classes, counted=MSE)       # bars: mean; dots: runs
    fig.suptitle(f"{summary.title}, d = {summary.results.settings['geometry_d']}")
    return fig, ax


def setting_table(config, grid, seeds, fields) -> str:
    """The settings of a study's base run (``config``, a ``RunConfig``) as a Markdown table of ``fields``,
    then its feature dimensions ``grid`` and ``seeds`` in one line (chapters "Deep networks", "CIFAR-10")."""
    table = markdown_table([(k, getattr(config, k)) for k in fields], ["setting", "value"])
    return f"{table}\n\nFeature dimensions $d$: {', '.join(map(str, grid))}; seeds {', '.join(map(str, seeds))}."


def d_ticks(ax, grid, *, min_gap: float = 0.08) -> None:
    """Ticks at every d of ``grid`` on a log-scaled axis, labelled where a label fits: a label closer
    than ``min_gap`` decades to the last one kept is left out (d = 9 between 8 and 10, whose place the
    dashed line at K − 1 marks)."""
    labels, last = [], None
    for d in sorted(grid):
        fits = last is None or np.log10(d / last) >= min_gap
        labels.append(str(d) if fits else "")
        last = d if fits else last
    ax.set_xticks(sorted(grid), labels)
    ax.minorticks_off()


def nc_against_d(axes, rows: list[dict], variants, grid, *, K: int = 10) -> None:
    """NC1 (left, log scale) and NC2 (right) after the last epoch against the feature dimension, one line
    per loss of ``variants``, bars one standard deviation over seeds; on the NC2 panel the NC2 of an
    exactly projected simplex ETF below K − 1 (black, dotted: the floor of the chapter "d < K − 1");
    a dashed line at d = K − 1 on both.  ``rows``: ``ncmse.summary.StudySummary.nc_against_d()``."""
    for key, ax in zip(("NC1", "NC2"), axes, strict=True):
        for i, v in enumerate(variants):
            mine = sorted((r for r in rows if r["variant"] == v), key=lambda r: r["d"])
            ax.errorbar([r["d"] for r in mine], [r[f"{key}_mean"] for r in mine],
                        yerr=[r[f"{key}_std"] for r in mine], marker="o", ms=4, capsize=3, color=PALETTE[i],
                        label=v.label)
        ax.axvline(K - 1, color="0.5", ls="--", lw=1)
        ax.set(xscale="log", xlabel="feature dimension d", ylabel=f"{key} after the last epoch")
        d_ticks(ax, grid)
    axes[0].set_yscale("log")
    below = sorted({r["d"] for r in rows if r["d"] < K - 1})
    if below:
        floor = {r["d"]: r["NC2_floor"] for r in rows}
        axes[1].plot(below, [floor[d] for d in below], "k:", lw=1.5, label="projected ETF (floor)")


def per_class_accuracy(ax, geometry: dict, classes, *, counted=None) -> None:
    """Per-class test accuracy as bars (mean over runs) with each run as a dot, one colour per loss of
    ``geometry`` (variant → ``ncmse.mean_geometry.GeometrySummary``), and above each class the number
    of runs of ``counted`` (a variant; default the first) in which the UFM, given the network's
    subspace, predicts that class to lose the argmax (chapters "Deep networks" and "CIFAR-10")."""
    K = len(classes)
    x = np.arange(K)
    width = 0.8 / len(geometry)
    for i, (v, g) in enumerate(geometry.items()):
        acc = g.test_accuracy.numpy()                           # (runs, K)
        offset = (i - (len(geometry) - 1) / 2) * width
        ax.bar(x + offset, acc.mean(0) if len(acc) else np.zeros(K), width=width, color=PALETTE[i], label=v.label)
        for a in acc:
            ax.plot(x + offset, a, "o", ms=3, color="0.2")
    counts = geometry[counted if counted is not None else next(iter(geometry))].predicted_lost_counts.tolist()
    for k, count in enumerate(counts):
        ax.annotate(str(count), (k, 1.02), ha="center", fontsize="small")
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set(ylabel="test accuracy", ylim=(0, 1.1))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncols=len(geometry))


def cost_figure(rows: list[dict]):
    """The figure of the page "Running at the paper's scale" from ``ncmse.costs.cost_rows``: above, the
    training images that all runs of each study and profile see together; below, one bar per row that
    has a rate, its hours, measured rows in their own colour (both axes log scale), labelled by the
    row's setup (processes × threads; the device where there is none: a GPU).  Returns the figure."""
    work = {f"{r['study']}, {r['profile']}": r["image_epochs"] for r in rows}
    timed = [r for r in rows if r["hours"] is not None]
    fig, (ax_work, ax_time) = subplots(2, 1, height=0.2 * (len(work) + len(timed)) + 2.4,
                                       gridspec_kw={"height_ratios": [len(work) + 3, len(timed) + 3]})
    ax_work.barh(range(len(work)), list(work.values()), color=PALETTE[0])
    ax_work.set_yticks(range(len(work)), list(work))
    ax_work.set(xscale="log", xlabel="training images seen by all runs of the study")
    # positions, not category names: a measured and an extrapolated row may share a label
    ax_time.barh(range(len(timed)), [r["hours"] for r in timed],
                 color=[PALETTE[2] if r["measured"] else PALETTE[1] for r in timed])
    ax_time.set_yticks(range(len(timed)), [f"{r['study']}, {r['profile']}: {r['setup'] or r['device']}"
                                           for r in timed])
    ax_time.set(xscale="log", xlabel="hours")
    for ax in (ax_work, ax_time):
        ax.tick_params(axis="y", labelsize="small")
        ax.invert_yaxis()                                 # the table's order, top to bottom
    fig.legend(handles=[Patch(color=PALETTE[1], label="extrapolated"), Patch(color=PALETTE[2], label="measured")],
               loc="outside lower center", ncols=2)
    return fig


def architecture_figure(data_flow, layers: dict, *, per_line: int = 3):
    """The page "Architecture"'s data flow as a figure drawn from the package's own description of
    itself (``ncmse.layers``): one box per stage of ``data_flow`` ((stage, what happens, modules)),
    top to bottom with arrows, each module's name coloured by its layer in ``layers`` (layer → modules),
    at most ``per_line`` names a line, with the layers as a legend.  Text is placed by its measured
    extent, so names never overlap.  Returns the figure."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    colour = {m: PALETTE[i] for i, mods in enumerate(layers.values()) for m in mods}
    line, gap = 0.42, 0.35                               # height of a text line, space between boxes
    heights = [0.55 + line * (1 + -(-len(mods) // per_line)) for _, _, mods in data_flow]
    total = sum(heights) + gap * (len(heights) - 1)
    inch = 0.55                                          # inches per unit, both ways
    _scale_text(8.0)
    height = (total + 0.2) * inch + 0.5                  # the boxes, and 0.5 in for the legend below
    fig = plt.figure(figsize=(14 * inch, height))
    ax = fig.add_axes((0.0, 0.5 / height, 1.0, (total + 0.2) * inch / height))
    ax.set(xlim=(0, 14), ylim=(-0.1, total + 0.1), xticks=[], yticks=[])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    renderer = fig.canvas.get_renderer()
    to_data = ax.transData.inverted()

    def right(t) -> float:
        return to_data.transform((t.get_window_extent(renderer).x1, 0))[0]

    tops = [total - sum(heights[:k]) - gap * k for k in range(len(heights))]
    labels = [ax.text(0.25, top - 0.45, stage, fontweight="bold", va="center")
              for top, (stage, _, _) in zip(tops, data_flow, strict=True)]
    x0 = max(right(t) for t in labels) + 0.4
    ends = []
    for top, (_, what, modules) in zip(tops, data_flow, strict=True):
        ends.append(right(ax.text(x0, top - 0.45, what, va="center", fontsize="small")))
        for row in range(0, len(modules), per_line):
            x, y = x0, top - 0.45 - line * (1 + row // per_line)
            for m in modules[row:row + per_line]:      # each where the last one's text ends
                x = right(ax.text(x, y, f"ncmse.{m}", va="center", family="monospace", fontsize="small",
                                  color=colour.get(m, "0.2"))) + 0.3
            ends.append(x)
    width = max(ends) + 0.4
    # the figure as wide as its text, at the same inches per unit, so that every measured position holds
    fig.set_size_inches((width + 0.1) * inch, fig.get_size_inches()[1])
    ax.set_xlim(0, width + 0.1)
    for k, (top, h) in enumerate(zip(tops, heights, strict=True)):
        ax.add_patch(FancyBboxPatch((0.05, top - h), width - 0.05, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                    facecolor="0.97", edgecolor="0.6", zorder=0))
        if k < len(tops) - 1:
            ax.add_patch(FancyArrowPatch((1.0, top - h), (1.0, tops[k + 1]), arrowstyle="-|>", mutation_scale=14,
                                         color="0.4"))
    fig.legend(handles=[Patch(color=PALETTE[i], label=f"{name} layer") for i, name in enumerate(layers)],
               loc="lower center", ncols=len(layers), fontsize="small")
    return fig


#: the panels of :func:`collapse_history_figure`: key of ``ncmse.measure_collapse``'s dict → axis label
COLLAPSE_PANELS = (("NC1", "NC1 (log scale)"), ("NC2", "NC2"), ("NC3", "NC3"), ("NC4", "NC4 (log scale)"),
                   ("NC4_ncc", "NC4_ncc"), ("accuracy", "accuracy"))


def collapse_history_figure(history: list[dict]):
    """NC1–NC4, NC4_ncc and the accuracy against the epoch, one panel each (2 × 3), from ``history``:
    one dict of :func:`ncmse.collapse.measure_collapse` per epoch with an ``"epoch"`` key added (the page
    "Measure collapse in your own network").  Panels whose metric is absent are left out."""
    panels = [(k, label) for k, label in COLLAPSE_PANELS if all(k in h for h in history)]
    fig, axes = subplots(2, 3, width=9.6, height=5.2, sharex=True)
    epochs = [h["epoch"] for h in history]
    for ax, (key, label) in zip(axes.flat, panels, strict=False):   # fewer panels than axes: the rest hide
        ax.plot(epochs, [h[key] for h in history], marker="o", ms=3, color=PALETTE[0])
        ax.set(ylabel=label)
        if key in ("NC1", "NC4"):
            ax.set_yscale("log")
        if key in ("NC4_ncc", "accuracy"):
            ax.set_ylim(-0.03, 1.03)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    return fig

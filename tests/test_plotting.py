"""The figure style: text follows the figure's width; tables escape their cells."""

import matplotlib

matplotlib.use("Agg")

import matplotlib as mpl  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from ncmse import plotting  # noqa: E402


def test_text_grows_with_the_figure_width_and_resets():
    plotting.use_style()
    base = mpl.rcParams["font.size"]
    fig, _ = plotting.subplots(1, 2, width=2 * plotting.FIGSIZE[0])
    assert mpl.rcParams["font.size"] == pytest.approx(base * 2 ** 0.6)
    assert mpl.rcParams["axes.labelsize"] > base
    plt.close(fig)
    fig, _ = plotting.subplots()
    assert mpl.rcParams["font.size"] == pytest.approx(base)             # the default width: unchanged
    plt.close(fig)
    fig = plotting.figure(width=3.0)                                   # narrower: never smaller than the base
    assert mpl.rcParams["font.size"] == pytest.approx(base) and fig.get_size_inches()[0] == pytest.approx(3.0)
    plt.close(fig)


def test_markdown_table_escapes_pipes_and_checks_rows():
    text = plotting.markdown_table([("a|b", 0.5)], ["name", "value"], formats=[None, ".2f"])
    assert text.splitlines()[2] == "| a\\|b | 0.50 |"
    with pytest.raises(ValueError, match="entries"):
        plotting.markdown_table([(1,)], ["a", "b"])


def test_cost_figure_draws_one_bar_per_timed_row_with_its_own_label():
    row = {"study": "deep", "profile": "cpu", "image_epochs": 1e6, "device": "CPU X, 2 workers", "setup": "2 workers",
           "hours": 0.1,
           "measured": False}
    rows = [row, {**row, "measured": True, "hours": 0.2}, {**row, "profile": "paper", "hours": None}]
    fig = plotting.cost_figure(rows)
    ax_work, ax_time = fig.axes[:2]
    assert [t.get_text() for t in ax_work.get_yticklabels()] == ["deep, cpu", "deep, paper"]
    assert [p.get_width() for p in ax_time.patches] == [0.1, 0.2]          # same label, two bars
    assert [t.get_text() for t in ax_time.get_yticklabels()] == ["deep, cpu: 2 workers"] * 2
    assert ax_time.patches[0].get_facecolor() != ax_time.patches[1].get_facecolor()
    plt.close(fig)


def test_architecture_figure_draws_every_stage_and_module():
    import matplotlib

    matplotlib.use("Agg")
    from ncmse import layers, plotting

    fig = plotting.architecture_figure(layers.DATA_FLOW, layers.LAYERS)
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {stage for stage, _, _ in layers.DATA_FLOW} <= texts
    assert {f"ncmse.{m}" for _, _, mods in layers.DATA_FLOW for m in mods} <= texts
    assert len(fig.legends[0].get_texts()) == len(layers.LAYERS)


def test_d_ticks_leave_out_labels_that_would_overlap():
    import matplotlib.pyplot as plt

    from ncmse.plotting import d_ticks

    fig, ax = plt.subplots()
    ax.set_xscale("log")
    d_ticks(ax, [2, 4, 6, 8, 9, 10, 16, 64])
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert list(ax.get_xticks()) == [2, 4, 6, 8, 9, 10, 16, 64]
    assert labels == ["2", "4", "6", "8", "", "10", "16", "64"]
    plt.close(fig)

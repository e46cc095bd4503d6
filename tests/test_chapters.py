"""Every notebook chapter of _toc.yml executes at the smoke profile, with every figure drawn, and every
table it offers for download reads back with pandas."""

import pandas as pd
import pytest

from ncmse import runner
from ncmse.results import RUN_COLUMNS

CHAPTERS = [e for e in runner.toc_files() if runner.is_notebook(runner.source_of(e))]


@pytest.mark.slow
@pytest.mark.parametrize("entry", CHAPTERS)
def test_chapter_runs_at_smoke(entry, tmp_path):
    out = tmp_path / f"{entry}.ipynb"
    res = runner.execute_chapter(runner.source_of(entry), out, profile="smoke", timeout=600)
    assert res.ok, f"{entry} failed: {res.error}"
    assert runner.missing_figures(out) == []
    offered = sorted(runner.downloads_of(out).glob("*.csv"))
    runs_csv = {"book/deep_networks": "deep_networks_runs.csv", "book/cifar10": "cifar10_runs.csv"}
    if entry in runs_csv:
        assert [p.name for p in offered] == [runs_csv[entry]]
    for p in offered:
        table = pd.read_csv(p)
        assert len(table) > 0 and (p.name not in runs_csv.values() or list(table.columns) == list(RUN_COLUMNS)), p

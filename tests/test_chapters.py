"""Every notebook chapter of _toc.yml executes at the smoke profile, with every figure drawn."""

import pytest

from ncmse import runner

CHAPTERS = [e for e in runner.toc_files() if runner.is_notebook(runner.source_of(e))]


@pytest.mark.slow
@pytest.mark.parametrize("entry", CHAPTERS)
def test_chapter_runs_at_smoke(entry, tmp_path):
    out = tmp_path / f"{entry}.ipynb"
    res = runner.execute_chapter(runner.source_of(entry), out, profile="smoke", timeout=600)
    assert res.ok, f"{entry} failed: {res.error}"
    assert runner.missing_figures(out) == []

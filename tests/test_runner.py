import json
from pathlib import Path

import nbformat
import pytest

from ncmse import runner
from ncmse.profiles import check_profile, describe, settings

FAILING = """---
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# A chapter that fails

```{code-cell} ipython3
:tags: [parameters]
profile = "cpu"
```

```{code-cell} ipython3
assert profile == "smoke"
```

```{code-cell} ipython3
raise RuntimeError("boom")
```
"""


def test_toc_lists_intro_first_and_every_entry_has_one_source():
    entries = runner.toc_files()
    assert entries[0] == "book/intro"
    for e in entries:
        runner.source_of(e)          # raises if missing or ambiguous
    assert any(runner.is_notebook(runner.source_of(e)) for e in entries)
    assert not runner.is_notebook(runner.source_of("book/intro"))


def test_failing_cell_names_the_cell_and_sources_are_untouched(tmp_path):
    src = tmp_path / "bad.md"
    src.write_text(FAILING)
    out = tmp_path / "out" / "bad.ipynb"
    res = runner.execute_chapter(src, out, profile="smoke", timeout=120, cwd=tmp_path)
    assert not res.ok
    assert "cell" in res.error and "RuntimeError: boom" in res.error
    assert src.read_text() == FAILING                 # never written over
    nb = nbformat.read(out, as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)


def test_missing_figures_detected(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("pass")
    cell.metadata["mystnb"] = {"figure": {"name": "fig-x", "caption": "x"}}
    nb.cells.append(cell)
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    assert runner.missing_figures(path) == ["cell 0 (figure fig-x) produced no image"]


def test_run_reports_failure_and_keeps_timings(tmp_path, capsys):
    (tmp_path / "book").mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/bad\n")
    (tmp_path / "_config.yml").write_text("title: t\n")
    (tmp_path / "book" / "intro.md").write_text("# Intro\n")
    (tmp_path / "book" / "bad.md").write_text(FAILING)
    rc = runner.run("smoke", build=False, timeout=120, root=tmp_path)
    assert rc == 1
    err = capsys.readouterr().err
    assert "FAILED book/bad: cell" in err
    timings = json.loads((tmp_path / "_build" / "timings.json").read_text())
    assert timings["book/bad"]["ok"] is False and timings["book/bad"]["profile"] == "smoke"
    with pytest.raises(ValueError, match="not in _toc.yml"):
        runner.run("smoke", chapters=["book/nope"], build=False, root=tmp_path)


GOOD = FAILING.replace('raise RuntimeError("boom")', "print('fine')").replace("fails", "works")


def test_a_chapter_that_last_failed_fails_a_partial_run(tmp_path, capsys):
    (tmp_path / "book").mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/bad\n"
                                       "  - file: book/good\n")
    (tmp_path / "_config.yml").write_text("title: t\n")
    (tmp_path / "book" / "intro.md").write_text("# Intro\n")
    (tmp_path / "book" / "bad.md").write_text(FAILING)
    (tmp_path / "book" / "good.md").write_text(GOOD)
    assert runner.run("smoke", build=False, timeout=120, root=tmp_path) == 1
    capsys.readouterr()
    assert runner.run("smoke", chapters=["book/good"], build=False, timeout=120, root=tmp_path) == 1
    err = capsys.readouterr().err
    assert "book/bad: its last execution failed" in err and "--chapters book/bad" in err
    (tmp_path / "book" / "bad.md").write_text(GOOD)
    assert runner.run("smoke", chapters=["book/bad"], build=False, timeout=120, root=tmp_path) == 0
    assert runner.run("smoke", chapters=["book/good"], build=False, timeout=120, root=tmp_path) == 0


def test_profiles():
    assert check_profile("smoke") == "smoke"
    with pytest.raises(ValueError, match="unknown profile"):
        check_profile("fast")
    with pytest.raises(ValueError, match="no settings"):
        settings("nope", "cpu")
    assert "`paper`" in describe("ufm_global", "paper")
    assert settings("ufm_global", "smoke")["K"] <= settings("ufm_global", "cpu")["K"]


def test_source_of_errors(tmp_path):
    (tmp_path / "book").mkdir()
    with pytest.raises(FileNotFoundError, match="neither"):
        runner.source_of("book/x", root=tmp_path)
    (tmp_path / "book" / "x.md").write_text("# x\n")
    (tmp_path / "book" / "x.ipynb").write_text("{}")
    with pytest.raises(ValueError, match="both"):
        runner.source_of("book/x", root=tmp_path)
    assert isinstance(runner.ROOT, Path)

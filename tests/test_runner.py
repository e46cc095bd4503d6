import json
import shutil
import subprocess
import sys
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


def _book(root: Path, chapters: dict[str, str]) -> None:
    """A book under ``root``: the plain page book/intro, then the given chapters (entry name → source)."""
    (root / "book").mkdir()
    toc = "format: jb-book\nroot: book/intro\nchapters:\n" + "".join(f"  - file: book/{n}\n" for n in chapters)
    (root / "_toc.yml").write_text(toc)
    (root / "_config.yml").write_text("title: t\n")
    (root / "book" / "intro.md").write_text("# Intro\n")
    for name, text in chapters.items():
        (root / "book" / f"{name}.md").write_text(text)


def test_a_partial_run_on_a_fresh_checkout_refuses_to_build_in_one_line_before_executing(tmp_path):
    _book(tmp_path, {"first": GOOD, "second": GOOD, "notes": "# Notes\n"})
    with pytest.raises(ValueError) as info:
        runner.run("smoke", chapters=["book/second"], timeout=120, root=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot build the site: book/first has never been executed here")
    assert "--no-build to execute only book/second" in message and "notes" not in message   # plain pages need none
    assert not (tmp_path / "_build").exists()           # refused before executing or staging anything


def test_a_partial_run_on_a_fresh_checkout_executes_with_no_build(tmp_path, capsys):
    _book(tmp_path, {"first": GOOD, "second": GOOD, "third": GOOD})
    executed = tmp_path / "_build" / "executed" / "book"
    assert runner.never_executed(runner.toc_files(tmp_path), ["book/second"], executed.parent, tmp_path) == \
        ["book/first", "book/third"]
    assert runner.never_executed(runner.toc_files(tmp_path), None, executed.parent, tmp_path) == []
    assert runner.run("smoke", chapters=["book/second"], build=False, timeout=120, root=tmp_path) == 0
    out = capsys.readouterr().out
    assert "note: not executed yet (no site can be built until they are): book/first, book/third" in out
    assert (executed / "second.ipynb").exists()
    assert not (executed / "first.ipynb").exists() and not (executed / "third.ipynb").exists()
    timings = json.loads((tmp_path / "_build" / "timings.json").read_text())
    assert list(timings) == ["book/second"] and timings["book/second"]["ok"] is True
    # once the others have been executed, nothing stands between a partial run and the site
    assert runner.run("smoke", chapters=["book/first", "book/third"], build=False, timeout=120, root=tmp_path) == 0
    assert runner.never_executed(runner.toc_files(tmp_path), ["book/second"], executed.parent, tmp_path) == []


def test_the_book_command_on_a_fresh_checkout(tmp_path):
    """``python -m ncmse book --chapters X`` in a fresh checkout (the package copied, so that its root is
    the temporary folder): one ``error:`` line and status 2 without ``--no-build``, 0 with it."""
    shutil.copytree(runner.ROOT / "ncmse", tmp_path / "ncmse", ignore=shutil.ignore_patterns("__pycache__"))
    _book(tmp_path, {"first": GOOD, "second": GOOD})
    cmd = [sys.executable, "-m", "ncmse", "book", "--profile", "smoke", "--chapters", "book/second", "--workers", "1"]
    refused = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "error: cannot build the site: book/first has never been executed here; run ./run.sh book without "
        "--chapters once, add it to --chapters, or add --no-build to execute only book/second"]
    done = subprocess.run(cmd + ["--no-build"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "book/second: ok" in done.stdout and (tmp_path / "_build" / "executed" / "book" / "second.ipynb").exists()


def test_status_page_names_each_machine_class_and_capability(tmp_path):
    """The status page states the main job's time per machine class measured, and every benchmark's
    machine with its CPU capability ('capability not recorded' for reports made before it was)."""
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    assert runner._book_times(tmp_path) == ""
    (results / "book_cpu.json").write_text(json.dumps({"classes": {
        "CPU A, 2 cores (AVX2, emulated bf16)": {"seconds": 780.0, "ok": True, "finished": "2026-12-07 01:00 UTC"},
        "CPU B, 2 cores (AVX512 + AMX, native bf16)": {"seconds": 420.0, "ok": False, "finished": "x"}}}))
    table = runner._book_times(tmp_path)
    assert "| CPU A, 2 cores (AVX2, emulated bf16) | 13.0 | yes |" in table and "| 7.0 | no |" in table
    (results / "old.json").write_text(json.dumps({"summary": {"what": "w", "result": "r", "machine": "EPYC"}}))
    (results / "new.json").write_text(json.dumps({"capability": "AVX2, emulated bf16",
                                                  "summary": {"what": "w", "result": "r", "machine": "EPYC"}}))
    bench = runner._benchmark_table(tmp_path)
    assert "EPYC (capability not recorded)" in bench and "EPYC (AVX2, emulated bf16)" in bench


def test_status_page_shows_what_the_drill_did_to_damaged_files(tmp_path):
    """The interruption drill's damaged files, one row each (file, damage, kills, warnings, whether the run
    ended bit-identical), and the *.corrupt files kept; nothing for a missing or older report."""
    assert runner._drill_table(tmp_path) == ""
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)

    def trial(file, damage, same):
        return {"file": file, "damage": damage, "signal": "SIGKILL", "kills_after_damage": 1, "warnings": 1,
                "bit_identical": same, "traceback": False}

    report = {"date": "2026-12-07", "machine": "EPYC, 2 cores",
              "kills": {"kills_landed": 12, "trials": [{"bit_identical": True}, {"bit_identical": True}]},
              "damaged_files": {"trials": [trial("result", "binary bytes", True),
                                           trial("checkpoint", "cut short", False)],
                                "corrupt_files_kept": ["k.json.corrupt.1", "k.json.corrupt"]}}
    (results / "interrupt_drill_cpu.json").write_text(json.dumps(report))
    table = runner._drill_table(tmp_path)
    assert "| result | binary bytes | SIGKILL | 1 | 1 | yes | no |" in table
    assert "| checkpoint | cut short | SIGKILL | 1 | 1 | **no** | no |" in table
    assert "killed 12 times" in table and "2 of 2 completed runs" in table and "`k.json.corrupt.1`" in table
    del report["damaged_files"]                                    # a report from before the drill damaged files
    (results / "interrupt_drill_cpu.json").write_text(json.dumps(report))
    assert runner._drill_table(tmp_path) == ""

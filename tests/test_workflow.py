"""Publishing (issue #26): the GitHub Actions workflow passes actionlint and does what CONTRIBUTING.md
says (``./run.sh test`` on every push and pull request; on pushes to main the book at the ``cpu``
profile, deployed to GitHub Pages), and the book's configuration has its repository and Binder buttons.

actionlint comes with the dev extra as ``jactionlint`` (a maintained fork whose wheel ships the binary),
run with ``--profile correctness``: actionlint's own checks.  An ``actionlint`` on PATH serves as well.
Without either the lint tests skip, except under CI (``CI`` set), where they fail.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ncmse import runner
from ncmse.cache import ResultsCache

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
CI_YML = WORKFLOWS / "ci.yml"
ON_MAIN = "github.event_name == 'push' && github.ref == 'refs/heads/main'"


def _linter() -> list[str] | None:
    if importlib.util.find_spec("jactionlint") is not None:
        return [sys.executable, "-m", "jactionlint", "--profile", "correctness", "--no-color"]
    found = shutil.which("actionlint")
    return [found, "--no-color"] if found else None


@pytest.fixture(scope="module")
def lint():
    cmd = _linter()
    if cmd is None:
        why = "no actionlint: install requirements-lock.txt (the dev extra's jactionlint)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}; under CI the workflows must be linted")
        pytest.skip(why)
    return lambda *files: subprocess.run(cmd + [str(f) for f in files], cwd=REPO, capture_output=True,
                                         text=True, timeout=120)


@pytest.fixture(scope="module")
def workflow() -> dict:
    wf = yaml.safe_load(CI_YML.read_text())
    wf["on"] = wf.pop(True, wf.get("on"))          # YAML 1.1 reads the key `on` as true
    return wf


def _uses(job: dict) -> list[str]:
    return [s["uses"].split("@")[0] for s in job["steps"] if "uses" in s]


def _step(job: dict, **match) -> dict:
    (step,) = [s for s in job["steps"] if all(str(s.get(k, "")).startswith(v) for k, v in match.items())]
    return step


def test_workflows_pass_actionlint(lint):
    files = sorted(WORKFLOWS.glob("*.y*ml"))
    assert CI_YML in files
    r = lint(*files)
    assert r.returncode == 0, r.stdout + r.stderr


def test_actionlint_catches_a_broken_workflow(lint, tmp_path):
    broken = tmp_path / "ci.yml"
    broken.write_text(CI_YML.read_text().replace("steps.chrome.outputs", "steps.no_such_step.outputs"))
    r = lint(broken)
    assert r.returncode == 1 and "no_such_step" in r.stdout + r.stderr, r.stdout + r.stderr


def test_the_test_job_runs_the_readme_command_on_every_push_and_pull_request(workflow):
    on = workflow["on"]
    assert {"push", "pull_request"} <= set(on)
    assert not any((on[e] or {}).get(k) for e in ("push", "pull_request") for k in ("branches", "paths"))
    test = workflow["jobs"]["test"]
    assert "if" not in test and test["runs-on"] == "ubuntu-latest"
    assert _step(test, uses="actions/setup-python")["with"]["python-version"] == "3.11"
    step = _step(test, run="./run.sh test")
    assert step["run"] == "./run.sh test"
    # the browser test really runs: a browser is named, and nothing skips it
    assert step["env"]["NCMSE_CHROMIUM"] == "${{ steps.chrome.outputs.chrome-path }}"
    assert "NCMSE_SKIP_BROWSER" not in CI_YML.read_text() and "NCMSE_DATA_ROOT" not in CI_YML.read_text()


def test_the_book_is_built_at_cpu_and_deployed_to_pages_only_from_main(workflow):
    jobs = workflow["jobs"]
    assert workflow["permissions"] == {"contents": "read"}
    assert {n for n, j in jobs.items() if "actions/upload-pages-artifact" in _uses(j)} == {"book"}
    assert {n for n, j in jobs.items() if "actions/deploy-pages" in _uses(j)} == {"pages"}
    book, pages = jobs["book"], jobs["pages"]
    assert book["if"] == pages["if"] == ON_MAIN
    assert (book["needs"], pages["needs"]) == ("test", "book")
    assert _step(book, run="./run.sh book")["run"] == "./run.sh book --profile cpu"
    html = runner.html_dir(runner.ROOT / "_build").relative_to(runner.ROOT)
    assert _step(book, uses="actions/upload-pages-artifact")["with"]["path"] == html.as_posix()
    assert pages["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    assert pages["environment"]["name"] == "github-pages" and pages["concurrency"]["group"]


def test_the_results_cache_and_executed_chapters_are_cached_and_saved_back(workflow, monkeypatch):
    monkeypatch.delenv("NCMSE_CACHE", raising=False)   # the default cache, as on GitHub's runners
    book = workflow["jobs"]["book"]
    restore = _step(book, uses="actions/cache/restore", name="Restore the results")
    save = _step(book, uses="actions/cache/save")
    results = ResultsCache().root.relative_to(REPO)                 # data/results
    paths = {results, results.parent / "checkpoints", Path("_build/executed"), Path("_build/timings.json")}
    for step in (restore, save):
        assert {Path(p) for p in step["with"]["path"].split()} == paths
    assert "github.run_id" in restore["with"]["key"] and save["with"]["key"] == restore["with"]["key"]
    assert restore["with"]["key"].startswith(restore["with"]["restore-keys"])
    assert save["if"] == "always()"                 # runs trained by a failed build are kept too


def test_the_book_links_its_repository_and_launches_on_binder():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    repo = config["repository"]
    assert repo["url"].startswith("https://github.com/") and repo["branch"] == "main"
    assert all(config["html"][b] for b in ("use_repository_button", "use_issues_button", "use_download_button"))
    assert config["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    post_build = REPO / "binder" / "postBuild"
    assert os.access(post_build, os.X_OK) and "jupytext --set-formats ipynb,md:myst" in post_build.read_text()
    assert (REPO / "binder" / "runtime.txt").read_text().strip() == "python-3.11"

"""The website, checked in headless Chromium: build the book at the smoke profile, open every page.

Screenshots of every page land in ``_build/browser-test/screenshots`` for a person to look at.
Set NCMSE_SKIP_BROWSER=1 to skip on a machine without Chromium (``./run.sh test`` installs it).
"""

import os
import re
import shutil

import pytest

from ncmse import runner

pytestmark = pytest.mark.slow

BUILD = runner.ROOT / "_build" / "browser-test"


@pytest.fixture(scope="module")
def site():
    if os.environ.get("NCMSE_SKIP_BROWSER") == "1":
        pytest.skip("NCMSE_SKIP_BROWSER=1")
    from ncmse.sitecheck import find_chromium

    if find_chromium() is None:
        pytest.fail("no Chromium: `apt-get install -y chromium` (./run.sh test does it) or set NCMSE_CHROMIUM")
    rc = runner.run("smoke", build_dir=BUILD, timeout=600)
    assert rc == 0, "the smoke build of the book failed (see the output above)"
    return runner.html_dir(BUILD)


def test_every_page_reads_well(site):
    from ncmse.sitecheck import check_site

    pages = runner.toc_files()
    reports = check_site(site, pages, screenshots=BUILD / "screenshots")
    problems = {r.page: r.problems for r in reports if r.problems}
    assert not problems, problems
    notebooks = {e for e in pages if runner.is_notebook(runner.source_of(e))}
    for r in reports:
        assert os.path.getsize(r.screenshot) > 10_000
        if r.page in notebooks:
            assert r.images >= 1 and r.formulas >= 1, (r.page, r.images, r.formulas)
    status = (site / "book" / "status.html").read_text()
    for entry in notebooks:
        assert entry in status, f"status page does not list {entry}"
    assert "<code class=\"docutils literal notranslate\"><span class=\"pre\">smoke</span></code>" in status


def test_deep_chapters_offer_their_runs_and_the_api_page_documents_the_package(site):
    import pandas as pd

    from ncmse.results import RUN_COLUMNS

    for chapter, study in (("deep_networks", "deep"), ("cifar10", "cifar10")):
        page = site / "book" / f"{chapter}.html"
        links = re.findall(r'href="([^"]+\.csv)"', page.read_text())
        assert len(links) == 1 and links[0].endswith(f"/{chapter}_runs.csv"), links
        table = pd.read_csv(page.parent / links[0])                 # the file the reader downloads
        assert list(table.columns) == list(RUN_COLUMNS) and len(table) > 0
        assert set(table["profile"]) == {"smoke"} and set(table["study"]) == {study}
    api = (site / "book" / "api.html").read_text()
    for target in ("ncmse.metrics.nc_metrics", "ncmse.metrics.NCAccumulator", "ncmse.metrics.ncc_mismatch",
                   "ncmse.ufm.UFM", "ncmse.config.RunConfig", "ncmse.executors.sweep", "ncmse.cache.run",
                   "ncmse.etf.simplex_etf", "ncmse.minimizers.global_minimizer", "ncmse.results.runs_table"):
        assert f'id="{target}"' in api, target


def test_checker_catches_a_broken_figure_formula_and_link(site, tmp_path):
    from ncmse.sitecheck import check_site

    broken = tmp_path / "html"
    shutil.copytree(site, broken)
    page = broken / "book" / "ufm_global_optimality.html"
    html = page.read_text()
    image = re.search(r'<img[^>]+src="([^"]+\.png)"', html).group(1)
    (page.parent / image).unlink()                                   # a figure that does not load
    html = html.replace(r"\(K-1\)", r"\(\frac{K-1\)", 1)              # a formula MathJax cannot parse
    html = html.replace('href="intro.html"', 'href="no-such-page.html"')     # a dead internal link
    html = html.replace("</h1>", "</h1><p>\\(d={glue:text}`low_d`\\)</p>", 1)     # a glue role inside math
    page.write_text(html)
    (report,) = check_site(broken, ["book/ufm_global_optimality"])
    text = "\n".join(report.problems)
    assert "image did not load" in text
    assert "MathJax error" in text or "raw TeX" in text
    assert "broken internal link: no-such-page.html" in text
    assert "unresolved {glue:" in text

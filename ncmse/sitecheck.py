"""Check the built website in a real browser: headless Chromium driven by Playwright.

For every page of ``_toc.yml``: it loads; every image in the article loads with a non-zero size;
MathJax rendered every formula (no raw ``\\(``, ``\\[`` or ``$$`` left in the visible text, no MathJax
error); no cell shows an error, a traceback or stderr output; every internal link points to a file
that exists (and, within a page, to an anchor that exists); nothing in the article (code, tables,
outputs, display math) is wider than its box, so nothing scrolls sideways.  A full-page screenshot of every page is
saved so that a person can look.  Used by ``tests/test_site.py`` and ``python -m ncmse check-site``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = ["find_chromium", "check_site", "PageReport"]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic"]

# sphinx-thebe 0.3 (pulled in by Jupyter Book 1.x) may add its config script twice; the second copy
# raises this on load.  Thebe (live code) is not used by the book, so the error changes nothing a
# reader sees; every other JavaScript error fails the check.
KNOWN_HARMLESS_JS_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)

# Runs in the page once MathJax is done: everything the checks need, in one round trip.
_PAGE_PROBE = """
() => {
  const article = document.querySelector('article') || document.body;
  const images = [...article.querySelectorAll('img')].map(i => ({
      src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0 && i.naturalHeight > 0}));
  // raw TeX is looked for in the whole page (navigation included: MathJax only runs where it is loaded)
  const clone = document.body.cloneNode(true);
  clone.querySelectorAll('mjx-container, script, style, pre, code, .highlight').forEach(e => e.remove());
  const text = clone.innerText;
  const raw = ['\\\\(', '\\\\[', '$$', '\\\\begin{'].filter(s => text.includes(s))
      .concat((text.match(/\\\\[a-zA-Z]+/g) || []).slice(0, 5));   // a TeX command shown as text
  const mathErrors = [...article.querySelectorAll('mjx-merror, .MathJax_Error')].map(e => e.textContent);
  const rendered = article.querySelectorAll('mjx-container').length;
  const errors = [...article.querySelectorAll(
      '.output.error, .output.traceback, .output.stderr, .cell_output .stderr, .cell_output .traceback')]
      .map(e => e.innerText.slice(0, 200));
  const tracebacks = article.innerText.includes('Traceback (most recent call last)');
  const links = [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'));
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  // content wider than its box scrolls sideways at this width (code, tables, outputs, display math)
  const wide = [...article.querySelectorAll('pre, table, .cell_output, .output, div.math, mjx-container[display]')]
      .filter(e => e.scrollWidth > e.clientWidth + 2 && e.clientWidth > 0)
      .map(e => `${e.tagName.toLowerCase()}${e.className ? '.' + String(e.className).split(' ')[0] : ''} `
                + `(${e.scrollWidth - e.clientWidth} px too wide): ${e.innerText.slice(0, 60)}`);
  return {images, raw, mathErrors, rendered, errors, tracebacks, links, ids, wide,
          title: document.title, h1: !!article.querySelector('h1')};
}
"""


@dataclass
class PageReport:
    page: str                      # toc entry, e.g. "book/intro"
    problems: list[str] = field(default_factory=list)
    images: int = 0
    formulas: int = 0
    screenshot: str = ""


def find_chromium() -> str | None:
    """The Chromium executable: ``$NCMSE_CHROMIUM``, else ``chromium`` or ``chromium-browser`` on PATH."""
    env = os.environ.get("NCMSE_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _internal_target(href: str, page_file: Path) -> tuple[Path | None, str]:
    """(file, fragment) for an internal link, (None, "") for an external one."""
    parsed = urlparse(href)
    if parsed.scheme in ("http", "https", "mailto", "data", "javascript") or parsed.netloc:
        return None, ""
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)), parsed.fragment
    path = unquote(parsed.path)
    target = page_file if not path else (page_file.parent / path).resolve()
    return target, parsed.fragment


def check_site(html: Path, pages: list[str], *, screenshots: Path | None = None,
               timeout_ms: int = 30000) -> list[PageReport]:
    """Open every page (toc entry → ``<html>/<entry>.html``) in headless Chromium and check it.

    Returns one :class:`PageReport` per page; a page passes when its ``problems`` list is empty.
    """
    from playwright.sync_api import sync_playwright

    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium found: install Debian's 'chromium' (apt-get install -y chromium) "
                                "or set NCMSE_CHROMIUM to its path")
    html = Path(html).resolve()
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
    reports = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        console_errors: list[str] = []
        page.on("pageerror", lambda exc: console_errors.append(str(exc)))
        for entry in pages:
            rep = PageReport(entry)
            reports.append(rep)
            file = html / f"{entry}.html"
            if not file.exists():
                rep.problems.append(f"page missing: {file}")
                continue
            console_errors.clear()
            page.goto(file.as_uri(), wait_until="load", timeout=timeout_ms)
            page.wait_for_function(
                "() => !window.MathJax || !MathJax.startup || !MathJax.startup.promise ? true : "
                "MathJax.startup.promise.then(() => true)", timeout=timeout_ms)
            page.wait_for_function(  # every image has either loaded or failed
                "() => [...document.images].every(i => i.complete)", timeout=timeout_ms)
            info = page.evaluate(_PAGE_PROBE)
            rep.images = len(info["images"])
            rep.formulas = info["rendered"]
            rep.problems += [f"image did not load: {im['src']}" for im in info["images"] if not im["ok"]]
            rep.problems += [f"raw TeX left in the text: {r!r}" for r in info["raw"]]
            if "{glue:" in file.read_text(encoding="utf-8"):     # a glue role where roles are not parsed (math)
                rep.problems.append("an unresolved {glue:…} role is in the page")
            rep.problems += [f"MathJax error: {e}" for e in info["mathErrors"]]
            rep.problems += [f"error output in a cell: {e!r}" for e in info["errors"]]
            rep.problems += [f"scrolls sideways: {w}" for w in info["wide"]]
            if info["tracebacks"]:
                rep.problems.append("a traceback is visible on the page")
            if not info["h1"]:
                rep.problems.append("no <h1> title in the article")
            rep.problems += [f"JavaScript error: {e}" for e in console_errors
                             if not any(k in e for k in KNOWN_HARMLESS_JS_ERRORS)]
            ids = set(info["ids"])
            for href in sorted(set(info["links"])):
                target, fragment = _internal_target(href, file)
                if target is None:
                    continue
                if not target.exists():
                    rep.problems.append(f"broken internal link: {href}")
                elif target == file and fragment and fragment not in ids:
                    rep.problems.append(f"broken anchor on the page: {href}")
            if screenshots is not None:
                shot = screenshots / (entry.replace("/", "__") + ".png")
                page.screenshot(path=str(shot), full_page=True)
                rep.screenshot = str(shot)
        browser.close()
    return reports

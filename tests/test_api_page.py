"""The page API reference (book/api.md) documents every public module of ``ncmse``.

A module is public when it declares ``__all__``; the modules are found by parsing ``ncmse/*.py`` (no
import), so a new module is caught the day it is added.  The page documents a module with an
``automodule`` directive; its ``autosummary`` table may name only what the module exports, or the strict
build would fail on a link to an object that autodoc did not document.
"""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ncmse"
PAGE = REPO / "book" / "api.md"


def exported(path: Path) -> list[str] | None:
    """The names in the module-level ``__all__`` of the module at ``path``, or None without one."""
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
            else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value is not None:
            return list(ast.literal_eval(node.value))
    return None


def public_modules() -> dict[str, list[str]]:
    """``ncmse`` module name → its ``__all__``, for every module file that has one (the package's own
    ``__init__`` and ``__main__`` aside: the package re-exports, the command line is documented in the README)."""
    return {f"ncmse.{p.stem}": names for p in sorted(PACKAGE.glob("*.py"))
            if not p.stem.startswith("__") and (names := exported(p)) is not None}


def documented(page: str) -> dict[str, list[str]]:
    """Module → the names of its autosummary table, for every ``.. automodule::`` on the page (the table is
    the one after the module's ``.. currentmodule::``)."""
    out = {m: [] for m in re.findall(r"(?m)^\.\. automodule:: (ncmse(?:\.\w+)*)\s*$", page)}
    for block in re.split(r"(?m)^(?=\.\. currentmodule:: )", page)[1:]:
        module = re.match(r"\.\. currentmodule:: (\S+)", block).group(1)
        table = re.search(r"(?ms)^\.\. autosummary::\n(?:   :\S+:.*\n)*\n((?:   \S+\n)+)", block)
        if table:
            out.setdefault(module, []).extend(line.strip() for line in table.group(1).splitlines())
    return out


def test_discovery_finds_the_modules_the_page_started_with():
    modules = public_modules()
    for name in ("ncmse.metrics", "ncmse.study", "ncmse.train", "ncmse.data", "ncmse.models", "ncmse.losses",
                 "ncmse.threads", "ncmse.runner"):
        assert name in modules and modules[name], name
    assert "ncmse.__main__" not in modules and "ncmse.__init__" not in modules
    assert "use_budget" in modules["ncmse.threads"]


def test_every_public_module_is_on_the_api_page():
    page = documented(PAGE.read_text())
    missing = sorted(set(public_modules()) - set(page))
    assert not missing, (f"book/api.md lacks a section (autosummary + automodule) for {', '.join(missing)}; "
                         "every module of ncmse with __all__ belongs on that page")


def test_the_api_page_names_only_modules_and_objects_that_exist():
    modules = public_modules()
    for module, names in documented(PAGE.read_text()).items():
        assert module in modules, f"book/api.md documents {module}, which has no file with __all__ in ncmse/"
        strays = [n for n in names if n not in modules[module]]
        assert not strays, f"book/api.md lists {strays} under {module}, which does not export them (__all__)"
        assert names, f"book/api.md: {module} has no autosummary table"


def test_the_page_parser_sees_a_missing_module():
    page = PAGE.read_text()
    cut = re.sub(r"(?ms)^## [^\n]*`ncmse\.losses`.*?(?=^## )", "", page)
    assert "ncmse.losses" in documented(page) and "ncmse.losses" not in documented(cut)
    assert set(public_modules()) - set(documented(cut)) == {"ncmse.losses"}

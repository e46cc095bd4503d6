"""The repository's shape: the package's import graph has no cycle, and nothing cites a document that is
not in the repository."""

import ast
import re
from pathlib import Path

from ncmse import fingerprint, layers

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ncmse"


def _graph() -> dict[str, set[str]]:
    """ncmse module → the ncmse modules it imports anywhere (lazy imports inside functions included)."""
    graph = {}
    for path in sorted(PACKAGE.glob("*.py")):
        name = "ncmse" if path.name == "__init__.py" else f"ncmse.{path.stem}"
        graph[name] = fingerprint.module_imports(name, ast.parse(path.read_text()), path.name == "__init__.py")
        graph[name].discard("ncmse")             # `from . import __version__` reads a constant
        graph[name].discard(name)
    return graph


def test_import_graph_has_no_cycle():
    graph = _graph()
    assert "ncmse.train" in graph and "ncmse.config" in graph["ncmse.train"]
    assert "ncmse.cache" not in graph["ncmse.train"]
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " → ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


CITED = re.compile(r"(?<![\w/.-])([\w./-]*[A-Za-z0-9_-]\.md)\b")
DOCUMENT = re.compile(r"^[A-Z][A-Z_]+\.md$")        # upper-case names (README.md …): documents


def _texts():
    for folder in ("ncmse", "benchmarks", "tests", "book"):
        for p in sorted((REPO / folder).rglob("*")):
            if p.suffix in (".py", ".md", ".yml", ".toml", ".bib", ".css") and "__pycache__" not in p.parts:
                yield p
    for name in ("pyproject.toml", "_config.yml", "_toc.yml", "README.md", "CONTRIBUTING.md", "run.sh",
                 "environment.yml"):
        if (REPO / name).exists():
            yield REPO / name


def test_every_cited_document_is_in_the_repository():
    missing = []
    for p in _texts():
        for m in CITED.finditer(p.read_text()):
            cited = m.group(1)
            if p.is_relative_to(REPO / "tests") and not DOCUMENT.match(Path(cited).name):
                continue                          # chapters written into temporary folders by tests
            if "://" in p.read_text()[max(0, m.start() - 60):m.start()]:
                continue                          # part of a web address
            candidates = [REPO / cited, p.parent / cited, REPO / "book" / cited]
            if not any(c.exists() for c in candidates):
                missing.append(f"{p.relative_to(REPO)} cites {cited}")
    assert not missing, missing


def test_every_module_has_a_layer_and_imports_only_upwards():
    order = {f"ncmse.{m}": i for i, mods in enumerate(layers.LAYERS.values()) for m in mods}
    graph = _graph()
    graph.pop("ncmse")                                   # the package's public face re-exports
    assert set(graph) == set(order), f"modules without a layer: {sorted(set(graph) ^ set(order))}"
    wrong = [(m, n) for m, deps in graph.items() for n in deps if order[n] > order[m]]
    assert not wrong, f"imports from a later layer: {wrong}"


def test_the_data_flow_names_modules_that_exist():
    modules = {m for mods in layers.LAYERS.values() for m in mods}
    assert set(layers.ROLES) == set(layers.LAYERS)
    named = [m for _, _, mods in layers.DATA_FLOW for m in mods]
    assert set(named) <= modules, f"the data flow names modules that do not exist: {set(named) - modules}"


def test_the_repository_root_is_defined_once():
    """Only ncmse.paths climbs from a module file to the repository; every other module takes its folders
    from there (a second definition would drift when the package moves)."""
    climbs = re.compile(r"__file__\)?\.resolve\(\)\.(parent\.parent|parents\[1\])"
                        r"|Path\(__file__\)[^\n]*\.parent\.parent")
    found = [p.name for p in sorted(PACKAGE.glob("*.py")) if climbs.search(p.read_text())]
    assert found == ["paths.py"], found
    from ncmse import paths
    assert (paths.ROOT / "ncmse" / "paths.py").is_file() and paths.DATA == paths.ROOT / "data"

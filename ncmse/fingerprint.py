"""What a cached result or a checkpoint is valid for: the code that trained it and the data it read.

A result in the cache is named by its configuration (:meth:`ncmse.config.RunConfig.key`), but
the same configuration trained by other code, or on another copy of the data, is another result.
:func:`validity` is the pair that must match for a cached result or a checkpoint to be used:

* ``code``: :func:`code_fingerprint`, a hash of the source of every ``ncmse`` module that training
  imports (followed transitively from :data:`TRAINING_MODULES`), each parsed and printed back without
  docstrings and comments, so that editing documentation does not invalidate results while any change
  to what runs does;
* ``data``: :func:`ncmse.data.describe_source`, which copy of the dataset would be read (the CIFAR-10
  python batches and the JPEG copy are different data).

Torch version, device, thread count and git revision are provenance, recorded with every result
(``ncmse.train.provenance``) and listed by :func:`ncmse.cache.ResultsCache.audit`, but they do
not invalidate a result: runs on other machines differ from ours only in rounding.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

__all__ = ["TRAINING_MODULES", "training_modules", "module_imports", "code_fingerprint", "validity"]

PACKAGE = Path(__file__).resolve().parent
#: where :func:`training_modules` starts following imports
TRAINING_MODULES = ("ncmse.train",)


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "ncmse":
        return None
    rel = PACKAGE.joinpath(*parts[1:])
    if rel.with_suffix(".py").is_file():
        return rel.with_suffix(".py")
    if (rel / "__init__.py").is_file():
        return rel / "__init__.py"
    return None


def module_imports(name: str, tree: ast.AST, is_package: bool) -> set[str]:
    """The ``ncmse`` modules that ``tree`` (module ``name``) imports anywhere, lazy imports included."""
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "ncmse"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "ncmse":
                continue
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names if _module_file(f"{mod}.{a.name}") is not None}
    return {m for m in out if _module_file(m) is not None}


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def training_modules(entry: tuple[str, ...] = TRAINING_MODULES) -> dict[str, Path]:
    """The ``ncmse`` modules reachable by imports from ``entry``, name → file, sorted by name."""
    seen: dict[str, Path] = {}
    todo = list(entry)
    while todo:
        name = todo.pop()
        # the package itself is its public face (version, re-exports), not training code: an import of
        # its version must not pull every re-exported module into the closure
        if name in seen or name == "ncmse":
            continue
        path = _module_file(name)
        if path is None:
            raise ValueError(f"no module {name} in {PACKAGE}")
        seen[name] = path
        todo += sorted(module_imports(name, ast.parse(path.read_text()), path.name == "__init__.py"))
    return dict(sorted(seen.items()))


@cache
def code_fingerprint(entry: tuple[str, ...] = TRAINING_MODULES) -> str:
    """16 hex digits of a SHA-256 over the docstring-free syntax trees of :func:`training_modules`.

    Computed once per process (from the files as they are when first asked, which is when training
    imports them)."""
    h = hashlib.sha256()
    for name, path in training_modules(entry).items():
        tree = _strip_docstrings(ast.parse(path.read_text()))
        h.update(name.encode() + b"\0" + ast.dump(tree, annotate_fields=False).encode() + b"\0")
    return h.hexdigest()[:16]


def validity(dataset: str, data_root=None) -> dict:
    """``{"code": code_fingerprint(), "data": describe_source(dataset)}``: what must match for a
    cached result or checkpoint of a run on ``dataset`` to be used (module docstring)."""
    from .data import describe_source

    return {"code": code_fingerprint(), "data": describe_source(dataset, root=data_root)}

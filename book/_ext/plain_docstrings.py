"""Sphinx extension of the page API reference: the package's docstrings write formulas as plain text,
where ``|x|`` is an absolute value, never a reStructuredText substitution; escape the bars before
autodoc parses them (only outside inline literals), so that the strict build does not read ``|e|`` as
an undefined substitution."""

import re

_LITERAL = re.compile(r"(``.*?``)")


def _escape(line: str) -> str:
    parts = _LITERAL.split(line)
    return "".join(p if p.startswith("``") else re.sub(r"(?<!\\)\|", r"\\|", p) for p in parts)


def _process(app, what, name, obj, options, lines):
    lines[:] = [_escape(line) for line in lines]


def setup(app):
    app.connect("autodoc-process-docstring", _process)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

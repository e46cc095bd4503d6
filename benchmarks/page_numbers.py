"""Whether two builds of the book print the same numbers: the check after a change to the training code.

A change to a module in the training fingerprint (``ncmse.fingerprint.training_modules``) makes every
cached run stale, so the next build trains them again.  Where the change was not meant to change a
result (a refactoring, a new error message), every page should then print the numbers it printed before.
This script compares the executed notebooks of two builds chapter by chapter:

    git clone . /tmp/old && git -C /tmp/old checkout <before>          # and a clone of the change: /tmp/new
    (cd /tmp/old && python -m ncmse book --profile smoke --no-build)   # likewise in /tmp/new
    python benchmarks/page_numbers.py /tmp/old/_build/executed /tmp/new/_build/executed

It reads the outputs a reader sees (stdout, ``text/plain``, ``text/markdown``; not stderr, where the
progress bars go), drops what differs from run to run by nature (durations such as ``12.3 s``, dates,
object addresses), and compares the numbers left, in order.  It prints one line per chapter, SAME or
DIFFER, and for a difference the first cells that differ; the exit status is 1 where a chapter differs
or is missing from the second build.  Times recorded as bare numbers (a glued ``train_minutes``) show up
as differences to read, not to fix.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

NUMBER = re.compile(r"(?<![\w.])[-+−]?\d+(?:[.,]\d+)*(?:e[-+]?\d+)?")
_VARIES = [(re.compile(r"\d+(?:\.\d+)? ?(?:s|ms|min|h|seconds|minutes|hours)\b"), "DURATION"),
           (re.compile(r"20\d\d-\d\d-\d\d(?:[ T]\d\d:\d\d(?::\d\d)?)?(?: UTC)?"), "DATE"),
           (re.compile(r"0x[0-9a-fA-F]+"), "ADDRESS")]


def shown_numbers(notebook: Path) -> list[tuple[int | None, list[str]]]:
    """(execution count, the numbers of one output) for every output a reader sees, in order."""
    out = []
    for cell in json.loads(Path(notebook).read_text())["cells"]:
        for o in cell.get("outputs", []):
            texts = ["".join(o["text"])] if "text" in o and o.get("name") != "stderr" else []
            texts += ["".join(o["data"][k]) for k in ("text/plain", "text/markdown") if k in o.get("data", {})]
            for text in texts:
                for pattern, word in _VARIES:
                    text = pattern.sub(word, text)
                out.append((cell.get("execution_count"), NUMBER.findall(text)))
    return out


def compare(before: Path, after: Path, *, show: int = 8) -> tuple[bool, list[str]]:
    """(whether every chapter of ``before`` prints the same numbers in ``after``, the report's lines)."""
    ok, lines = True, []
    notebooks = sorted(Path(before).rglob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no executed notebook under {before}")
    for nb in notebooks:
        name = nb.relative_to(before)
        other = Path(after) / name
        if not other.exists():
            ok = False
            lines.append(f"{name}: MISSING in {after}")
            continue
        a, b = shown_numbers(nb), shown_numbers(other)
        same = [x for _, xs in a for x in xs] == [x for _, xs in b for x in xs]
        ok &= same
        lines.append(f"{name}: {'SAME' if same else 'DIFFER'} ({sum(map(len, (x for _, x in a)))} numbers)")
        if not same:
            diff = difflib.unified_diff([str(x) for x in a], [str(x) for x in b], lineterm="", n=0)
            lines += [f"    {line[:200]}" for line in list(diff)[2:2 + show]]
    return ok, lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="the executed notebooks of the first build (_build/executed)")
    parser.add_argument("after", type=Path, help="the executed notebooks of the second build")
    args = parser.parse_args(argv)
    ok, lines = compare(args.before, args.after)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

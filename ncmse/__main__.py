"""Command line: ``python -m ncmse book [--profile cpu] [--chapters …] [--no-build]``."""

from __future__ import annotations

import argparse
import sys

from .profiles import DEFAULT_PROFILE, PROFILES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ncmse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    book = sub.add_parser("book", help="execute every chapter with papermill and build the HTML book")
    book.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE,
                      help=f"size of every chapter (default: {DEFAULT_PROFILE})")
    book.add_argument("--chapters", nargs="+", metavar="ENTRY",
                      help="execute only these _toc.yml entries (e.g. book/ufm_global_optimality); "
                           "the others reuse their last execution")
    book.add_argument("--no-build", action="store_true", help="execute only; do not build the site")
    book.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds")
    args = parser.parse_args(argv)
    if args.command == "book":
        from .runner import run

        return run(args.profile, chapters=args.chapters, build=not args.no_build, timeout=args.timeout)
    return 2


if __name__ == "__main__":
    sys.exit(main())

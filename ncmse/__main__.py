"""Command line: ``python -m ncmse book [--profile cpu] [--chapters …] [--no-build]``; ``train``, ``sweep``
and ``study`` (every run of the chapter "Deep networks") fill the results cache."""

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
    for name, helptext in (("train", "train one configuration (cached under data/results)"),
                           ("sweep", "train a sweep d × loss × seed at a profile, with a summary table")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE, help="base configuration")
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
        p.add_argument("--loss", nargs="+" if name == "sweep" else None, choices=("mse", "rmse", "ce"))
        p.add_argument("--d", nargs="+" if name == "sweep" else None, type=int, help="feature dimension(s)")
        p.add_argument("--seed", nargs="+" if name == "sweep" else None, type=int)
        for opt, typ in (("--dataset", str), ("--model", str), ("--epochs", int), ("--lr", float),
                         ("--alpha", float), ("--M", float), ("--n-per-class", int)):
            p.add_argument(opt, type=typ)
        p.add_argument("--linear-features", action="store_true", help="no ReLU on the feature layer")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
    st = sub.add_parser("study", help="train every run of the chapter 'Deep networks' at a profile into the results "
                                      "cache (on a GPU box, say), so that building the chapter trains nothing")
    st.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE)
    st.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
    st.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.command == "study":
        return _study(args)
    if args.command in ("train", "sweep"):
        return _train_or_sweep(args)
    if args.command == "book":
        from .runner import run

        return run(args.profile, chapters=args.chapters, build=not args.no_build, timeout=args.timeout)
    return 2


def _study(args) -> int:
    from .study import run_study

    try:
        R = run_study(args.profile, device=args.device, progress=not args.quiet)
    except KeyboardInterrupt:
        print("\n[ncmse] interrupted: finished runs are cached under data/results; the run in progress "
              "resumes from data/checkpoints when the same command runs again", file=sys.stderr)
        return 130
    trained = sum(not r["cached"] for r in R.unique_runs)
    print(f"[ncmse] study at profile '{args.profile}': {len(R.unique_runs)} runs after tuning, {trained} trained now; "
          f"the rescaled MSE of the d-sweep is {R.rmse.label}")
    return 0


def _train_or_sweep(args) -> int:
    from .experiments import SUMMARY_COLUMNS, profile_config, summary_rows, sweep, sweep_configs
    from .plotting import markdown_table

    changes = {k: v for k, v in (("dataset", args.dataset), ("model", args.model), ("epochs", args.epochs),
                                 ("lr", args.lr), ("alpha", args.alpha), ("M", args.M),
                                 ("n_per_class", args.n_per_class)) if v is not None}
    if args.linear_features:
        changes["feature_relu"] = False
    as_list = (lambda v: v or ()) if args.command == "sweep" else (lambda v: () if v is None else (v,))
    try:
        base = profile_config(args.profile, **changes)
        configs = sweep_configs(base, ds=as_list(args.d), losses=as_list(args.loss), seeds=as_list(args.seed))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[ncmse] {len(configs)} run(s) at profile '{args.profile}' (cached runs are not retrained)")
    try:
        results = sweep(configs, device=args.device, progress=not args.quiet)
    except KeyboardInterrupt:
        print("\n[ncmse] interrupted: finished runs are cached under data/results; the run in progress "
              "resumes from data/checkpoints when the same command runs again", file=sys.stderr)
        return 130
    print(markdown_table(summary_rows(results), list(SUMMARY_COLUMNS),
                         formats=[None, None, None, None, None, ".4f", ".4f", ".3g", None, ".1f", None]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

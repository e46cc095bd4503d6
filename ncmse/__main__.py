"""Command line: ``python -m ncmse book [--profile cpu] [--chapters …] [--no-build]``; ``train``, ``sweep``
and ``study`` (every run of the chapter "Deep networks", or with ``--study cifar10`` of the chapter
"CIFAR-10"; ``--export`` copies them into the tracked archive ``data/trained``) fill the results cache;
``results`` writes it as one tidy table (``ncmse.results``).  The checks of its input (argument types,
folders, data, memory) are in ``ncmse.cli_checks``."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from typing import TYPE_CHECKING

from .cli_checks import (
    cache_root,
    check_cache_folder,
    check_memory,
    check_path,
    check_places,
    data_needed,
    epoch_count,
    finite_float,
    one_line,
    positive_int,
    seed_value,
    thread_count,
    writable_cache,
)
from .profiles import DEFAULT_PROFILE, GPU_PROFILE, PRECISIONS, PROFILES, STUDIES, STUDY_PROFILES

if TYPE_CHECKING:
    from .config import RunConfig

INTERRUPTED = ("[ncmse] interrupted{how}: finished runs are cached under {results}; the run in progress "
               "resumes from its checkpoint in {checkpoints} when the same command runs again")


CACHE_HELP = ("folder of the results cache, shared by every process and job that uses it: results in DIR/results, "
              "checkpoints in DIR/checkpoints (default: $NCMSE_CACHE, else data/)")


def _cache(args):
    from .cache import ResultsCache

    return ResultsCache(cache_root(args))


def _results_folder(args):
    """The results folder the runs really go to (``--cache``, else $NCMSE_CACHE, else data/)."""
    import os as _os
    from pathlib import Path

    root = cache_root(args) if getattr(args, "cache", None) else None
    if root is None:
        shared = _os.environ.get("NCMSE_CACHE")
        root = Path(shared).expanduser() / "results" if shared else Path("data") / "results"
    return root


def _interrupted(args, how: str) -> str:
    """The line printed on Ctrl-C or SIGTERM, naming the folders the runs really went to."""
    root = _results_folder(args)
    return INTERRUPTED.format(how=how, results=root, checkpoints=root.parent / "checkpoints")


CANCELLED = ("[ncmse] {runs}; finished runs are cached under {results}; to train the cancelled ones, resuming from "
             "their checkpoints in {checkpoints} where they have one, run the same command again: {command}")


def _cancelled(args, exc, argv: list[str]) -> str:
    """The line printed when cluster jobs were cancelled (``ncmse.cluster.RunsCancelled``): the runs, by
    key and configuration, and the command that resumes them."""
    import shlex

    root = _results_folder(args)
    return CANCELLED.format(runs=" ".join(str(exc).split()), results=root, checkpoints=root.parent / "checkpoints",
                            command=shlex.join(["python", "-m", "ncmse", *argv]))


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's kill, ``timeout``), turned into the same clean exit as Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


class _Parser(argparse.ArgumentParser):
    """argparse with its errors in one line (``error: …``, then a pointer to ``--help``), no usage block."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _executor_options(p) -> None:
    from .executors import EXECUTORS

    g = p.add_argument_group("where runs train (ncmse.executors)")
    g.add_argument("--executor", choices=EXECUTORS, default="sequential",
                   help="sequential (default), local (--workers processes), slurm (a job array through submitit), "
                        "submitit-local / submitit-debug (submitit's local and in-process executors)")
    g.add_argument("--workers", type=positive_int, help="local: number of processes (default: the cores)")
    g.add_argument("--threads", type=thread_count,
                   help="threads of this process (sequential; default: all cores but one) or of each worker "
                        "(local; default: cores / workers)")
    g.add_argument("--partition", help="slurm: the partition")
    g.add_argument("--gpus-per-job", type=int, default=0, help="slurm: GPUs per job (default 0)")
    g.add_argument("--cpus-per-job", type=positive_int, default=1, help="slurm/submitit: CPUs (threads) per job")
    g.add_argument("--array-parallelism", type=positive_int, default=16, help="slurm: jobs running at once")
    g.add_argument("--timeout-min", type=positive_int, default=60,
                   help="slurm/submitit: minutes per job before it is requeued (it resumes from its checkpoint)")
    g.add_argument("--mem-gb", type=finite_float, help="slurm: memory per job")
    g.add_argument("--submitit-folder", help="slurm/submitit: folder for job scripts and logs (default: submitit "
                                             "beside the results: DIR/submitit of --cache DIR, else "
                                             "$NCMSE_CACHE/submitit, else data/submitit)")


def _executor(args):
    """The back end the command line asks for."""
    from .cluster import Submitit
    from .executors import Local, Sequential

    name = args.executor
    if name != "local" and args.workers:
        raise ValueError("--workers applies to --executor local only")
    if name not in ("local", "sequential") and args.threads:
        raise ValueError("--threads applies to --executor sequential or local; for Slurm use --cpus-per-job")
    if name == "sequential":
        return Sequential()
    if name == "local":
        return Local(workers=args.workers or os.cpu_count() or 1, threads=args.threads)
    if args.gpus_per_job < 0:
        raise ValueError(f"--gpus-per-job must be ≥ 0, got {args.gpus_per_job}")
    cluster = {"slurm": "slurm", "submitit-local": "local", "submitit-debug": "debug"}[name]
    executor = Submitit(cluster=cluster, folder=args.submitit_folder, partition=args.partition,
                    gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job, timeout_min=args.timeout_min,
                    array_parallelism=args.array_parallelism, mem_gb=args.mem_gb)
    executor.check()
    return executor


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m ncmse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    book = sub.add_parser("book", help="execute every chapter with papermill and build the HTML book")
    book.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE,
                      help=f"size of every chapter (default: {DEFAULT_PROFILE})")
    book.add_argument("--chapters", nargs="+", metavar="ENTRY",
                      help="execute only these _toc.yml entries (e.g. book/ufm_global_optimality); "
                           "the others reuse their last execution, which must have succeeded; the site is "
                           "built once every chapter has been executed (on a fresh clone add --no-build)")
    book.add_argument("--no-build", action="store_true", help="execute only; do not build the site")
    book.add_argument("--timeout", type=positive_int, default=3600, help="per-cell timeout in seconds")
    book.add_argument("--workers", type=positive_int, default=None,
                      help="train the deep-network runs in this many local processes (default: the machine's "
                           f"{os.cpu_count()} cores; 1: one after another in the chapter's kernel)")
    for name, helptext in (("train", "train one configuration (cached under data/results)"),
                           ("sweep", "train a sweep d × loss × seed at a profile, with a summary table")):
        many = "+" if name == "sweep" else None
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE, help="base configuration")
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
        p.add_argument("--loss", nargs=many, choices=("mse", "rmse", "ce"))
        p.add_argument("--d", nargs=many, type=positive_int, help="feature dimension(s)")
        p.add_argument("--seed", nargs=many, type=seed_value)
        p.add_argument("--dataset", help="mnist, fashion_mnist or cifar10")
        p.add_argument("--model", help="mlp, cnn or resnet18")
        p.add_argument("--epochs", type=epoch_count)
        p.add_argument("--nc-epochs", nargs="+", type=positive_int, metavar="EPOCH",
                       help="epochs at which NC is measured (the last epoch always is); default: the profile's, "
                            "trimmed to --epochs")
        p.add_argument("--n-per-class", type=positive_int)
        for opt, what in (("--lr", "learning rate"), ("--weight-decay", "weight decay"),
                          ("--alpha", "rescaled MSE: weight α of the true class (with --loss rmse)"),
                          ("--M", "rescaled MSE: target M of the true class (with --loss rmse)")):
            p.add_argument(opt, type=finite_float, help=what)
        p.add_argument("--linear-features", action="store_true", help="no ReLU on the feature layer")
        p.add_argument("--precision", choices=PRECISIONS, help="fp32, or bf16: training steps under bfloat16 autocast")
        p.add_argument("--data-root", help="dataset folder (default: $NCMSE_DATA_ROOT, else data/)")
        p.add_argument("--cache", metavar="DIR", help=CACHE_HELP)
        _executor_options(p)
        p.add_argument("--quiet", action="store_true", help="no progress bars")
    st = sub.add_parser("study", help="train every run of a chapter's study ('Deep networks', 'CIFAR-10') at a profile "
                                      "into the results cache (on a GPU box, say), so that building the chapter "
                                      "trains nothing")
    st.add_argument("--profile", choices=STUDY_PROFILES, default=DEFAULT_PROFILE,
                    help=f"one of the book's profiles, or {GPU_PROFILE!r} (study cifar10 only: the paper's network "
                         "and data on a schedule for one GPU)")
    st.add_argument("--study", choices=STUDIES, default="deep",
                    help="deep: the chapter 'Deep networks' (default); cifar10: the chapter 'CIFAR-10'")
    st.add_argument("--export", nargs="?", const="", metavar="DIR",
                    help="then copy the study's runs, with their provenance, into the tracked archive that the "
                         "chapter shows (default DIR: data/trained; files go to DIR/<study>/)")
    st.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
    st.add_argument("--data-root", help="dataset folder (default: $NCMSE_DATA_ROOT, else data/)")
    st.add_argument("--cache", metavar="DIR", help=CACHE_HELP)
    _executor_options(st)
    st.add_argument("--quiet", action="store_true", help="no progress bars")
    rs = sub.add_parser("results", help="every cached run as one row of a table (CSV on stdout, or --csv/--parquet "
                                        "FILE); --history: one row per run and epoch (ncmse.results)")
    rs.add_argument("--profile", choices=STUDY_PROFILES, default=None,
                    help="only the runs of this profile (default: all)")
    rs.add_argument("--history", action="store_true", help="one row per (run, epoch) of the NC curves instead")
    out = rs.add_mutually_exclusive_group()
    out.add_argument("--csv", metavar="FILE", help="write a CSV file (default: CSV on stdout)")
    out.add_argument("--parquet", metavar="FILE", help="write a Parquet file (pyarrow)")
    rs.add_argument("--cache", metavar="DIR", help=CACHE_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failed, 2 bad input, 130/143 interrupted; 143
    also when cluster jobs were cancelled, with one line naming their runs and the command that resumes them).

    Bad input — an unknown profile, dataset or device, a non-finite rate, a missing or damaged data
    file — ends with one line ``error: …`` on stderr and status 2 (``NCMSE_DEBUG=1`` shows the
    traceback instead).  Ctrl-C and SIGTERM end with one line saying how to resume."""
    args = _parser().parse_args(argv)
    from . import threads

    # this process's thread budget, before torch starts its pools (ncmse.threads)
    threads.use_budget(args.threads if getattr(args, "executor", "sequential") == "sequential"
                      and getattr(args, "threads", None) else None)
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if args.command != "book" else None
    try:
        if args.command == "study":
            return _study(args)
        if args.command == "results":
            return _results(args)
        if args.command in ("train", "sweep"):
            return _train_or_sweep(args)
        from .runner import run

        return run(args.profile, chapters=args.chapters, build=not args.no_build, timeout=args.timeout,
                   workers=args.workers)
    except KeyboardInterrupt as exc:
        how = " (SIGTERM)" if isinstance(exc, _Terminated) else ""
        print("\n" + _interrupted(args, how), file=sys.stderr)
        return 143 if isinstance(exc, _Terminated) else 130
    except RuntimeError as exc:
        from .cluster import RunsCancelled

        if not isinstance(exc, RunsCancelled) or os.environ.get("NCMSE_DEBUG"):
            raise
        print(_cancelled(args, exc, sys.argv[1:] if argv is None else list(argv)), file=sys.stderr)
        return 143
    except (ValueError, OSError) as exc:
        if os.environ.get("NCMSE_DEBUG"):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _study(args) -> int:
    from .study import run_study

    check_places(args)
    cache, on_done = _cache(args), None
    if args.export is not None:             # resume from the archive; export each run as it finishes
        from . import archive

        restored = archive.restore(args.study, cache, data_root=args.data_root, root=args.export or None)
        if restored:
            print(f"[ncmse] {restored} runs of the archive {archive.folder(args.study, args.export or None)} are "
                  "valid for this code and data: not trained again")
        on_done = archive.exporter(args.study, cache, args.export or None)
    with data_needed(args), writable_cache(cache):
        results = run_study(args.profile, study=args.study, device=args.device, progress=not args.quiet,
                            data_root=args.data_root, cache=cache, executor=_executor(args), on_done=on_done)
    trained = sum(not r["cached"] for r in results.unique_runs)
    diverged = sum(bool(r.get("diverged")) for r in results.unique_runs)
    print(f"[ncmse] study '{args.study}' at profile '{args.profile}': {len(results.unique_runs)} runs after tuning, "
          f"{trained} trained now, {diverged} diverged; the rescaled MSE of the d-sweep is {results.rmse.label}")
    if args.export is not None:
        where = archive.folder(args.study, args.export or None)
        print(f"[ncmse] every run of the study (tuning runs included) is exported to {where}; commit it to show "
              "the runs in the book")
    return 0


def _results(args) -> int:
    from .results import history_frame, runs_frame, write_frame

    target = args.csv or args.parquet
    check_cache_folder(args)
    if target is not None:
        check_path(target, "--csv" if args.csv else "--parquet")
    cache = _cache(args)
    if args.cache and not cache.root.is_dir():
        raise FileNotFoundError(f"--cache {args.cache}: no results folder {cache.root}")
    frame = (history_frame if args.history else runs_frame)(cache, args.profile)
    if target is None:
        sys.stdout.write(frame.to_csv(index=False))
        return 0
    path = write_frame(frame, target, format="parquet" if args.parquet else "csv")
    what = "rows of (run, epoch)" if args.history else "runs"
    print(f"[ncmse] {len(frame)} {what} from {cache.root} written to {path}", file=sys.stderr)
    return 0


def _train_or_sweep(args) -> int:
    from .executors import sweep
    from .plotting import markdown_table
    from .profiles import profile_config

    changes = {k: v for k, v in (("dataset", args.dataset), ("model", args.model), ("epochs", args.epochs),
                                 ("lr", args.lr), ("weight_decay", args.weight_decay),
                                 ("n_per_class", args.n_per_class), ("precision", args.precision)) if v is not None}
    if args.linear_features:
        changes["feature_relu"] = False
    profile_nc = profile_config(args.profile).nc_epochs
    if args.nc_epochs is not None:
        changes["nc_epochs"] = tuple(args.nc_epochs)
    elif args.epochs is not None and any(e > args.epochs for e in profile_nc):
        changes["nc_epochs"] = tuple(e for e in profile_nc if e <= args.epochs)
        print(f"[ncmse] NC is measured at epochs {', '.join(map(str, changes['nc_epochs'] + (args.epochs,)))} "
              f"(the profile's {', '.join(map(str, profile_nc))}, trimmed to --epochs {args.epochs})")
    executor = _executor(args)
    as_list = (lambda v: v or ()) if args.command == "sweep" else (lambda v: () if v is None else (v,))
    base = profile_config(args.profile, **changes)
    configs = sweep_configs(base, ds=as_list(args.d), losses=as_list(args.loss), seeds=as_list(args.seed),
                            alpha=args.alpha, M=args.M)
    check_places(args)
    for c in configs:
        check_memory(c)
    print(f"[ncmse] {len(configs)} run(s) at profile '{args.profile}' (cached runs are not retrained)")
    cache = _cache(args)
    with data_needed(args), writable_cache(cache):
        results = sweep(configs, device=args.device, progress=not args.quiet, data_root=args.data_root, cache=cache,
                        executor=executor)
    print(markdown_table(summary_rows(results), list(SUMMARY_COLUMNS)))
    from .cache import describe_run

    for r in results:                      # valid input, but worth a line: a run that learned nothing
        K = len(r.get("classes") or ()) or 10
        n = K * (r["config"].get("test_per_class") or r["config"].get("holdout_per_class") or 1000)  # test images
        chance = 1.0 / K + 3 * math.sqrt((1.0 / K) * (1 - 1.0 / K) / n)      # 3 binomial standard deviations
        if not r.get("diverged") and r["test"]["accuracy"] <= chance:
            print(f"[ncmse] note: {describe_run(r['config'])} ended no better than chance (test accuracy "
                  f"{r['test']['accuracy']:.3f}, K = {K}): the learning rate may be far too small or too large"
                  + _also_set(args, "--alpha", "--M"))
    diverged = sum(bool(r.get("diverged")) for r in results)
    if diverged:
        print(f"[ncmse] {diverged} of {len(results)} run(s) diverged (the loss stopped being finite): "
              "try a smaller --lr" + _also_set(args, "--weight-decay", "--alpha", "--M"))
    return 0


def _also_set(args, *options: str) -> str:
    """' (or --alpha, --M, which this command sets)' for the options among ``options`` that the command
    line gave: advice on a failed run names them beside the learning rate."""
    given = [o for o in options if getattr(args, o.lstrip("-").replace("-", "_"), None) is not None]
    return f" (or {', '.join(given)}, which this command sets)" if given else ""


# ------------------------------------------------------------------ helpers of the sweep command

def sweep_configs(base: RunConfig, *, ds=(), losses=(), seeds=(), alpha: float | None = None,
                  M: float | None = None, extra: dict | None = None) -> list[RunConfig]:
    """The product d × loss × seed around ``base`` (empty axes keep the base value).  ``alpha`` and ``M``
    set the rescaling of the ``rmse`` runs (the others are plain MSE or CE, α = M = 1); giving them
    without an ``rmse`` run is an error."""
    losses = tuple(losses) or (base.loss,)
    if (alpha is not None or M is not None) and "rmse" not in losses:
        raise ValueError("alpha and M apply to loss 'rmse' only; add rmse to the losses")
    out = []
    for d in ds or (base.d,):
        for loss in losses:
            if loss == "rmse":
                scale = {"alpha": base.alpha if alpha is None else alpha, "M": base.M if M is None else M}
            else:
                scale = {"alpha": 1.0, "M": 1.0}
            for seed in seeds or (base.seed,):
                out.append(base.replace(d=d, loss=loss, seed=seed, **scale, **(extra or {})))
    return out


#: the columns of :func:`summary_rows`
SUMMARY_COLUMNS = ("dataset", "model", "d", "loss", "seed", "train acc", "test acc", "NC1", "live units",
                   "seconds", "cached")


def summary_rows(results: list[dict]) -> list[tuple]:
    """One row per result for a table (:data:`SUMMARY_COLUMNS`); a diverged run reads "diverged" in its
    accuracy columns."""
    from .variants import loss_label

    rows = []
    for r in results:
        c = r["config"]
        loss = loss_label(c)
        if r.get("diverged"):
            metrics = ("diverged", "diverged", "—", "—")
        else:
            metrics = (f"{r['train']['accuracy']:.4f}", f"{r['test']['accuracy']:.4f}", f"{r['train']['NC1']:.3g}",
                       r["train"]["live_units"])
        rows.append((c["dataset"], c["model"], c["d"], loss, c["seed"], *metrics,
                     f"{r['provenance']['wall_seconds']:.1f}", r.get("cached", False)))
    return rows


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m ncmse book [--profile cpu] [--chapters …] [--no-build]``; ``train``, ``sweep``
and ``study`` (every run of the chapter "Deep networks", or with ``--study cifar10`` of the chapter
"CIFAR-10"; ``--export`` copies them into the tracked archive ``data/trained``) fill the results cache;
``results`` writes it as one tidy table (``ncmse.results``)."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .profiles import DEFAULT_PROFILE, GPU_PROFILE, PRECISIONS, PROFILES, STUDIES, STUDY_PROFILES

if TYPE_CHECKING:
    from .config import RunConfig

INTERRUPTED = ("[ncmse] interrupted{how}: finished runs are cached under {results}; the run in progress "
               "resumes from its checkpoint in {checkpoints} when the same command runs again")


CACHE_HELP = ("folder of the results cache, shared by every process and job that uses it: results in DIR/results, "
              "checkpoints in DIR/checkpoints (default: $NCMSE_CACHE, else data/)")


def _cache_root(args):
    """The results folder that ``--cache`` names (None: the default, $NCMSE_CACHE or data/); an empty
    ``--cache`` is refused rather than read as the default."""
    from pathlib import Path

    if getattr(args, "cache", None) is None:
        return None
    if not args.cache.strip():
        raise ValueError("--cache needs a folder (leave it out for $NCMSE_CACHE, else data/)")
    return Path(args.cache).expanduser() / "results"


def _cache(args):
    from .cache import ResultsCache

    return ResultsCache(_cache_root(args))


def _results_folder(args):
    """The results folder the runs really go to (``--cache``, else $NCMSE_CACHE, else data/)."""
    import os as _os
    from pathlib import Path

    root = _cache_root(args) if getattr(args, "cache", None) else None
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
    """The line printed when cluster jobs were cancelled (``ncmse.executors.RunsCancelled``): the runs, by
    key and configuration, and the command that resumes them."""
    import shlex

    root = _results_folder(args)
    return CANCELLED.format(runs=" ".join(str(exc).split()), results=root, checkpoints=root.parent / "checkpoints",
                            command=shlex.join(["python", "-m", "ncmse", *argv]))


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's kill, ``timeout``), turned into the same clean exit as Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _threads(text: str) -> int:
    """A thread count: positive, and at most 4 × the machine's cores (more only makes threads wait)."""
    v = _positive_int(text)
    most = 4 * (os.cpu_count() or 1)
    if v > most:
        raise argparse.ArgumentTypeError(f"at most {most} (4 × this machine's {os.cpu_count()} cores), got {v}")
    return v


MAX_SEED = 2**63 - 1      # torch.manual_seed takes a signed 64-bit integer


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed lies in [0, 2**63 − 1], got {v}")
    return v


MAX_EPOCHS = 100_000     # the book's longest schedule has 200 epochs; 2**63 of them would never end


def _epochs(text: str) -> int:
    v = _positive_int(text)
    if v > MAX_EPOCHS:
        raise argparse.ArgumentTypeError(f"at most {MAX_EPOCHS:,} epochs (the book's longest schedule has 200), "
                                         f"got {v}")
    return v


def _finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


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
    g.add_argument("--workers", type=_positive_int, help="local: number of processes (default: the cores)")
    g.add_argument("--threads", type=_threads,
                   help="threads of this process (sequential; default: all cores but one) or of each worker "
                        "(local; default: cores / workers)")
    g.add_argument("--partition", help="slurm: the partition")
    g.add_argument("--gpus-per-job", type=int, default=0, help="slurm: GPUs per job (default 0)")
    g.add_argument("--cpus-per-job", type=_positive_int, default=1, help="slurm/submitit: CPUs (threads) per job")
    g.add_argument("--array-parallelism", type=_positive_int, default=16, help="slurm: jobs running at once")
    g.add_argument("--timeout-min", type=_positive_int, default=60,
                   help="slurm/submitit: minutes per job before it is requeued (it resumes from its checkpoint)")
    g.add_argument("--mem-gb", type=_finite_float, help="slurm: memory per job")
    g.add_argument("--submitit-folder", help="slurm/submitit: folder for job scripts and logs (default: submitit "
                                             "beside the results: DIR/submitit of --cache DIR, else "
                                             "$NCMSE_CACHE/submitit, else data/submitit)")


def _executor(args):
    """The back end the command line asks for."""
    from .executors import Local, Sequential, Submitit

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
    book.add_argument("--timeout", type=_positive_int, default=3600, help="per-cell timeout in seconds")
    book.add_argument("--workers", type=_positive_int, default=None,
                      help="train the deep-network runs in this many local processes (default: the machine's "
                           f"{os.cpu_count()} cores; 1: one after another in the chapter's kernel)")
    for name, helptext in (("train", "train one configuration (cached under data/results)"),
                           ("sweep", "train a sweep d × loss × seed at a profile, with a summary table")):
        many = "+" if name == "sweep" else None
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--profile", choices=PROFILES, default=DEFAULT_PROFILE, help="base configuration")
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
        p.add_argument("--loss", nargs=many, choices=("mse", "rmse", "ce"))
        p.add_argument("--d", nargs=many, type=_positive_int, help="feature dimension(s)")
        p.add_argument("--seed", nargs=many, type=_seed)
        p.add_argument("--dataset", help="mnist, fashion_mnist or cifar10")
        p.add_argument("--model", help="mlp, cnn or resnet18")
        p.add_argument("--epochs", type=_epochs)
        p.add_argument("--nc-epochs", nargs="+", type=_positive_int, metavar="EPOCH",
                       help="epochs at which NC is measured (the last epoch always is); default: the profile's, "
                            "trimmed to --epochs")
        p.add_argument("--n-per-class", type=_positive_int)
        for opt, what in (("--lr", "learning rate"), ("--weight-decay", "weight decay"),
                          ("--alpha", "rescaled MSE: weight α of the true class (with --loss rmse)"),
                          ("--M", "rescaled MSE: target M of the true class (with --loss rmse)")):
            p.add_argument(opt, type=_finite_float, help=what)
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
        from .executors import RunsCancelled

        if not isinstance(exc, RunsCancelled) or os.environ.get("NCMSE_DEBUG"):
            raise
        print(_cancelled(args, exc, sys.argv[1:] if argv is None else list(argv)), file=sys.stderr)
        return 143
    except (ValueError, OSError) as exc:
        if os.environ.get("NCMSE_DEBUG"):
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _check_places(args) -> None:
    """Refuse a device this machine lacks and a data root that is not a folder, before any work."""
    from pathlib import Path

    from .data import data_root
    from .train import resolve_device

    resolve_device(args.device)
    _check_cache_folder(args)
    if args.data_root is not None:
        _check_path(args.data_root, "--data-root")
    if args.data_root is not None and not Path(args.data_root).expanduser().is_dir():
        raise FileNotFoundError(f"--data-root {args.data_root} is not a folder; give a folder laid out like "
                                "torchvision's roots (MNIST/raw, FashionMNIST/raw, cifar-10-batches-py, …)")
    data_root(args.data_root)                 # a $NCMSE_DATA_ROOT that is not a folder


# the width of the layer that feeds the d-dimensional feature layer, per model (ncmse.models)
_FEATURE_INPUT = {"mlp": 256, "cnn": 64 * 8 * 8, "resnet18": 512}


def _check_memory(config) -> None:
    """Refuse, before any work, a feature dimension whose feature layer alone (its weights, their
    gradients and the optimizer's momentum, float32) would not fit in this machine's memory."""
    need = 4 * 3 * config.d * (_FEATURE_INPUT.get(config.model, 1) + 10 + 1)
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise ValueError(f"--d {config.d} would need at least {need / 2**30:,.0f} GiB for the {config.model}'s feature "
                         f"layer alone; this machine has {have / 2**30:,.0f} GiB")


def _study(args) -> int:
    from .study import run_study

    _check_places(args)
    cache, on_done = _cache(args), None
    if args.export is not None:             # resume from the archive; export each run as it finishes
        from . import archive

        restored = archive.restore(args.study, cache, data_root=args.data_root, root=args.export or None)
        if restored:
            print(f"[ncmse] {restored} runs of the archive {archive.folder(args.study, args.export or None)} are "
                  "valid for this code and data: not trained again")
        on_done = archive.exporter(args.study, cache, args.export or None)
    with _data_needed(args), _writable_cache(cache):
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
    _check_cache_folder(args)
    if target is not None:
        _check_path(target, "--csv" if args.csv else "--parquet")
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
    _check_places(args)
    for c in configs:
        _check_memory(c)
    print(f"[ncmse] {len(configs)} run(s) at profile '{args.profile}' (cached runs are not retrained)")
    cache = _cache(args)
    with _data_needed(args), _writable_cache(cache):
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





# ------------------------------------------------------------------ odd places, missing data, read-only caches

#: room for what the cache keeps below its folder (results/.locks/<key>.lock, checkpoints/<key>.pt, a write's
#: temporary file results/.<key>.json.<random>.tmp: 40 bytes at most)
_BELOW_CACHE = 64


def _short(text, keep: int = 48) -> str:
    """``text`` for a one-line message: whole where short, else its start and end around '…'."""
    text = str(text)
    return text if len(text) <= 2 * keep + 1 else f"{text[:keep]}…{text[-keep:]}"


def _one_line(exc: BaseException) -> str:
    """The error line of ``exc``: a path too long for the file system said so, and any very long word
    (a path of thousands of characters) shortened, so that the line stays readable."""
    import errno
    import re

    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        return f"a path is too long for this file system ({exc.strerror}): {_short(exc.filename)}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return re.sub(r"\S{160,}", lambda m: _short(m.group(0)), text)


def _path_limits(path) -> tuple[int, int]:
    """(PATH_MAX, NAME_MAX) of the file system that holds ``path`` (its nearest existing folder)."""
    from pathlib import Path

    probe = Path(path)
    while probe != probe.parent:
        try:
            if probe.is_dir():
                break
        except OSError:                      # e.g. a name too long to look up
            pass
        probe = probe.parent
    try:
        return os.pathconf(probe, "PC_PATH_MAX"), os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 4096, 255


def _check_path(path, option: str, *, below: int = 0) -> None:
    """Refuse up front, in one line, a path that this file system cannot hold — longer than PATH_MAX
    (less ``below`` bytes for what will be kept below it) or with a name longer than NAME_MAX — and one
    that runs through a symbolic link to nothing or a loop of links.  A real folder reached through a
    symbolic link is fine."""
    from pathlib import Path

    p = Path(path).expanduser().absolute()
    path_max, name_max = _path_limits(p)
    size = len(os.fsencode(str(p)))
    if size + below >= path_max:
        room = f"the files kept below it need {below} more, and " if below else ""
        raise ValueError(f"{option} {_short(p)} is {size:,} bytes long; {room}this file system takes paths of at most "
                         f"{path_max - 1:,} bytes: give a shorter one")
    for part in p.parts:
        if len(os.fsencode(part)) > name_max:
            raise ValueError(f"{option}: the name {_short(part, 24)} is {len(os.fsencode(part)):,} bytes long; this "
                             f"file system takes names of at most {name_max} bytes: give a shorter one")
    prefix = Path(p.anchor)
    for part in p.parts[1:]:
        prefix = prefix / part
        if not os.path.lexists(prefix):
            break                                   # the rest is created as needed
        if prefix.is_symlink():
            try:
                prefix.resolve(strict=True)
            except FileNotFoundError:
                raise FileNotFoundError(f"{option} {_short(p)}: {prefix} is a symbolic link to {os.readlink(prefix)}, "
                                        "which does not exist; create it, or give another folder") from None
            except (RuntimeError, OSError):         # a loop of links (RuntimeError before Python 3.13)
                raise ValueError(f"{option} {_short(p)}: {prefix} is a symbolic link that leads back to itself; "
                                 "give another folder") from None


def _check_cache_folder(args) -> None:
    """:func:`_check_path` on the cache folder (``--cache``, else $NCMSE_CACHE) and its results and
    checkpoints folders, before any work."""
    root = _cache_root(args)
    if root is None and os.environ.get("NCMSE_CACHE", "").strip():
        from pathlib import Path

        root, option = Path(os.environ["NCMSE_CACHE"]).expanduser() / "results", "NCMSE_CACHE"
    else:
        option = "--cache"
    if root is not None:
        _check_path(root.parent, option, below=_BELOW_CACHE)
        for folder in (root, root.parent / "checkpoints"):
            _check_path(folder, option)


def _also_set(args, *options: str) -> str:
    """' (or --alpha, --M, which this command sets)' for the options among ``options`` that the command
    line gave: advice on a failed run names them beside the learning rate."""
    given = [o for o in options if getattr(args, o.lstrip("-").replace("-", "_"), None) is not None]
    return f" (or {', '.join(given)}, which this command sets)" if given else ""


# ncmse.data's message where a dataset is neither present nor downloadable (worded for the Python API)
_MISSING_DATA = (r"(?P<what>MNIST|Fashion-MNIST|CIFAR-10) not found under .+? \(expected .+?\)\."
                 r"(?: The download failed \((?P<failure>.+?)\)\.)?.*?To fix:")


def _remove_new_empty_folders(before: dict) -> None:
    """Remove the folders created since ``before`` (folder → its entries then) that hold no file: what a
    failed download leaves (torchvision creates ``<Name>/raw`` before it tries)."""
    for folder, names in before.items():
        if names is None or not folder.is_dir():
            continue
        for name in set(os.listdir(folder)) - names:
            new = folder / name
            if new.is_symlink() or not new.is_dir():
                continue
            for dirpath, _, _ in os.walk(new, topdown=False):
                try:
                    os.rmdir(dirpath)                # only empty folders go
                except OSError:
                    pass


@contextmanager
def _data_needed(args):
    """Around training: a dataset that is neither in the data folder nor downloadable ends in one line in
    the command line's terms (its options and variables, not the Python API's arguments), and the empty
    folders that the failed download created are removed."""
    import re

    from .cache import ROOT
    from .data import data_root

    base, repo_data = data_root(args.data_root), ROOT / "data"
    before = {f: (set(os.listdir(f)) if f.is_dir() else None) for f in {base, repo_data}}
    try:
        yield
    except FileNotFoundError as exc:
        found = re.match(_MISSING_DATA, " ".join(str(exc).split()))
        if found is None:
            raise
        _remove_new_empty_folders(before)
        what, failure = found["what"], found["failure"]
        env = os.environ.get("NCMSE_DATA_ROOT")
        if args.data_root is not None:
            where, target = f"is not in --data-root {base}", base
        elif env:
            where, target = f"is neither in NCMSE_DATA_ROOT={env} (only read) nor in {repo_data}", repo_data
        else:
            where, target = f"is not in {base}", base
        expected = {"MNIST": "the four idx files in MNIST/raw", "Fashion-MNIST": "the four idx files in "
                    "FashionMNIST/raw"}.get(what, "cifar-10-batches-py, or an image-folder copy or its tarball "
                                                  "cifar10-jpeg/*.tar.gz")
        tried = f"; downloading it into {target} failed ({_short(failure, 80)})" if failure else ""
        raise FileNotFoundError(
            f"{what} {where} (expected {expected}){tried}. To fix: run the same command with network "
            f"access (it downloads into {target}), or give --data-root DIR (or set NCMSE_DATA_ROOT=DIR) for a folder "
            "that holds it, laid out like torchvision's roots (data/README.md names offline copies)") from None


@contextmanager
def _writable_cache(cache):
    """Around training: a cache that cannot be written to (a read-only file system, no permission) is
    still read — its runs are served — but a run it lacks ends in one line that says so."""
    import errno

    try:
        yield
    except OSError as exc:
        folder = cache.root.parent.absolute()
        name = getattr(exc, "filename", None)
        inside = name is not None and os.path.abspath(name).startswith(str(folder) + os.sep)
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM) or not inside:
            raise
        raise OSError(f"the cache {folder} cannot be written to ({exc.strerror}: {_short(name)}): the runs it holds "
                      "are read from it, but a run it lacks cannot be trained there; give a writable --cache DIR "
                      "(a copy of this folder keeps its runs)") from None


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

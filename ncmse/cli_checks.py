"""The command line's input checks (``python -m ncmse``): bad input ends before any work, in one line
``error: …`` in the command line's own terms (its options and variables).

* argument types for argparse: :func:`positive_int`, :func:`thread_count`, :func:`seed_value`,
  :func:`epoch_count`, :func:`finite_float` (a value outside its range is refused as the option is read);
* the places a command works in, checked up front: the device, the data folder, the cache folder
  (:func:`cache_root`, :func:`check_path`, :func:`check_cache_folder`, :func:`check_places`), and a
  feature layer too large for this machine's memory (:func:`check_memory`);
* guards around training: a dataset neither present nor downloadable (:func:`data_needed`), a cache
  that cannot be written to (:func:`writable_cache`);
* :func:`one_line`: the error line of an exception, with overlong paths shortened.
"""

from __future__ import annotations

import argparse
import math
import os
from contextlib import contextmanager

__all__ = ["positive_int", "thread_count", "seed_value", "epoch_count", "finite_float", "MAX_SEED", "MAX_EPOCHS",
           "cache_root", "check_path", "check_cache_folder", "check_places", "check_memory", "data_needed",
           "writable_cache", "one_line"]


# ------------------------------------------------------------------ argument types

def positive_int(text: str) -> int:
    """A positive integer (a count of runs, workers, epochs, seconds …)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def thread_count(text: str) -> int:
    """A thread count: positive, and at most 4 × the machine's cores (more only makes threads wait)."""
    v = positive_int(text)
    most = 4 * (os.cpu_count() or 1)
    if v > most:
        raise argparse.ArgumentTypeError(f"at most {most} (4 × this machine's {os.cpu_count()} cores), got {v}")
    return v


#: the largest seed: torch.manual_seed takes a signed 64-bit integer
MAX_SEED = 2**63 - 1


def seed_value(text: str) -> int:
    """A seed: an integer in [0, :data:`MAX_SEED`]."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed lies in [0, 2**63 − 1], got {v}")
    return v


#: the most epochs a run may ask for: the book's longest schedule has 200; 2**63 of them would never end
MAX_EPOCHS = 100_000


def epoch_count(text: str) -> int:
    """A number of epochs: positive, at most :data:`MAX_EPOCHS`."""
    v = positive_int(text)
    if v > MAX_EPOCHS:
        raise argparse.ArgumentTypeError(f"at most {MAX_EPOCHS:,} epochs (the book's longest schedule has 200), "
                                         f"got {v}")
    return v


def finite_float(text: str) -> float:
    """A finite number (a rate, a weight decay, α, M, a memory size): NaN and infinities are refused."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


# ------------------------------------------------------------------ the places a command works in

#: room for what the cache keeps below its folder (results/.locks/<key>.lock, checkpoints/<key>.pt, a write's
#: temporary file results/.<key>.json.<random>.tmp: 40 bytes at most)
_BELOW_CACHE = 64


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


def check_path(path, option: str, *, below: int = 0) -> None:
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


def cache_root(args):
    """The results folder that ``--cache`` names (None: the default, $NCMSE_CACHE or data/); an empty
    ``--cache`` is refused rather than read as the default."""
    from pathlib import Path

    if getattr(args, "cache", None) is None:
        return None
    if not args.cache.strip():
        raise ValueError("--cache needs a folder (leave it out for $NCMSE_CACHE, else data/)")
    return Path(args.cache).expanduser() / "results"


def check_cache_folder(args) -> None:
    """:func:`check_path` on the cache folder (``--cache``, else $NCMSE_CACHE) and its results and
    checkpoints folders, before any work."""
    root = cache_root(args)
    if root is None and os.environ.get("NCMSE_CACHE", "").strip():
        from pathlib import Path

        root, option = Path(os.environ["NCMSE_CACHE"]).expanduser() / "results", "NCMSE_CACHE"
    else:
        option = "--cache"
    if root is not None:
        check_path(root.parent, option, below=_BELOW_CACHE)
        for folder in (root, root.parent / "checkpoints"):
            check_path(folder, option)


def check_places(args) -> None:
    """Refuse a device this machine lacks and a data root that is not a folder, before any work."""
    from pathlib import Path

    from .data import data_root
    from .train import resolve_device

    resolve_device(args.device)
    check_cache_folder(args)
    if args.data_root is not None:
        check_path(args.data_root, "--data-root")
    if args.data_root is not None and not Path(args.data_root).expanduser().is_dir():
        raise FileNotFoundError(f"--data-root {args.data_root} is not a folder; give a folder laid out like "
                                "torchvision's roots (MNIST/raw, FashionMNIST/raw, cifar-10-batches-py, …)")
    data_root(args.data_root)                 # a $NCMSE_DATA_ROOT that is not a folder


# the width of the layer that feeds the d-dimensional feature layer, per model (ncmse.models)
_FEATURE_INPUT = {"mlp": 256, "cnn": 64 * 8 * 8, "resnet18": 512}


def check_memory(config) -> None:
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


# ------------------------------------------------------------------ missing data, read-only caches

@contextmanager
def data_needed(args):
    """Around training: a dataset that is neither in the data folder nor downloadable
    (:class:`ncmse.data.DataMissing`, which has already removed the empty folders a failed download
    left) ends in one line in the command line's terms: its options and variables, not the Python API's
    arguments."""
    from .data import DataMissing

    try:
        yield
    except DataMissing as exc:
        env = os.environ.get("NCMSE_DATA_ROOT")
        target = exc.target or exc.root
        if args.data_root is not None:
            where = f"is not in --data-root {exc.root}"
        elif env:
            where = f"is neither in NCMSE_DATA_ROOT={env} (only read) nor in {target}"
        else:
            where = f"is not in {exc.root}"
        tried = f"; downloading it into {target} failed ({_short(exc.failure, 80)})" if exc.failure else ""
        raise FileNotFoundError(
            f"{exc.what} {where} (expected {exc.expected}){tried}. To fix: run the same command with network "
            f"access (it downloads into {target}), or give --data-root DIR (or set NCMSE_DATA_ROOT=DIR) for a folder "
            "that holds it, laid out like torchvision's roots (data/README.md names offline copies)") from None


@contextmanager
def writable_cache(cache):
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


# ------------------------------------------------------------------ the error line

def _short(text, keep: int = 48) -> str:
    """``text`` for a one-line message: whole where short, else its start and end around '…'."""
    text = str(text)
    return text if len(text) <= 2 * keep + 1 else f"{text[:keep]}…{text[-keep:]}"


def one_line(exc: BaseException) -> str:
    """The error line of ``exc``: a path too long for the file system said so, and any very long word
    (a path of thousands of characters) shortened, so that the line stays readable."""
    import errno
    import re

    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        return f"a path is too long for this file system ({exc.strerror}): {_short(exc.filename)}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return re.sub(r"\S{160,}", lambda m: _short(m.group(0)), text)

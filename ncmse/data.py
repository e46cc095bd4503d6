"""Datasets as tensors: MNIST, Fashion-MNIST and CIFAR-10 held whole in memory.

The deep-network experiments (chapter "Deep networks") train on small images that fit in memory many times
over, so a dataset here is two tensors, images ``x`` (N, C, H, W) uint8 and labels ``y`` (N,) int64
(:class:`Tensors`); ``ncmse.loader`` draws balanced subsets of them and cuts mini-batches out of them.

Where the data come from (:func:`data_root`): the ``root`` argument, else the environment variable
``NCMSE_DATA_ROOT``, else ``<repo>/data``.

* MNIST and Fashion-MNIST through ``torchvision.datasets``: the idx files in ``<root>/MNIST/raw`` and
  ``<root>/FashionMNIST/raw`` are read where present, downloaded (``download=True``) where not.
* CIFAR-10 through ``torchvision.datasets.CIFAR10`` (the md5-checked python batches in
  ``<root>/cifar-10-batches-py``, downloaded when allowed); where those are absent and cannot be
  downloaded, an image-folder copy ``<dir>/{train,test}/<class>/*.{jpg,png}`` found under the root or
  the tarball ``<root>/cifar10-jpeg/*.tar.gz`` of such a copy (the offline copy of data/README.md).  Each
  split is decoded once, straight from the folder or the archive (nothing is extracted), into the cache
  ``<cache>/cifar10-jpeg/<split>.pt`` in a writable folder, so later loads take a second.
  The JPEG copy is lossy, so its :attr:`Tensors.source` is ``"CIFAR-10 (JPEG copy)"`` and results on
  it must carry that label.

A dataset file that is present but damaged (a truncated idx file, a CIFAR-10 batch that fails its md5
check, an unreadable tarball) raises :class:`DataFileError`, one line naming the file and the fix; only
absent files lead to a download or to the next copy in line, and data found nowhere raise
:class:`DataMissing`.  A torn decoded cache is moved aside to the first free name of
``<split>.pt.corrupt``, ``<split>.pt.corrupt.1``, … with a warning and decoded again.
:func:`describe_source` names, from file names and sizes alone, the copy that :func:`load_dataset` would read.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.error import URLError

import numpy as np
import torch

from . import paths
from .files import atomic_torch_save, quarantine

__all__ = ["DATASETS", "SPLITS", "Tensors", "DataFileError", "DataMissing", "data_root", "load_dataset",
           "describe_source"]

DATASETS = ("mnist", "fashion_mnist", "cifar10")
SPLITS = ("train", "test")

_CIFAR_BATCHES = "cifar-10-batches-py"         # torchvision.datasets.CIFAR10.base_folder
_JPEG_FOLDER = "cifar10-jpeg"                  # name of the image-folder copy under the root and the cache
_JPEG_SOURCE = "CIFAR-10 (JPEG copy)"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_CACHE_FORMAT = "ncmse.data image folder v1"
_DECODE_CHUNK = 1024
_MNIST_FILES = {                               # idx file: (magic number, dims)
    "train-images-idx3-ubyte": (0x00000803, (60_000, 28, 28)),
    "train-labels-idx1-ubyte": (0x00000801, (60_000,)),
    "t10k-images-idx3-ubyte": (0x00000803, (10_000, 28, 28)),
    "t10k-labels-idx1-ubyte": (0x00000801, (10_000,)),
}
_FIX_DOWNLOAD = ("delete it and run again with network access to download it again, "
                 "or point NCMSE_DATA_ROOT at a good copy")
_CACHE_ERRORS = (EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, KeyError, IndexError,
                 ValueError, TypeError, AttributeError, OSError)

log = logging.getLogger("ncmse.data")


class DataFileError(OSError):
    """A dataset file that exists but is damaged or is not what its name says.

    The message is one line: the file's path, what is wrong with it, and the fix.  ``path`` is the
    file (or folder) at fault.  Raised instead of a download or a fallback to another copy, which only
    absent files lead to.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.path = None if path is None else Path(path)


class DataMissing(FileNotFoundError):
    """A dataset that is neither in the data folder nor downloadable (:func:`load_dataset`).

    ``what``: "MNIST", "Fashion-MNIST" or "CIFAR-10"; ``root``: the data folder it was looked for in;
    ``expected``: what was looked for there (paths relative to ``root``); ``target``: the folder a
    download was tried into (None where ``download=False``); ``failure``: why that download failed, one
    line.  The message is one line in the Python API's terms; the command line words its own from these
    attributes (``ncmse.cli_checks.data_needed``).
    """

    def __init__(self, what: str, root: str | os.PathLike, expected: str, target: str | os.PathLike | None = None,
                 failure: str | None = None):
        self.what, self.root, self.expected = what, Path(root), expected
        self.target = None if target is None else Path(target)
        self.failure = failure
        where = f"{what} is not in {self.root} (expected {expected})"
        if self.target is None:
            tried = "; download=False, so nothing was downloaded"
        else:
            also = "" if self.target == self.root else f" nor in {self.target}"
            tried = f"{also}; downloading it into {self.target} failed ({failure})"
        super().__init__(f"{where}{tried}. To fix: call with download=True on a machine with network access, or "
                         "pass root=DIR (or set the environment variable NCMSE_DATA_ROOT=DIR) for a folder that "
                         "holds it, laid out like torchvision's roots (the offline copies of data/README.md are)")

    def __reduce__(self):                 # picklable: a local worker's error reaches the driver process
        return type(self), (self.what, self.root, self.expected, self.target, self.failure)


def _bad_file(path: Path, problem: str, fix: str = _FIX_DOWNLOAD) -> DataFileError:
    """The :class:`DataFileError` for ``path``: "<path> <problem>; <fix>" on one line."""
    text = " ".join(f"{path} {problem}; {fix}".splitlines())
    return DataFileError(text, path)


@dataclass(frozen=True, eq=False)
class Tensors:
    """A dataset held as tensors: images ``x`` (N, C, H, W) uint8 and labels ``y`` (N,) int64 in [0, K).

    ``classes`` names the K classes in label order; ``source`` says what the data are ("MNIST",
    "Fashion-MNIST", "CIFAR-10", "CIFAR-10 (JPEG copy)") and belongs in every result computed on them;
    ``path`` is where they were read from (provenance only).  Indexing gives ``(x[i], y[i])`` like a
    ``torch.utils.data.TensorDataset``.
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    source: str
    path: str = ""

    def __post_init__(self):
        if self.x.ndim != 4 or self.x.dtype != torch.uint8:
            raise ValueError(f"x must be a uint8 tensor (N, C, H, W), got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.shape != self.x.shape[:1] or self.y.dtype != torch.int64:
            raise ValueError(f"y must be an int64 tensor ({self.x.shape[0]},), got {self.y.dtype} "
                             f"{tuple(self.y.shape)}")
        if self.y.numel() and (int(self.y.min()) < 0 or int(self.y.max()) >= len(self.classes)):
            raise ValueError(f"labels must lie in [0, {len(self.classes)}), got range "
                             f"[{int(self.y.min())}, {int(self.y.max())}]")

    @property
    def K(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def subset(self, indices: torch.Tensor) -> Tensors:
        """The samples at ``indices`` (M,), in that order."""
        indices = torch.as_tensor(indices, dtype=torch.int64, device=self.x.device)
        return Tensors(self.x[indices], self.y[indices], list(self.classes), self.source, self.path)

    def to(self, device) -> Tensors:
        """The same data on ``device``."""
        return Tensors(self.x.to(device), self.y.to(device), list(self.classes), self.source, self.path)


# --------------------------------------------------------------------------------------------- loading

def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: ``root`` if given, else ``$NCMSE_DATA_ROOT`` if set, else ``<repo>/data``.

    FileNotFoundError (one line) where ``$NCMSE_DATA_ROOT`` is used but is not an existing folder: a
    mistyped variable would otherwise look like missing data, or quietly download a second copy.
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("NCMSE_DATA_ROOT")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"NCMSE_DATA_ROOT={env} is not a folder; unset it to download into {paths.DATA}, "
                                    "or point it at a folder laid out like torchvision's roots (MNIST/raw, "
                                    "FashionMNIST/raw, cifar-10-batches-py, or cifar10-jpeg/*.tar.gz)")
        return path
    return paths.DATA


def _check_name_split(name: str, split: str) -> tuple[str, str]:
    key = str(name).lower().replace("-", "_")
    key = {"fashionmnist": "fashion_mnist", "cifar_10": "cifar10"}.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(map(repr, DATASETS))}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    return key, split


def _writable(path: Path) -> bool:
    """Whether files can be created in ``path`` (created if missing and its parent allows it)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def _new_folders(*folders: Path) -> list[Path]:
    """Of ``folders`` and their parents, the ones that do not exist yet, deepest first: what a failed
    download would leave behind as empty folders (:func:`_remove_empty`)."""
    missing = []
    for folder in folders:
        for f in (folder, *folder.parents):
            if f.exists() or f in missing:
                break
            missing.append(f)
    return sorted(missing, key=lambda f: len(f.parts), reverse=True)


def _remove_empty(folders: list[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that exists and is empty; leave the rest."""
    for f in folders:
        try:
            f.rmdir()
        except OSError:
            pass


def _reason(err: BaseException, limit: int = 400) -> str:
    """The error as one short line (torchvision's download errors span several lines, one per mirror)."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def load_dataset(name: str, split: str, *, root: str | os.PathLike | None = None, download: bool = True,
                 cache_dir: str | os.PathLike | None = None) -> Tensors:
    """Load a whole split as :class:`Tensors`.

    name: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``; split: ``"train"`` or ``"test"``.
    root: the data folder (see :func:`data_root`).  download: let torchvision download what is missing
    (needs internet; with ``False`` nothing touches the network).  cache_dir: writable folder for the
    decoded image-folder copy of CIFAR-10, ``<cache_dir>/cifar10-jpeg/<split>.pt`` (default: ``<repo>/data``).
    A root taken from ``$NCMSE_DATA_ROOT`` (a shared offline copy, say) is only read, never written to —
    even where the file system would allow it: downloads then go to ``<repo>/data``.

    Returns x (N, 1, 28, 28) for MNIST / Fashion-MNIST (N = 60,000 train, 10,000 test) and
    x (N, 3, 32, 32) for CIFAR-10 (N = 50,000 / 10,000), uint8, with labels y (N,) int64.
    Raises :class:`DataMissing` (a FileNotFoundError), saying what to do, when the data are neither present
    nor downloadable (after removing the empty folders a failed download left), and
    :class:`DataFileError` when a file is present but damaged (never downloading over it or falling back
    to another copy).
    """
    key, split = _check_name_split(name, split)
    base = data_root(root)
    if key == "cifar10":
        work, may_write = _cifar10_places(root, base, cache_dir)
        return _load_cifar10(base, split, download, work, may_write=may_write)
    if download and not (root is not None or base.resolve() == paths.DATA.resolve()):
        try:                                   # an offline root is only read; a download goes to <repo>/data
            return _load_mnist_like(key, base, split, False)
        except DataMissing as first:
            try:
                return _load_mnist_like(key, paths.DATA, split, True)
            except DataMissing as second:      # say where it was looked for first
                raise DataMissing(first.what, base, first.expected, target=second.target,
                                  failure=second.failure) from None
    return _load_mnist_like(key, base, split, download)


def _check_idx_file(path: Path, magic: int, dims: tuple[int, ...]) -> None:
    """DataFileError unless ``path`` is an idx file with this magic number and dims, and exactly its size.

    The idx header is the big-endian magic number (0x00000803 for uint8 images, 0x00000801 for labels)
    and one big-endian uint32 per dimension; the uint8 data follow, prod(dims) bytes.
    """
    header = 4 + 4 * len(dims)
    expected_size = header + math.prod(dims)
    if not path.is_file():
        raise _bad_file(path, "is not a file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(header)
    if len(head) == header:
        got_magic = int.from_bytes(head[:4], "big")
        got_dims = tuple(int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(len(dims)))
        if got_magic != magic:
            raise _bad_file(path, f"is not an idx file of this kind (magic number 0x{got_magic:08x}, "
                                  f"expected 0x{magic:08x})")
        if got_dims != dims:
            raise _bad_file(path, f"has idx dims {got_dims}, expected {dims}")
    if size != expected_size:
        what = "truncated" if size < expected_size else "damaged"
        raise _bad_file(path, f"is {size:,} bytes, expected {expected_size:,} (a {header}-byte idx header and "
                              f"{'×'.join(map(str, dims))} bytes): {what}")


def _check_idx_files(raw: Path) -> None:
    """:func:`_check_idx_file` on each of the four MNIST-style idx files present in ``raw``."""
    for name, (magic, dims) in _MNIST_FILES.items():
        path = raw / name
        if path.exists():
            _check_idx_file(path, magic, dims)


def _cifar10_places(root, base: Path, cache_dir) -> tuple[Path, bool]:
    """For CIFAR-10: the writable work folder (cache, default ``<repo>/data``) and whether the data root
    ``base`` may be written to (only a root passed as an argument, or ``<repo>/data`` itself)."""
    work = Path(cache_dir).expanduser() if cache_dir is not None else paths.DATA
    return work, root is not None or base.resolve() == paths.DATA.resolve()


def describe_source(name: str, *, root: str | os.PathLike | None = None, split: str = "train",
                    download: bool = True, cache_dir: str | os.PathLike | None = None) -> str:
    """Which copy of dataset ``name`` :func:`load_dataset` would read here, as a short, stable string.

    The keyword arguments are :func:`load_dataset`'s (``split`` only matters for an image-folder copy,
    which holds both splits).  Only names and sizes of files are looked at (stat calls: nothing is
    decoded or hashed), so this is cheap enough for a results cache's validity check.  The strings:

    * ``"MNIST (idx files)"``, ``"Fashion-MNIST (idx files)"``: read or downloaded, the same bytes
      (torchvision checks a download's md5, :func:`load_dataset` an idx file's size and header);
    * ``"CIFAR-10 (python batches)"``: ``cifar-10-batches-py`` in the root or, with ``download``, in the
      folder downloads go to;
    * otherwise the JPEG copy, in :func:`load_dataset`'s order: ``"CIFAR-10 (JPEG copy: <folder>, <n> class
      folders)"``, ``"CIFAR-10 (JPEG copy: <tarball>, <bytes> bytes)"``, or (a cache in the root with its
      copy gone) ``"CIFAR-10 (JPEG copy: decoded cache <split>.pt, <bytes> bytes)"``;
    * ``"CIFAR-10 (download)"`` where there is none of these (``"CIFAR-10 (not found)"`` with
      ``download=False``, where :func:`load_dataset` raises FileNotFoundError).

    Damaged files are not detected here (:func:`load_dataset` raises :class:`DataFileError` on them).
    With only a JPEG copy present and ``download=True``, :func:`load_dataset` tries to download the
    batches first; called after loading, this names the copy that was read.
    """
    key, split = _check_name_split(name, split)
    base = data_root(root)
    if key != "cifar10":
        return f"{'MNIST' if key == 'mnist' else 'Fashion-MNIST'} (idx files)"
    if (base / _CIFAR_BATCHES).is_dir():
        return "CIFAR-10 (python batches)"
    work, may_write = _cifar10_places(root, base, cache_dir)
    target = base if may_write else paths.DATA
    if download and (target / _CIFAR_BATCHES).is_dir() and os.access(target, os.W_OK | os.X_OK):
        return "CIFAR-10 (python batches)"
    folder, tarballs = _jpeg_copies(base, split, work)
    if folder is not None:
        return f"CIFAR-10 (JPEG copy: {folder.name}, {len(_class_dirs(folder / split))} class folders)"
    if tarballs:
        return f"CIFAR-10 (JPEG copy: {tarballs[0].name}, {tarballs[0].stat().st_size} bytes)"
    cache = work / _JPEG_FOLDER / f"{split}.pt"
    if cache.is_file() and work.resolve() == base.resolve():
        return f"CIFAR-10 (JPEG copy: decoded cache {cache.name}, {cache.stat().st_size} bytes)"
    return "CIFAR-10 (download)" if download else "CIFAR-10 (not found)"


def _load_mnist_like(key: str, root: Path, split: str, download: bool) -> Tensors:
    from torchvision import datasets

    cls, source = (datasets.MNIST, "MNIST") if key == "mnist" else (datasets.FashionMNIST, "Fashion-MNIST")
    raw = root / cls.__name__ / "raw"
    _check_idx_files(raw)
    new = _new_folders(root, raw)          # torchvision creates <root>/<Name>/raw before it downloads
    try:
        ds = cls(root=str(root), train=split == "train", download=download)
    except (URLError, RuntimeError, OSError) as err:
        _remove_empty(new)
        raise DataMissing(source, root, f"the four idx files in {cls.__name__}/raw",
                          target=root if download else None, failure=_reason(err) if download else None) from None
    x = ds.data.to(torch.uint8).unsqueeze(1).contiguous()                 # (N, 1, 28, 28)
    y = ds.targets.to(torch.int64).clone()                                # (N,)
    return Tensors(x, y, list(ds.classes), source, str(Path(ds.raw_folder)))


def _read_cifar10_batches(root: Path, train: bool):
    """The ``torchvision.datasets.CIFAR10`` of ``root``'s python batches, or None where the folder is absent.

    Only the requested split's batches and ``batches.meta`` are md5-checked (torchvision would check
    both splits, so a damaged test batch would hide the training batches); the first one that is missing
    or fails raises :class:`DataFileError`.
    """
    from torchvision import datasets
    from torchvision.datasets.utils import check_integrity

    folder = root / _CIFAR_BATCHES
    if not folder.is_dir():
        return None
    meta = datasets.CIFAR10.meta
    fix = (f"delete the folder {folder} and run again with network access to download CIFAR-10 again, "
           "or point NCMSE_DATA_ROOT at a good copy")
    for name, md5 in [(meta["filename"], meta["md5"])] + list(datasets.CIFAR10.train_list if train
                                                              else datasets.CIFAR10.test_list):
        path = folder / name
        if not path.is_file():
            raise _bad_file(path, "is missing from the CIFAR-10 python batches", fix)
        if not check_integrity(str(path), md5):
            raise _bad_file(path, f"fails its md5 check (expected {md5}): damaged", fix)

    class CheckedCIFAR10(datasets.CIFAR10):
        def _check_integrity(self) -> bool:
            return True                                # the split's files were checked above

    return CheckedCIFAR10(root=str(root), train=train, download=False)


def _load_cifar10(root: Path, split: str, download: bool, work: Path, *, may_write: bool = True) -> Tensors:
    from torchvision import datasets

    train = split == "train"
    failure = target = None
    ds = _read_cifar10_batches(root, train)            # the python batches, if present: no network
    if ds is None and download:
        target = root if may_write else paths.DATA
        new = _new_folders(target)
        if _writable(target):
            try:
                ds = datasets.CIFAR10(root=str(target), train=train, download=True)
            except (URLError, RuntimeError, OSError) as err:
                failure = _reason(err)
                _remove_empty(new)
        else:
            failure = f"{target} is not writable, so no download was tried"
    if ds is not None:
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()   # (N, 3, 32, 32)
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
        return Tensors(x, y, list(ds.classes), "CIFAR-10", str(Path(ds.root) / ds.base_folder))
    got = _load_image_folder_copy(root, split, work)
    if got is not None:
        return got
    raise DataMissing("CIFAR-10", root, f"the python batches {_CIFAR_BATCHES}, an image folder "
                      f"<name>/{split}/<class>/*.jpg, or the tarball {_JPEG_FOLDER}/*.tar.gz", target=target,
                      failure=failure)


# ------------------------------------------------------------------------- CIFAR-10 as an image folder

def _class_dirs(split_dir: Path) -> list[Path]:
    """Class folders of an image-folder split, sorted by name (for CIFAR-10: its label order)."""
    if not split_dir.is_dir():
        return []
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _jpeg_copies(root: Path, split: str, work: Path) -> tuple[Path | None, list[Path]]:
    """The image folder (see :func:`_find_image_folder`) and the tarballs of the JPEG copy, in the order
    they are read: folders under ``work`` then ``root``, tarballs ``<root or work>/cifar10-jpeg/*.tar.gz``."""
    folder = _find_image_folder([work, root] if work != root else [root], split)
    tarballs = sorted((root / _JPEG_FOLDER).glob("*.tar.gz")) + sorted((work / _JPEG_FOLDER).glob("*.tar.gz"))
    return folder, tarballs


def _find_image_folder(bases: Sequence[Path], split: str) -> Path | None:
    """First ``<base>/<name>/`` with ``<split>/<class>/<image>`` inside, bases in order, names sorted."""
    for base in bases:
        if not base.is_dir():
            continue
        for d in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            dirs = _class_dirs(d / split)
            if len(dirs) >= 2 and any(f.suffix.lower() in _IMAGE_SUFFIXES for f in dirs[0].iterdir()):
                return d
    return None


def _decode(encoded: list[torch.Tensor], desc: str) -> torch.Tensor:
    """Decode encoded JPEG/PNG files (1-D uint8 tensors) in chunks into x (N, 3, H, W) uint8, with progress."""
    from torchvision.io import ImageReadMode, decode_image
    from tqdm.auto import tqdm

    x = None
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image I/O in favour of torchcodec; it still works, and is all we need.
        warnings.simplefilter("ignore", DeprecationWarning)
        with tqdm(total=len(encoded), desc=desc, unit=" img", mininterval=1.0) as bar:
            for start in range(0, len(encoded), _DECODE_CHUNK):
                chunk = [decode_image(e, mode=ImageReadMode.RGB) for e in encoded[start:start + _DECODE_CHUNK]]
                if x is None:
                    x = torch.empty((len(encoded), *chunk[0].shape), dtype=torch.uint8)
                shapes = {tuple(c.shape) for c in chunk}
                if shapes != {tuple(x.shape[1:])}:
                    raise ValueError(f"{desc}: images differ in size, {sorted(shapes)} vs {tuple(x.shape[1:])}")
                x[start:start + len(chunk)] = torch.stack(chunk)
                bar.update(len(chunk))
    return x


def _decode_folder(split_dir: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``split_dir/<class>/*.{jpg,png}`` as x (N, 3, H, W) uint8, y (N,) int64 and the sorted class names."""
    from torchvision.io import read_file

    dirs = _class_dirs(split_dir)
    files, labels = [], []
    for k, d in enumerate(dirs):
        fs = sorted(f for f in d.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES)
        files += fs
        labels += [k] * len(fs)
    if not files:
        raise FileNotFoundError(f"no images in {split_dir}/<class>/")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        encoded = [read_file(str(f)) for f in files]
    x = _decode(encoded, f"decoding {split_dir}")
    return x, torch.tensor(labels, dtype=torch.int64), [d.name for d in dirs]


def _decode_tarball(tarball: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The images ``[prefix/]<split>/<class>/<file>`` of a tarball, decoded straight from the archive.

    Nothing is extracted to disk: 60,000 small files cost far more to create (tens of seconds of system
    time on a busy disk) than the one decoded tensor file that replaces them.  Same order as
    :func:`_decode_folder`: classes sorted by name, files by name within a class.
    """
    from tqdm.auto import tqdm

    by_class: dict[str, list[tuple[str, bytes]]] = {}
    try:
        with (tarfile.open(tarball) as tf,
              tqdm(desc=f"reading {tarball.name}", unit=" files", mininterval=1.0) as bar):
            for member in tf:
                bar.update()
                parts = PurePosixPath(member.name).parts
                if (member.isfile() and len(parts) >= 3 and parts[-3] == split
                        and PurePosixPath(parts[-1]).suffix.lower() in _IMAGE_SUFFIXES):
                    by_class.setdefault(parts[-2], []).append((parts[-1], tf.extractfile(member).read()))
    except PermissionError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise _bad_file(tarball, f"cannot be read as a .tar.gz ({_reason(err, 200)}): truncated or damaged",
                        "replace it with a good copy, or point NCMSE_DATA_ROOT at a folder that holds one") from None
    if not by_class:
        raise FileNotFoundError(f"{tarball} holds no images under {split}/<class>/")
    classes = sorted(by_class)
    encoded, labels = [], []
    for k, name in enumerate(classes):
        files = sorted(by_class[name])
        encoded += [torch.frombuffer(bytearray(data), dtype=torch.uint8) for _, data in files]
        labels += [k] * len(files)
    x = _decode(encoded, f"decoding {tarball.name}:{split}")
    return x, torch.tensor(labels, dtype=torch.int64), classes


def _read_cache(cache: Path, source: str | None, here: bool) -> Tensors | None:
    """The decoded cache's :class:`Tensors` where it stands for ``source``, else None.

    A cache decoded from another copy is left to be replaced; one that cannot be read, or is not such
    a cache at all, is moved aside (:func:`ncmse.files.quarantine`).  here: whether the
    cache lives in the data root itself, where it is used even with no copy found.
    """
    try:
        blob = torch.load(cache, weights_only=True)
        if not (isinstance(blob, dict) and blob.get("format") == _CACHE_FORMAT):
            raise ValueError(f"not a {_CACHE_FORMAT!r} file")
        if not (blob.get("path") == source or (source is None and here)):
            return None
        return Tensors(blob["x"], blob["y"], list(blob["classes"]), blob["source"], blob["path"])
    except _CACHE_ERRORS as err:
        quarantine(cache, _reason(err, 200), then="decoding the images again")
        return None


def _load_image_folder_copy(root: Path, split: str, work: Path) -> Tensors | None:
    """CIFAR-10 from an image-folder copy, or None where there is none.

    In order: the decoded cache ``<work>/cifar10-jpeg/<split>.pt``; an image folder
    ``<base>/<name>/<split>/<class>/`` with base = work, then root; the tarball
    ``<root or work>/cifar10-jpeg/*.tar.gz``.  What is decoded is cached when ``<work>`` is writable.
    """
    target = work / _JPEG_FOLDER
    cache = target / f"{split}.pt"
    folder, tarballs = _jpeg_copies(root, split, work)
    source = str(folder / split) if folder is not None else (f"{tarballs[0]}:{split}" if tarballs else None)
    if cache.is_file():
        # The cache stands for the copy it was decoded from: used when that copy is the one found here,
        # or, with no copy found, when the cache lives in this root itself.
        got = _read_cache(cache, source, work.resolve() == root.resolve())
        if got is not None:
            return got
    if source is None:
        return None
    if folder is not None:
        x, y, classes = _decode_folder(folder / split)
    else:
        x, y, classes = _decode_tarball(tarballs[0], split)
    path = source
    if len(classes) != 10:
        raise ValueError(f"{path} has {len(classes)} class folders, CIFAR-10 has 10")
    if _writable(target):
        atomic_torch_save({"format": _CACHE_FORMAT, "x": x, "y": y, "classes": classes, "source": _JPEG_SOURCE,
                          "path": path}, cache)
    return Tensors(x, y, classes, _JPEG_SOURCE, path)

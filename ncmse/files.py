"""Durable file writes shared by the results cache, the checkpoints and the data caches.

Every file that another process may read while it is being written (a result JSON, a training
checkpoint, a decoded dataset) goes through :func:`atomic_write`: the bytes go to a temporary file
with a unique name in the same folder, are flushed and ``fsync``-ed, and the temporary file is renamed
over the target (``os.replace``, atomic on POSIX file systems), after which the folder is ``fsync``-ed
too.  A reader therefore sees the old file or the new one, never half of one, even when several
writers race or the machine loses power; two writers never share a temporary file.

A file that is nevertheless torn (a copy interrupted outside this code, a disk that filled up) or
foreign (another configuration under the same name) is moved aside by :func:`quarantine`, with one
warning line that names it, so that the caller can recompute it instead of failing on every rerun.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_bytes", "atomic_torch_save", "quarantine"]

log = logging.getLogger("ncmse.files")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:                       # e.g. a platform without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], None], *, mode: int = 0o644) -> Path:
    """Write ``path`` atomically and durably: ``write(f)`` fills a binary file object ``f`` that is a
    uniquely named temporary file beside ``path``; it is fsync-ed, renamed over ``path`` and the folder
    fsync-ed.  On any exception (KeyboardInterrupt included) the temporary file is removed and ``path``
    is untouched.  Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)               # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path | str, text: str) -> Path:
    """:func:`atomic_write` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj, path: Path | str) -> Path:
    """``torch.save(obj)`` through :func:`atomic_write` (serialized in memory first, so a failing
    ``torch.save`` leaves no partial file)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def quarantine(path: Path | str, reason: str, *, then: str = "") -> Path:
    """Move a torn or foreign file aside to the first free name of ``<path>.corrupt``,
    ``<path>.corrupt.1``, ``<path>.corrupt.2``, … (earlier evidence is never replaced) and log one
    warning line naming both, ``reason`` (what was wrong) and ``then`` (what happens next, e.g.
    "retraining").  Returns the new location.

    The new name is taken with a hard link, which fails where the name exists, so two processes never
    pick the same one; where the file system has no hard links (some FUSE and SMB mounts) it is a rename
    to a name checked to be free.  Where another process moved ``path`` first, nothing is logged."""
    path = Path(path)
    dest = _move_to_free_name(path, path.name + ".corrupt")
    if dest is None:                      # another process moved it first
        return path.with_name(path.name + ".corrupt")
    reason = " ".join(str(reason).split())
    if len(reason) > 200:
        reason = reason[:199] + "…"
    log.warning(f"[ncmse] warning: {path} is unreadable ({reason}); moved to {dest}"
                + (f"; {then}" if then else ""))
    return dest


def _move_to_free_name(path: Path, stem: str) -> Path | None:
    """Move ``path`` to ``stem``, else ``stem.1``, ``stem.2``, … (the first that does not exist, in
    ``path``'s folder); None where ``path`` is gone."""
    for n in itertools.count():
        dest = path.with_name(stem if n == 0 else f"{stem}.{n}")
        try:
            os.link(path, dest)
        except FileExistsError:
            continue
        except FileNotFoundError:
            return None
        except OSError:                   # no hard links here
            if dest.exists() or dest.is_symlink():
                continue
            try:
                os.rename(path, dest)
            except FileNotFoundError:
                return None
            return dest
        path.unlink(missing_ok=True)
        return dest
    return None                           # unreachable: itertools.count never ends

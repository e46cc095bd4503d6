"""Where the package's own folders are: the one definition of the repository root.

``ncmse`` runs from a checkout (``pip install -e .``, the book) or from an installed wheel.  Either way
the folders below hang off :data:`ROOT`, the folder that holds the ``ncmse`` package: in a checkout the
repository, whose ``data/`` holds downloads, the results cache and the trained archive, and whose
``benchmarks/results`` holds measured costs.  Every module that needs one of these folders takes it
from here (each can still be moved by its own option or environment variable, documented where it is
used).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ROOT", "DATA"]

#: the repository (or the source tree) that holds the ``ncmse`` package
ROOT = Path(__file__).resolve().parent.parent
#: ``<repo>/data``: downloads, the results cache, checkpoints, the trained archive, hardware decisions
DATA = ROOT / "data"

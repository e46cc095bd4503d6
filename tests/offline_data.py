"""Where the tests find the datasets, and the skip markers of the tests that need them.

``DATA_ROOT`` is ``NCMSE_DATA_ROOT`` where it is set (``./run.sh test`` sets it to the offline copy beside
the clone, ``../shared/data``, when there is one), else that copy's path; a test that needs a dataset
which is not there is skipped with the path it looked in, never failed.
"""

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA_ROOT = Path(os.environ.get("NCMSE_DATA_ROOT", SHARED))
needs_fashion = pytest.mark.skipif(not (DATA_ROOT / "FashionMNIST" / "raw").exists(),
                                   reason=f"Fashion-MNIST not found under {DATA_ROOT}")
needs_cifar = pytest.mark.skipif(not (DATA_ROOT / "cifar10-jpeg").exists() and
                                 not (DATA_ROOT / "cifar-10-batches-py").exists(),
                                 reason=f"CIFAR-10 not found under {DATA_ROOT}")

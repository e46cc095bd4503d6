"""The thread budget as one public call (``ncmse.use_budget``), and importing ``ncmse`` changes nothing.

Each check runs in a fresh interpreter: thread settings are per process and torch reads its
environment once, so the test process (which has imported torch already) cannot show them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ncmse import threads

REPO = Path(__file__).resolve().parents[1]


def _fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter at the repository root, without any thread-count variable in
    its environment (as on a machine nobody configured), and return the JSON it prints last."""
    env = {k: v for k, v in os.environ.items() if k not in threads.COUNT_VARIABLES}
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


REPORT = ("json.dumps({'n': n, 'torch': torch.get_num_threads(), "
          "'env': {k: os.environ.get(k) for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')}})")


def test_importing_ncmse_leaves_torch_and_the_environment_alone():
    out = _fresh("import json, os\n"
                 "import torch\n"
                 "default = torch.get_num_threads()\n"
                 "import ncmse, ncmse.threads\n"
                 "after_import = torch.get_num_threads()\n"
                 "env = {k: os.environ.get(k) for k in ncmse.threads.COUNT_VARIABLES}\n"
                 "print(json.dumps({'default': default, 'after_import': after_import, 'env': env}))")
    assert out["after_import"] == out["default"]
    assert out["env"] == dict.fromkeys(threads.COUNT_VARIABLES)
    # and ncmse imported before torch: torch still starts with its own default
    first = _fresh("import json, os, sys\n"
                   "import ncmse\n"
                   "assert 'torch' not in sys.modules, 'importing ncmse imported torch'\n"
                   "import torch\n"
                   "print(json.dumps({'torch': torch.get_num_threads(), 'omp': os.environ.get('OMP_NUM_THREADS')}))")
    assert first == {"torch": out["default"], "omp": None}


def test_use_budget_before_torch_sets_the_book_budget():
    out = _fresh("import json, os\n"
                 "import ncmse\n"
                 "n = ncmse.use_budget()\n"
                 "import torch\n"
                 f"print({REPORT})")
    n = threads.default_threads()
    assert out["n"] == n == max(1, (os.cpu_count() or 1) - 1)
    assert out["torch"] == n
    assert out["env"] == {k: str(n) for k in threads.COUNT_VARIABLES}


def test_use_budget_after_torch_still_sets_torch_threads():
    out = _fresh("import json, os\n"
                 "import torch\n"
                 "import ncmse\n"
                 "n = ncmse.use_budget(3)\n"
                 f"print({REPORT})")
    assert out["n"] == out["torch"] == 3
    assert out["env"] == {k: "3" for k in threads.COUNT_VARIABLES}


def test_use_budget_is_the_one_public_call(monkeypatch):
    import ncmse

    assert ncmse.use_budget is threads.use_budget
    assert "use_budget" in threads.__all__ and not hasattr(threads, "configure")
    assert "spin" in threads.use_budget.__doc__ and "after" in threads.use_budget.__doc__
    for bad in (0, -2):
        with pytest.raises(ValueError, match="positive integer"):
            ncmse.use_budget(bad)
    # the environment part of the budget (monkeypatch restores it afterwards)
    for k in threads.COUNT_VARIABLES:
        monkeypatch.setenv(k, "7")
    monkeypatch.delitem(sys.modules, "torch")          # leave this process's torch threads alone
    assert threads.use_budget(2) == 2
    assert all(os.environ[k] == "2" for k in threads.COUNT_VARIABLES)
    assert threads.use_budget() == threads.default_threads()
    assert all(os.environ[k] == str(threads.default_threads()) for k in threads.COUNT_VARIABLES)


def test_budget_arithmetic():
    assert threads.default_threads(2) == 1 and threads.default_threads(1) == 1 and threads.default_threads(16) == 15
    assert threads.budget(2, 2) == 1 and threads.budget(3, 16) == 5 and threads.budget(8, 2) == 1

"""The library install without the book: the wheel's core requirements are torch, torchvision, numpy, tqdm
and filelock, and the wheel installed into a fresh virtual environment that holds only those (none of
the book's packages) runs ``ncmse.measure_collapse``.

The fresh environment reuses this environment's core packages through a ``.pth`` file that points at a
folder of links to exactly those distributions and their own dependencies, so that the check needs
neither the network nor a second gigabyte of torch; ``pip install --no-index`` then proves that they
satisfy every core requirement of the wheel.
"""

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
CORE = {"torch", "torchvision", "numpy", "tqdm", "filelock"}
BOOK = {"jupyter-book", "papermill", "sphinx", "jupytext", "matplotlib", "seaborn", "pandas", "pyarrow",
        "submitit", "ipykernel", "pyyaml", "sphinx-mathjax-offline"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):     # a copy: setuptools leaves build/ beside the sources
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "ncmse", src / "ncmse", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(src)],
                   check=True, timeout=600)
    (whl,) = out.glob("ncmse-*.whl")
    return whl


def core_requirements(whl: Path) -> list[Requirement]:
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]
    return [r for r in reqs if r.marker is None or "extra" not in str(r.marker)]


def test_the_wheels_core_requirements_hold_none_of_the_books_packages(wheel):
    names = {canonicalize_name(r.name) for r in core_requirements(wheel)}
    assert names == CORE, names
    assert not names & BOOK


def _closure(names: set[str]) -> set[str]:
    """The installed distributions that ``names`` need, following their requirements and the extras
    those ask for (torch's CUDA build, for one, requires ``cuda-toolkit[cublas, …]``)."""
    env, seen, todo = default_environment(), set(), [(n, "") for n in names]
    while todo:
        name, extra = todo.pop()
        name = canonicalize_name(name)
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        for line in md.distribution(name).requires or []:
            r = Requirement(line)
            if r.marker is None or r.marker.evaluate({**env, "extra": extra}):
                todo += [(r.name, "")] + [(r.name, e) for e in r.extras]
    return {name for name, _ in seen}


def test_the_wheel_alone_runs_measure_collapse_in_a_fresh_environment(wheel, tmp_path):
    site = tmp_path / "core-site"                   # links to the core distributions only
    site.mkdir()
    for name in _closure(CORE):
        dist = md.distribution(name)
        base = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if not (site / top).exists() and (base / top).exists():
                (site / top).symlink_to(base / top)
    env_dir = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "core.pth").write_text(f"{site}\n")
    # this environment's pip installs into the fresh one; --no-index: the links must satisfy every requirement
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-index",
                    str(wheel)], check=True, timeout=300)
    script = """
import importlib.util, torch, torchvision
from torch.utils.data import DataLoader, TensorDataset
import ncmse
missing = [m for m in ("matplotlib", "pandas", "papermill", "jupyter_book", "sphinx", "submitit", "seaborn")
           if importlib.util.find_spec(m) is not None]
assert not missing, f"the fresh environment holds {missing}"
torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=3)
data = TensorDataset(torch.randn(12, 3, 32, 32), torch.arange(12) % 3)
r = ncmse.measure_collapse(model, DataLoader(data, batch_size=5))
assert all(k in r for k in ("NC1", "NC2", "NC3", "NC4", "NC4_ncc", "accuracy"))
print("ok", ncmse.__file__)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run([py, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok") and str(env_dir) in done.stdout    # the installed wheel, not the checkout

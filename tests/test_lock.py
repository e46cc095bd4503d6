"""The lock file: every pin satisfies the ranges of pyproject.toml, every dependency of pyproject.toml
(with every extra) is pinned, and torch/torchvision are the matching pair these machines install."""

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib  # Python ≥ 3.11
except ModuleNotFoundError:                       # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements-lock.txt"


def _pins(text: str) -> dict[str, Version]:
    """name → version of every ``name==version`` line (comments and ``# via`` annotations skipped)."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier                   # exactly one ==
        assert spec.operator == "==", line
        name = canonicalize_name(req.name)
        assert name not in pins, f"{name} pinned twice"
        pins[name] = Version(spec.version)
    return pins


def _declared() -> list[Requirement]:
    """The core dependencies and those of every extra (``./run.sh`` installs them all), without the
    extras' references to ncmse's own other extras."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    reqs = [Requirement(r) for r in project["dependencies"] + extras]
    return [r for r in reqs if canonicalize_name(r.name) != "ncmse"]


@pytest.fixture(scope="module")
def pins():
    assert LOCK.exists(), "requirements-lock.txt is missing: ./run.sh lock writes it"
    return _pins(LOCK.read_text())


def test_every_dependency_is_pinned_within_its_range(pins):
    problems = []
    for req in _declared():
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req} is not in the lock")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"the lock pins {name}=={pins[name]}, outside pyproject's {req}")
    assert not problems, problems


def test_torch_pair_and_python(pins):
    assert pins["torch"] == Version("2.14.1") and pins["torchvision"] == Version("0.29.1")
    assert "with Python 3.11" in LOCK.read_text().splitlines()[1]


def test_pins_parser_refuses_ranges_and_duplicates():
    assert _pins("numpy==2.0.1\n    # via torch\nTorch==2.14.1  # comment\n") == {
        "numpy": Version("2.0.1"), "torch": Version("2.14.1")}
    with pytest.raises(AssertionError):
        _pins("numpy>=2\n")
    with pytest.raises(AssertionError, match="pinned twice"):
        _pins("numpy==2.0\nNumPy==2.1\n")


def test_range_check_catches_a_pin_outside_and_a_missing_one(pins):
    with pytest.raises(AssertionError, match="outside pyproject"):
        test_every_dependency_is_pinned_within_its_range({**pins, "numpy": Version("1.0")})
    with pytest.raises(AssertionError, match="not in the lock"):
        test_every_dependency_is_pinned_within_its_range({k: v for k, v in pins.items() if k != "pandas"})

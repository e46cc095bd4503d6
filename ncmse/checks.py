"""Validation of scalar arguments, shared by every configuration in the package.

Numbers arrive as Python ints and floats, as numpy scalars (``np.int64(4)`` from an array of d's,
``np.float32`` from a grid), or as 0-d tensors; each check accepts every real number type, refuses
booleans, NaN and infinities, and returns a plain ``int`` or ``float`` so that configurations hash
and serialize the same whatever type they were built from.  Errors are one-line ``ValueError`` exceptions
that name the parameter.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["as_int", "as_float", "scalar"]


def scalar(value):
    """A numpy scalar or 0-d array/tensor as the Python number it holds; anything else unchanged."""
    item = getattr(value, "item", None)            # numpy scalars and 0-d arrays/tensors
    if item is not None and getattr(value, "ndim", 0) == 0 and not isinstance(value, numbers.Number):
        return item()
    return value


def as_int(name: str, value, *, minimum: int | None = None) -> int:
    """``value`` as an ``int`` (any integral type, numpy and 0-d tensors included; not bool), at least
    ``minimum`` when given; ValueError otherwise."""
    v = scalar(value)
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        what = "a positive integer" if minimum == 1 else "an integer"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    v = int(v)
    if minimum is not None and v < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"
        raise ValueError(f"{name} must be {what}, got {v}")
    return v


def as_float(name: str, value, *, low: float | None = None, high: float | None = None,
             low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite ``float`` in the interval given by ``low``/``high`` (closed unless
    ``low_open``/``high_open``); ValueError, naming ``name`` and the interval, otherwise."""
    v = scalar(value)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    v = float(v)
    ok = math.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '≥'} {low:g}")
        if high is not None:
            bounds.append(f"{'<' if high_open else '≤'} {high:g}")
        rule = "finite" + (f" and {' and '.join(bounds)}" if bounds else "")
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return v

"""ncmse: a tested companion to Zhou et al. (ICML 2022), *On the Optimization Landscape of Neural
Collapse under MSE Loss*.  See the book (``book/``) for the narrative; every chapter composes this
package.

Importing the package changes no setting of torch or of the process, and imports nothing heavy.  A
script or notebook of your own gets the book's thread budget with one call, first thing:
``ncmse.use_budget()`` (all cores but one; :func:`ncmse.threads.use_budget`).  Neural collapse of your
own network: ``ncmse.measure_collapse(model, loader)`` (:mod:`ncmse.collapse`; torch is imported on
first use)."""

from .threads import use_budget

__version__ = "0.1.0"
__all__ = ["use_budget", "measure_collapse", "CollapseMetric"]   # documented in ncmse.threads, ncmse.collapse

_LAZY = {"measure_collapse": "collapse", "CollapseMetric": "collapse"}


def __getattr__(name: str):
    """``ncmse.measure_collapse`` and ``ncmse.CollapseMetric``, imported on first use (they need torch)."""
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'ncmse' has no attribute {name!r}")

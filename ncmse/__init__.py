"""ncmse: a tested companion to Zhou et al. (ICML 2022), *On the Optimization Landscape of Neural
Collapse under MSE Loss*.  See the book (``book/``) for the narrative; every chapter composes this
package.

Importing the package changes no setting of torch or of the process.  A script or notebook of your own
gets the book's thread budget with one call, first thing: ``ncmse.use_budget()`` (all cores but one;
:func:`ncmse.threads.use_budget`)."""

from .threads import use_budget

__version__ = "0.1.0"
__all__ = ["use_budget"]   # documented in ncmse.threads (page API reference)

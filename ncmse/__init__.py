"""ncmse: a tested companion to Zhou et al. (ICML 2022), *On the Optimization Landscape of Neural
Collapse under MSE Loss*.  See the book (``book/``) for the narrative; every chapter composes this
package."""

__version__ = "0.1.0"

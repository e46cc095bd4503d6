"""Neural collapse of anyone's network: :func:`measure_collapse` on any ``nn.Module`` and loader, and
:class:`CollapseMetric` for a training loop (``update`` / ``compute`` / ``reset``, synchronised across
processes under DDP).

Both feed the streaming accumulator of :mod:`ncmse.metrics` (per-class counts and means and the pooled
within-class scatter, in float64 whatever the model's dtype or autocast), so the metrics are those of
the page Notation and of the paper's official code: NC1–NC4, the variants of :mod:`ncmse.metrics`, and
Papyan et al.'s NC4_ncc.

**Passes over the data.**  NC1–NC4 and the accuracy are functions of the class statistics, which one
pass accumulates in O(K·d + d²) memory beside the model.  NC4_ncc (the fraction of samples on which the
classifier disagrees with the nearest class mean) compares every sample with the *final* class means,
so it cannot come out of that pass without keeping every feature (N·d memory).  :func:`measure_collapse`
therefore computes it in a second pass over the loader by default (``ncc="pass"``, memory still
O(K·d + d²)), keeps the features instead where the loader can be read only once (``ncc="keep"``), or
skips it (``ncc=None``: exactly one pass).  Two-pass implementations (class means first, covariances
second) need a third pass for NC4_ncc; ``benchmarks/collapse_bench.py`` measures the difference.

**Why a small class and not torchmetrics' ``Metric``.**  The pooled within-class scatter is not a sum
of per-process states: summing raw second moments Σ h hᵀ instead, as a sum-reduced torchmetrics state
would, loses digits to cancellation (E[hhᵀ] − μμᵀ) when the features are far from the origin.
:meth:`CollapseMetric.merged` reduces exactly with two rounds of all-reduce sums (counts and class sums
first, then each process's scatter re-centred on the global class means), and keeps the core
dependencies at torch alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import torch
from torch import nn

from .metrics import NCAccumulator, ncc_mismatch

__all__ = ["measure_collapse", "CollapseMetric", "classifier_layer"]

_NCC_MODES = ("pass", "keep", None)


def classifier_layer(model: nn.Module, layer: str | nn.Module | None = None) -> tuple[str, nn.Module]:
    """The layer whose input are the features and whose ``weight`` (K, d) and ``bias`` (K,) are the
    classifier: ``layer`` by name (as in ``model.named_modules()``) or as a module of ``model``, by
    default the model's last ``nn.Linear``.  Returns (name, module).  Raises ValueError naming the
    layers there are when ``layer`` is not in the model or has no weight of shape (K, d)."""
    named = dict(model.named_modules())
    linear = [n for n, m in named.items() if isinstance(m, nn.Linear)]
    if layer is None:
        if not linear:
            raise ValueError(f"{type(model).__name__} has no nn.Linear layer; pass layer= the classifier "
                             f"(its layers: {_some(named)})")
        name = linear[-1]
    elif isinstance(layer, str):
        if layer not in named:
            raise ValueError(f"{type(model).__name__} has no layer {layer!r}; its nn.Linear layers: "
                             f"{', '.join(repr(n) for n in linear) or 'none'} (all layers: {_some(named)})")
        name = layer
    elif isinstance(layer, nn.Module):
        found = [n for n, m in named.items() if m is layer]
        if not found:
            raise ValueError(f"the layer given ({type(layer).__name__}) is not a module of {type(model).__name__}")
        name = found[0]
    else:
        raise TypeError(f"layer must be a name, an nn.Module or None, got {type(layer).__name__}")
    module = named[name]
    W = getattr(module, "weight", None)
    if not isinstance(W, torch.Tensor) or W.ndim != 2:
        raise ValueError(f"layer {name!r} ({type(module).__name__}) has no weight matrix (K, d); the features "
                         f"are the input of the classifier, an nn.Linear")
    return name, module


def _some(named: dict, n: int = 8) -> str:
    names = [repr(k) for k in named if k]
    return ", ".join(names[:n]) + (f", … ({len(names)} in all)" if len(names) > n else "")


def _batches(loader: Iterable):
    """(x, y) of every batch; a batch is a tuple or list whose first two items are inputs and labels."""
    for i, batch in enumerate(loader):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(f"batch {i} of the loader is a {type(batch).__name__}; measure_collapse needs "
                             f"(x, y) batches: inputs and integer labels")
        yield batch[0], batch[1]


class _Capture:
    """A forward hook on the classifier that hands its input (the features) and its output (the
    logits) to ``sink(features (B, d), logits (B, K))``."""

    def __init__(self, name: str, d: int):
        self.name, self.d, self.sink = name, d, None

    def __call__(self, module, args, output):
        h = args[0] if args else None
        if not isinstance(h, torch.Tensor) or h.ndim != 2 or h.shape[1] != self.d:
            shape = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
            raise ValueError(f"the input of layer {self.name!r} has shape {shape}; measure_collapse needs one "
                             f"feature vector per sample, shape (B, {self.d})")
        self.sink(h.detach(), output.detach())


def measure_collapse(model: nn.Module, loader: Iterable, *, layer: str | nn.Module | None = None,
                     num_classes: int | None = None, device: str | torch.device | None = None,
                     ncc: str | None = "pass") -> dict[str, float]:
    """Neural-collapse metrics of ``model``'s features on the data of ``loader``.

    The features h (d,) are the input of the classifier ``layer`` (default: the model's last
    ``nn.Linear``; :func:`classifier_layer`), caught by a forward hook, and its weight W (K, d) and bias
    b (K,) are the classifier.  ``loader`` yields ``(x, y)`` batches (a ``DataLoader`` or any iterable);
    classes may be imbalanced, but every one of the K must occur.  The model runs in eval mode under
    ``torch.no_grad()`` on ``device`` (default: the device of its parameters; the model must already be
    there), and each module's train/eval mode is restored afterwards, as are its hooks.

    Returns a dict of floats: ``NC1``, ``NC2``, ``NC3``, ``NC4`` (page Notation, as in the paper's
    code), the variants of :func:`ncmse.metrics.nc_metrics_from_statistics`, ``NC4_ncc`` (unless
    ``ncc=None``), ``accuracy`` (of the classifier's argmax), ``N`` (samples) and ``passes`` (over the
    loader).  ``ncc``: ``"pass"`` computes NC4_ncc in a second pass (memory O(K·d + d²)); ``"keep"``
    keeps the features of the one pass instead (N·d more memory, for a loader that can be read once);
    ``None`` skips it (module docstring).  Statistics accumulate in float64 whatever the model's dtype.

    Raises ValueError, in one line, for a loader that yields nothing, a class that never occurs, labels
    outside [0, K), a layer that does not exist, or features that are not (B, d).
    """
    if ncc not in _NCC_MODES:
        raise ValueError(f"ncc must be one of {_NCC_MODES}, got {ncc!r}")
    name, clf = classifier_layer(model, layer)
    W = clf.weight.detach()
    K, d = W.shape
    if num_classes is not None and num_classes != K:
        raise ValueError(f"num_classes={num_classes}, but the classifier {name!r} has {K} outputs")
    params = next(model.parameters(), None)
    here = params.device if params is not None else torch.device("cpu")
    device = torch.device(device) if device is not None else here
    if device.type != here.type or (device.index is not None and here.index is not None and device.index != here.index):
        raise ValueError(f"the model is on {here}, not on {device}: move it first (model.to({str(device)!r}))")
    bias = clf.bias.detach() if isinstance(getattr(clf, "bias", None), torch.Tensor) else None

    acc = NCAccumulator(K, d, device=device, keep_features=(ncc == "keep"))
    state = {"correct": 0, "labels": None}

    def first(h, z):
        y = state["labels"]
        if y.shape[0] != h.shape[0]:
            raise ValueError(f"a batch has {h.shape[0]} features but {y.shape[0]} labels")
        acc.update(h, y)
        state["correct"] += int((z.argmax(1) == y).sum())

    counts2 = torch.zeros(K, dtype=torch.float64, device=device)
    disagree = {"n": 0.0}

    def second(h, z):
        y = state["labels"]
        counts2.add_(torch.bincount(y, minlength=K).to(counts2))
        disagree["n"] += ncc_mismatch(h, acc.means, W, bias) * h.shape[0]

    capture = _Capture(name, d)
    modes = {m: m.training for m in model.modules()}
    handle = clf.register_forward_hook(capture)
    passes = 0
    try:
        model.eval()
        with torch.no_grad():
            for sink in (first, second) if ncc == "pass" else (first,):
                capture.sink = sink
                passes += 1
                for x, y in _batches(loader):
                    state["labels"] = torch.as_tensor(y).to(device=device, dtype=torch.long).reshape(-1)
                    model(x.to(device) if isinstance(x, torch.Tensor) else x)
                if acc.N == 0:
                    raise ValueError("the loader yielded no samples")
                if passes == 1:
                    _check_classes(acc.counts)
    finally:
        handle.remove()
        for m, training in modes.items():
            m.train(training)

    out = acc.compute(W, bias)                  # NC4_ncc included when the features were kept
    if ncc == "pass":
        if not torch.equal(counts2, acc.counts):
            warnings.warn("the loader's second pass yielded other class counts than its first (random "
                          "sampling or drop_last?): NC4_ncc describes the second pass's samples",
                          stacklevel=2)
        out["NC4_ncc"] = disagree["n"] / float(counts2.sum()) if float(counts2.sum()) > 0 else math.nan
    out["accuracy"] = state["correct"] / acc.N
    out["N"] = acc.N
    out["passes"] = passes
    return out


def _check_classes(counts: torch.Tensor) -> None:
    missing = torch.nonzero(counts == 0).flatten().tolist()
    if missing:
        raise ValueError(f"classes {missing} never occur in the data (K = {counts.numel()} from the classifier); "
                         f"the class means need every class")


class CollapseMetric:
    """NC metrics accumulated during training, in the ``update`` / ``compute`` / ``reset`` style of
    torchmetrics, for K classes and d-dimensional features.

    ``update(features (B, d), labels (B,))`` adds a batch (float64 statistics on ``device``, memory
    O(K·d + d²)); ``compute(W (K, d), b (K,))`` returns the metrics of
    :func:`ncmse.metrics.nc_metrics_from_statistics` (NC1–NC4 and variants; NC4_ncc needs a second look
    at the samples: :func:`measure_collapse`).  Under ``torch.distributed`` every process updates with its
    own shard and ``compute`` first merges the shards exactly (:meth:`merged`, module docstring), so every
    rank returns the metrics of all the data.
    """

    def __init__(self, num_classes: int, dim: int, *, device=None):
        self.num_classes, self.dim, self.device = num_classes, dim, device
        self.reset()

    def reset(self) -> None:
        """Forget every batch."""
        self._acc = NCAccumulator(self.num_classes, self.dim, device=self.device)

    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: features (B, d) in any float dtype, labels (B,) integers in [0, K)."""
        self._acc.update(features, labels)

    @property
    def N(self) -> int:
        """Samples seen by this process since the last reset."""
        return self._acc.N

    @torch.no_grad()
    def merged(self, group=None) -> NCAccumulator:
        """The statistics of every process of ``group`` (default: the whole world), merged; this
        process's own statistics outside ``torch.distributed``.  The metric's state is left as it is, so
        that training can go on updating it.

        Two rounds of all-reduce sums, exact: counts n_k and class sums n_k μ_k give the global class
        means μ_k; then each process's scatter re-centred on them, S_p + Σ_k n_pk (μ_pk − μ_k)(μ_pk − μ_k)ᵀ,
        sums to the global within-class scatter.  Every process of the group must call it.
        """
        import torch.distributed as dist

        a = self._acc
        if not (dist.is_available() and dist.is_initialized()):
            return a
        counts = a.counts.clone()
        sums = a.counts[:, None] * a.means
        dist.all_reduce(counts, group=group)
        dist.all_reduce(sums, group=group)
        means = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], torch.zeros_like(sums))
        delta = a.means - means                                              # (K, d)
        scatter = a.scatter + (delta * a.counts[:, None]).T @ delta
        dist.all_reduce(scatter, group=group)
        out = NCAccumulator(self.num_classes, self.dim, device=counts.device)
        out.counts, out.means, out.scatter = counts, means, scatter
        return out

    def compute(self, W: torch.Tensor | None = None, b: torch.Tensor | None = None, *, group=None) -> dict[str, float]:
        """The metrics of every sample since the last reset, over all processes of ``group`` under
        ``torch.distributed`` (:meth:`merged`; every process must call it); those needing the classifier
        are left out when W is None.  Raises ValueError when a class never occurred."""
        acc = self.merged(group)
        _check_classes(acc.counts)
        out = acc.compute(None if W is None else torch.as_tensor(W).detach(),
                          None if b is None else torch.as_tensor(b).detach())
        out["N"] = acc.N
        return out

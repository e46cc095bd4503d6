"""Balanced subsets of a dataset held as tensors and a mini-batch loader that shuffles, augments and
normalizes on the device (chapter "Deep networks").

A dataset is a :class:`ncmse.data.Tensors`: images ``x`` (N, C, H, W) uint8, labels ``y`` (N,) int64.
:func:`subsample` and :func:`holdout_split` draw the paper's balanced setting (and the held-out images
that learning rates are tuned on) with seeded generators; :class:`TensorLoader` cuts mini-batches out
of the tensors with tensor indexing: no worker processes, no PIL, no per-sample Python on the hot
path, the paper's crop and flip applied to a whole batch at once (:func:`crop_flip`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data import Tensors

__all__ = ["balanced_indices", "subsample", "holdout_split", "channel_stats", "crop_flip", "random_crop_flip",
           "TensorLoader"]


# ------------------------------------------------------------------------------------- subsampling

def balanced_indices(labels: torch.Tensor, n_per_class: int, *, seed: int, K: int | None = None) -> torch.Tensor:
    """Indices (K·n_per_class,) of exactly ``n_per_class`` samples of each class 0..K−1, drawn without
    replacement with a generator seeded by ``seed``; sorted, so the subset keeps the data's order.

    labels: (N,) integers in [0, K); K defaults to max label + 1.  ValueError if a class has fewer samples.
    """
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive integer, got {n_per_class!r}")
    labels = torch.as_tensor(labels).cpu()
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (N,), got {tuple(labels.shape)}")
    K = int(labels.max()) + 1 if K is None else int(K)
    counts = torch.bincount(labels, minlength=K)
    if int(counts.min()) < n_per_class:
        short = {k: int(c) for k, c in enumerate(counts.tolist()) if c < n_per_class}
        raise ValueError(f"n_per_class={n_per_class} exceeds the samples of classes {short} (class: count)")
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.argsort(labels, stable=True)                       # class by class, original order within
    starts = torch.cumsum(counts, 0) - counts
    picks = [order[int(starts[k]) + torch.randperm(int(counts[k]), generator=gen)[:n_per_class]] for k in range(K)]
    return torch.sort(torch.cat(picks)).values


def subsample(data: Tensors, n_per_class: int, *, seed: int) -> Tensors:
    """A balanced subset: exactly ``n_per_class`` samples of each of the ``data.K`` classes (seeded draw,
    see :func:`balanced_indices`), so N = K·n_per_class as in the paper's balanced setting."""
    idx = balanced_indices(data.y, n_per_class, seed=seed, K=data.K)
    return data.subset(idx.to(data.x.device))


def holdout_split(data: Tensors, n_per_class: int, holdout_per_class: int, *, seed: int) -> tuple[Tensors, Tensors]:
    """Two disjoint balanced subsets of one split: ``n_per_class`` training and ``holdout_per_class``
    held-out samples of each class (seeded).  The held-out part is the validation set on which learning
    rates are tuned (chapter "Deep networks"), so the test split is never looked at while tuning."""
    if isinstance(holdout_per_class, bool) or not isinstance(holdout_per_class, (int, np.integer)) \
            or holdout_per_class < 1:
        raise ValueError(f"holdout_per_class must be a positive integer, got {holdout_per_class!r}")
    idx = balanced_indices(data.y, n_per_class + holdout_per_class, seed=seed, K=data.K)
    labels = data.y[idx].cpu()
    gen = torch.Generator().manual_seed(int(seed) + 1)
    is_train = torch.zeros(len(idx), dtype=torch.bool)
    for k in range(data.K):
        members = torch.nonzero(labels == k).flatten()
        is_train[members[torch.randperm(len(members), generator=gen)[:n_per_class]]] = True
    dev = data.x.device
    return data.subset(idx[is_train].to(dev)), data.subset(idx[~is_train].to(dev))


# ------------------------------------------------------------------------- normalization, augmentation

@torch.no_grad()
def channel_stats(data: Tensors, *, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation (C,) each, float64, of the images scaled to [0, 1].

    Compute them on the training split and pass them to the test split's loader.
    """
    x = data.x
    C = x.shape[1]
    s = torch.zeros(C, dtype=torch.float64, device=x.device)
    s2 = torch.zeros(C, dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], chunk):
        xc = x[i:i + chunk].to(torch.float64).div_(255.0).transpose(0, 1).reshape(C, -1)
        s += xc.sum(1)
        s2 += (xc * xc).sum(1)
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / n
    std = (s2 / n - mean**2).clamp_min(0).sqrt()
    return mean.cpu(), std.cpu()


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
              padding: int = 4) -> torch.Tensor:
    """Crop and flip a batch at given offsets, all samples at once.

    x: (B, C, H, W); dy, dx: (B,) integers in [0, 2·padding]; flip: (B,) bool.  Sample b is the H×W window
    at (dy_b, dx_b) of x_b zero-padded by ``padding`` on every side, mirrored left–right where flip_b:
    torchvision's RandomCrop(H, padding) followed by RandomHorizontalFlip, as one gather.
    Returns (B, C, H, W), same dtype and device as x.
    """
    B, C, H, W = x.shape
    dev = x.device
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x       # (B, C, H+2p, W+2p)
    ar_h = torch.arange(H, device=dev)
    ar_w = torch.arange(W, device=dev)
    rows = dy.to(dev)[:, None] + ar_h                                                   # (B, H)
    cols = dx.to(dev)[:, None] + torch.where(flip.to(dev)[:, None], W - 1 - ar_w, ar_w)  # (B, W), mirrored
    b = torch.arange(B, device=dev)[:, None, None, None]
    c = torch.arange(C, device=dev)[None, :, None, None]
    return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(x: torch.Tensor, *, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`crop_flip` with offsets uniform in {0..2·padding}² and flips with probability ½, drawn from
    ``generator`` (a CPU generator, so the draw does not depend on x's device)."""
    B = x.shape[0]
    offsets = torch.randint(0, 2 * padding + 1, (2, B), generator=generator)
    flip = torch.randint(0, 2, (B,), generator=generator).bool()
    return crop_flip(x, offsets[0], offsets[1], flip, padding)


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed that mixes (seed, epoch) well, so neighbouring epochs get unrelated streams."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class TensorLoader:
    """Mini-batches ``(x, y)`` of a :class:`ncmse.data.Tensors` held on ``device``: x (B, C, H, W) float, normalized,
    y (B,) int64.

    * shuffle: a fresh permutation each epoch from a generator seeded by (``seed``, epoch); without it
      the data's order.  The epoch is the one set by :meth:`set_epoch`, and each pass advances it by one,
      so ``set_epoch(e)`` before resuming at epoch e replays exactly the batches of an uninterrupted run.
    * augment: the paper's RandomCrop(32, padding=4) + RandomHorizontalFlip (:func:`crop_flip`), drawn
      per sample from the same epoch generator, applied to the whole batch at once on the device.
      Padding is black (0) before normalization, as in torchvision.
    * normalization: (x/255 − mean)/std per channel; mean and std default to :func:`channel_stats` of
      ``data`` (pass the training split's to a test loader).
    * drop_last: leave out the last, incomplete batch.  ``len(loader)`` is the number of batches.

    All random draws happen on the CPU, so a seed and epoch give the same batches on every device.
    """

    def __init__(self, data: Tensors, batch_size: int, *, shuffle: bool = True, drop_last: bool = False,
                 augment: bool = False, padding: int = 4, seed: int = 0, device: torch.device | str | None = None,
                 mean: Sequence[float] | torch.Tensor | None = None, std: Sequence[float] | torch.Tensor | None = None,
                 dtype: torch.dtype = torch.float32):
        if not isinstance(data, Tensors):
            raise TypeError(f"data must be ncmse.data.Tensors, got {type(data).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
        if len(data) == 0:
            raise ValueError("data is empty")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating type, got {dtype}")
        self.device = torch.device(device) if device is not None else data.x.device
        self.x = data.x.to(self.device)                   # (N, C, H, W) uint8
        self.y = data.y.to(self.device)                   # (N,) int64
        self.classes, self.source = list(data.classes), data.source
        self.batch_size, self.shuffle, self.drop_last = batch_size, bool(shuffle), bool(drop_last)
        self.augment, self.padding, self.seed, self.dtype = bool(augment), padding, seed, dtype
        C = data.x.shape[1]
        if mean is None or std is None:
            m, s = channel_stats(data)
            mean = m if mean is None else mean
            std = s if std is None else std
        mean = torch.as_tensor(mean, dtype=torch.float64).flatten().cpu()
        std = torch.as_tensor(std, dtype=torch.float64).flatten().cpu()
        if mean.numel() == 1:
            mean = mean.expand(C)
        if std.numel() == 1:
            std = std.expand(C)
        if mean.shape != (C,) or std.shape != (C,):
            raise ValueError(f"mean and std need {C} values (one per channel), got {mean.numel()} and {std.numel()}")
        if not bool((std > 0).all()):
            raise ValueError(f"std must be positive, got {std.tolist()}")
        self.mean, self.std = mean.clone(), std.clone()
        # (x/255 − mean)/std = x·scale + shift, per channel
        self._scale = (1.0 / (255.0 * std)).to(device=self.device, dtype=dtype)[None, :, None, None]
        self._shift = (-mean / std).to(device=self.device, dtype=dtype)[None, :, None, None]
        self.epoch = 0
        # torch.channels_last for convolutional models (ncmse.train): the batches' memory layout
        self.memory_format = torch.contiguous_format

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (its permutation and augmentation)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        N = self.x.shape[0]
        return N // self.batch_size if self.drop_last else math.ceil(N / self.batch_size)

    def _draws(self, epoch: int):
        """The epoch's order (N,) and, with augment, offsets (2, N) and flips (N,), on the device."""
        N = self.x.shape[0]
        gen = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        order = torch.randperm(N, generator=gen) if self.shuffle else torch.arange(N)
        if not self.augment:
            return order.to(self.device), None, None
        offsets = torch.randint(0, 2 * self.padding + 1, (2, N), generator=gen)
        flips = torch.randint(0, 2, (N,), generator=gen).bool()
        return order.to(self.device), offsets.to(self.device), flips.to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        order, offsets, flips = self._draws(epoch)
        B = self.batch_size
        for i in range(len(self)):
            idx = order[i * B:(i + 1) * B]
            x = self.x[idx]
            if self.augment:
                sl = slice(i * B, (i + 1) * B)
                x = crop_flip(x, offsets[0, sl], offsets[1, sl], flips[sl], self.padding)
            x = x.to(self.dtype) * self._scale + self._shift
            yield x.contiguous(memory_format=self.memory_format), self.y[idx]

    def __repr__(self) -> str:
        return (f"TensorLoader({self.source}, N={self.x.shape[0]}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, augment={self.augment}, drop_last={self.drop_last}, seed={self.seed}, "
                f"device={self.device})")

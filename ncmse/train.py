"""Training with neural-collapse tracking, atomic checkpoints and exact resume (chapter "Deep networks").

:func:`train` runs one :class:`ncmse.config.RunConfig`: SGD (momentum) or Adam, the paper's step
schedule or cosine, the losses of ``ncmse.losses`` with weight decay on all parameters.  At the
chosen epochs it measures, in one pass over the un-augmented training set, the training accuracy and
NC1–NC4 (and Papyan's NC4_ncc) of the penultimate features (``ncmse.metrics.NCAccumulator``), plus the
test accuracy and the number of live feature units.  After every epoch it writes a checkpoint
atomically (model, optimizer, schedule, history and the random state), so that a killed run resumes
at the next epoch and ends exactly where an uninterrupted run ends (on the CPU, for a seed).

Speed from the machine at hand (``ncmse.hardware``): a convolutional model (:data:`CONV_MODELS`) and
its batches use the channels-last memory layout where that is faster here (always on CUDA; on a CPU,
as a short measurement found): the same arithmetic in another order, recorded in the provenance and
kept by a resumed run.  ``precision="bf16"`` runs each training step's forward pass and loss under
bfloat16 autocast; weights, gradients, the optimizer and every evaluation (accuracy, NC metrics) stay
float32.  The precision is a field of the configuration, so a bf16 result never stands in for an
fp32 one; a configuration that asks for ``"auto"`` is resolved for the device first (bf16 where it is
native).  ``benchmarks/precision_check.py`` compares the two side by side.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from pathlib import Path

import torch
from tqdm.std import tqdm

from .config import RunConfig
from .data import load_dataset
from .files import atomic_torch_save, quarantine
from .fingerprint import validity as run_validity
from .hardware import channels_last
from .loader import TensorLoader, holdout_split, subsample
from .losses import loss_module
from .metrics import NCAccumulator
from .models import build_model

#: the convolutional models: they train in the channels-last layout where that is faster here (``ncmse.hardware``)
CONV_MODELS = ("cnn", "resnet18")

__all__ = ["CONV_MODELS", "train", "evaluate", "make_optimizer", "make_schedule", "default_device", "resolve_device",
           "provenance", "environment"]

log = logging.getLogger("ncmse.train")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``device`` as a ``torch.device`` that exists here (None: :func:`default_device`); a ValueError
    in one line for a malformed name ("gpu") or a device this machine lacks ("cuda" without a GPU,
    "cuda:3" on a two-GPU box, "mps" off Apple silicon)."""
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}; expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use --device cpu")
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device {device!r} asked for, but torch sees {n} CUDA GPU(s) (cuda:0 … cuda:{n - 1})")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device {device!r} asked for, but MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {device!r}; expected cpu, cuda, cuda:N or mps")
    return dev


def make_optimizer(model: torch.nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """SGD with momentum or Adam, weight decay on every parameter.  Where torch has a fused kernel for
    the parameters' device (CPU and CUDA), the update of each parameter tensor is one kernel instead
    of four: the same update up to rounding (fused multiply-adds), and a cheaper step
    (``benchmarks/step_bench.py`` measures how much)."""
    device = next(model.parameters()).device
    fused = {"fused": True} if device.type in _fused_devices() else {}
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, **fused)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, **fused)


def _fused_devices() -> tuple[str, ...]:
    """The device types with fused optimizer kernels in this torch (CPU and CUDA at least)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return tuple(t for t in _get_fused_kernels_supported_devices() if t in ("cpu", "cuda"))
    except ImportError:            # an older torch: the loop implementation everywhere
        return ()


def make_schedule(optimizer: torch.optim.Optimizer, config: RunConfig):
    """Per-epoch schedule: × gamma every ``step_every`` epochs (the paper: 0.1 every 40), cosine, or none."""
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_every, gamma=config.gamma)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


@torch.no_grad()
def evaluate(model, loader: TensorLoader, num_classes: int, *, nc: bool) -> dict:
    """One pass: accuracy, per-class accuracy and (``nc``) NC metrics and live feature units.

    With ``nc`` the pass keeps the features it sees (N × d) so that Papyan's NC4_ncc, which needs the
    final class means, is computed from them afterwards without a second forward pass."""
    model.eval()
    correct = torch.zeros(num_classes, dtype=torch.long)
    total = torch.zeros(num_classes, dtype=torch.long)
    acc = (NCAccumulator(num_classes, model.d, device=next(model.parameters()).device, keep_features=True)
           if nc else None)
    for x, y in loader:
        z, h = model(x, return_features=True)
        pred = z.argmax(1)
        total += torch.bincount(y.cpu(), minlength=num_classes)
        correct += torch.bincount(y[pred == y].cpu(), minlength=num_classes)
        if acc is not None:
            acc.update(h, y)
    out = {"accuracy": float(correct.sum() / total.sum()),
           "per_class_accuracy": (correct / total.clamp_min(1)).tolist()}
    if acc is not None:
        out.update(acc.compute(model.W.detach(), model.b.detach()))
        spread = torch.diagonal(acc.Sigma_W) + torch.diagonal(acc.Sigma_B)      # per-unit variance
        out["live_units"] = int((spread > 1e-10 * max(float(spread.max()), 1e-300)).sum())
        out["class_means"] = acc.means.tolist()
        out["global_mean"] = acc.global_mean.tolist()
    return out


def _load_checkpoint(ckpt: Path, config: RunConfig, valid: dict, device) -> dict | None:
    """The checkpoint state to resume from, or None: a torn or foreign file is moved aside (one
    warning line), one written by other code or on other data is deleted (one line); both start over."""
    try:
        state = torch.load(ckpt, map_location=device, weights_only=True)
    except FileNotFoundError:
        return None
    except Exception as exc:         # EOFError, UnpicklingError, RuntimeError (zip), …: a torn file
        quarantine(ckpt, f"{type(exc).__name__}: {exc}", then="training starts from epoch 0")
        return None
    keys = ("config", "model", "optimizer", "schedule", "history", "epoch", "seconds", "rng")
    if not isinstance(state, dict) or any(k not in state for k in keys):
        quarantine(ckpt, "not a training checkpoint", then="training starts from epoch 0")
        return None
    if state["config"] != config.full_schedule().to_dict():
        quarantine(ckpt, "it belongs to another configuration", then="training starts from epoch 0")
        return None
    if state.get("validity") != valid:
        log.warning(f"[ncmse] checkpoint {ckpt} was written by other code or on other data; "
                    "training starts from epoch 0")
        ckpt.unlink(missing_ok=True)
        return None
    return state


def train(config: RunConfig, *, device: torch.device | str | None = None, checkpoint: Path | str | None = None,
          progress: bool = True, stop_after: int | None = None, data_root: Path | str | None = None,
          validity: dict | None = None) -> dict:
    """Train ``config``; returns a JSON-ready result (history, final metrics, classifier, provenance,
    validity).

    ``checkpoint``: file to resume from and to write after each epoch; it is used only if it was
    written for this configuration (or, for one with ``stop_epoch``, for its full schedule: the two
    share a checkpoint) by this code on these data (``validity``, default
    :func:`ncmse.fingerprint.validity` after the data are loaded).  ``stop_after``: return after that
    many epochs *of this call* (to simulate an interruption in tests); the result then has
    ``"complete": False``.

    Divergence: the loss of every mini-batch is checked; the first non-finite one ends the run before
    its step, and the result says ``"diverged": {"epoch", "batch", "loss"}`` with ``train``, ``test``,
    ``W`` and ``b`` None (there is no trained network to measure).  Otherwise ``"diverged"`` is None.
    """
    device = resolve_device(device)
    config = config.resolved(device, warn=False)
    t_start = time.perf_counter()
    torch.manual_seed(config.seed)
    if device.type == "cuda":     # deterministic cuDNN kernels: a resumed GPU run stays closer to an uninterrupted one
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    train_set = load_dataset(config.dataset, "train", root=data_root)
    if config.holdout_per_class is not None:          # validation run: the test split is not touched
        train_set, test_set = holdout_split(train_set, config.n_per_class, config.holdout_per_class,
                                            seed=config.seed)
    else:
        test_set = load_dataset(config.dataset, "test", root=data_root)
        if config.n_per_class is not None:
            train_set = subsample(train_set, config.n_per_class, seed=config.seed)
        if config.test_per_class is not None:
            test_set = subsample(test_set, config.test_per_class, seed=config.seed)
    K = len(train_set.classes)
    # what the data were is known for sure once they are loaded (a download may have replaced a JPEG copy)
    valid = validity if validity is not None else run_validity(config.dataset, data_root)
    train_loader = TensorLoader(train_set, config.batch_size, shuffle=True, augment=config.augment,
                                device=device, seed=config.seed, drop_last=False)
    mean, std = train_loader.mean, train_loader.std
    eval_train = TensorLoader(train_set, 1024, shuffle=False, augment=False, device=device, mean=mean, std=std)
    eval_test = TensorLoader(test_set, 1024, shuffle=False, augment=False, device=device, mean=mean, std=std)
    model = build_model(config.model, tuple(train_set.x.shape[1:]), K, config.d,
                        feature_relu=config.feature_relu).to(device)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    state = _load_checkpoint(ckpt, config, valid, device) if ckpt is not None else None
    if state is not None and state["epoch"] > config.last_epoch:
        # a run stopped early whose full schedule has already gone past it: train it from the start,
        # leaving the full run's checkpoint as it is
        log.info(f"[ncmse] {ckpt} is past epoch {config.last_epoch}: this stopped run starts from epoch 0")
        state, ckpt = None, None
    # the layout the run started with (a resumed run keeps it), else the one that is faster here
    nhwc = (state["channels_last"] if state is not None and "channels_last" in state else
            channels_last(config.model, config.precision, device, tuple(train_set.x.shape[1:]), config.batch_size,
                          conv_models=CONV_MODELS))
    if nhwc:
        model = model.to(memory_format=torch.channels_last)
        for loader in (train_loader, eval_train, eval_test):
            loader.memory_format = torch.channels_last
    optimizer = make_optimizer(model, config)
    schedule = make_schedule(optimizer, config)
    criterion = loss_module(config.loss, config.alpha, config.M, convention=config.mse_convention)
    history: list[dict] = []
    start_epoch = 0
    seconds_before = 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        history, start_epoch, seconds_before = state["history"], state["epoch"], state["seconds"]
        torch.set_rng_state(state["rng"].cpu())           # map_location may have moved it
        log.info(f"[ncmse] resuming {ckpt} at epoch {start_epoch + 1} of {config.epochs}")
    last = config.last_epoch                  # stop_epoch: a rung of a successive halving, same schedule
    measure = {e for e in config.nc_epochs if e <= last} | {last}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    final = None                  # the last epoch's evaluation is the result's: measured once
    diverged = None
    done_here = 0
    bar = tqdm(range(start_epoch, last), desc=f"{config.dataset} {config.model} d={config.d} {config.loss}",
               disable=not progress, leave=False, initial=start_epoch, total=last)
    for epoch in bar:
        model.train()
        train_loader.set_epoch(epoch)
        running, seen = 0.0, 0
        for batch, (x, y) in enumerate(train_loader, start=1):
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = criterion(model(x), y)
            value = float(loss.detach())
            if not math.isfinite(value):
                diverged = {"epoch": epoch + 1, "batch": batch, "loss": str(value)}
                break
            loss.backward()
            optimizer.step()
            running += value * len(y)
            seen += len(y)
        if diverged is not None:
            if seen:
                history.append({"epoch": epoch + 1, "train_loss": running / seen,
                                "lr": optimizer.param_groups[0]["lr"], "partial": True})
            break
        schedule.step()
        entry = {"epoch": epoch + 1, "train_loss": running / seen, "lr": optimizer.param_groups[0]["lr"]}
        if epoch + 1 in measure:
            tr = evaluate(model, eval_train, K, nc=True)
            te = evaluate(model, eval_test, K, nc=False)
            entry.update({k: v for k, v in tr.items() if k not in ("class_means", "global_mean", "per_class_accuracy")})
            entry["train_accuracy"] = entry.pop("accuracy")
            entry["test_accuracy"] = te["accuracy"]
            if epoch + 1 == last:
                final = tr, te
        history.append(entry)
        bar.set_postfix(loss=f"{entry['train_loss']:.3g}")
        if ckpt is not None:
            atomic_torch_save({"config": config.full_schedule().to_dict(), "validity": valid,
                               "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "schedule": schedule.state_dict(),
                               "history": history, "epoch": epoch + 1,
                               "seconds": seconds_before + time.perf_counter() - t_start,
                               "rng": torch.get_rng_state(), "channels_last": nhwc}, ckpt)
        done_here += 1
        if stop_after is not None and done_here >= stop_after and epoch + 1 < last:
            bar.close()
            return {"config": config.to_dict(), "history": history, "complete": False}
    bar.close()
    prov = {**provenance(device, seconds_before + time.perf_counter() - t_start), "resumed_at_epoch": start_epoch,
            "channels_last": nhwc}
    common = {"config": config.to_dict(), "complete": True, "history": history,
              "evaluated_on": "holdout" if config.holdout_per_class is not None else "test",
              "classes": train_set.classes, "data_source": train_set.source, "validity": valid,
              "provenance": prov}
    if diverged is not None:
        return {**common, "diverged": diverged, "train": None, "test": None, "W": None, "b": None}
    if final is None:             # resumed from a checkpoint written after the last epoch
        final = evaluate(model, eval_train, K, nc=True), evaluate(model, eval_test, K, nc=False)
    final_train, final_test = final
    return {**common, "diverged": None, "train": final_train, "test": final_test,
            "W": model.W.detach().cpu().tolist(), "b": model.b.detach().cpu().tolist()}


def environment(device=None) -> dict:
    """What a result's provenance records about where it ran: torch version, device, thread count."""
    return {"torch": torch.__version__, "device": str(resolve_device(device)), "threads": torch.get_num_threads()}


def provenance(device, seconds: float) -> dict:
    """Git revision, package, torch and Python versions, device, machine, threads and wall time of a result."""
    from . import __version__
    from .hardware import capability
    from .machine import device_description

    return {"ncmse": __version__, "git": _code_version(), **environment(device),
            "python": platform.python_version(), "machine": device_description(), "capability": capability(),
            "wall_seconds": seconds,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def _code_version() -> str:
    """The git commit of the checkout (with '+dirty' for local changes), or 'unknown'."""
    import subprocess

    from .paths import ROOT as root

    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "ncmse"], cwd=root, capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"

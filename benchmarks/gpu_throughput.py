"""Training throughput of the paper's network (ResNet18, CIFAR-size images, batch 128) by precision,
memory layout, torch.compile and the number of runs sharing one device; and what each study's
``paper`` profile costs at the best of them.

    python benchmarks/gpu_throughput.py [--device cuda] [--steps 60] [--warmup 15] [--concurrency 1 2 4]
                                        [--out benchmarks/results]
    python benchmarks/gpu_throughput.py --device cpu --steps 2 --warmup 1 --concurrency 1 2 --batch 8   # a smoke run

Each setting trains the real step of ``ncmse.train`` — the model of ``ncmse.models.build_model``, its
SGD optimizer, the MSE loss, batches cut and augmented (crop + flip) on the device by
``ncmse.loader.TensorLoader`` — on synthetic uint8 images of CIFAR-10's shape held on the device (the
arithmetic of a step does not depend on the pixels; the device machine carries no dataset).  Settings:

* ``fp32``: contiguous tensors, float32 (the ``paper`` profile's arithmetic);
* ``bf16+cl``: channels-last and bfloat16 autocast (``RunConfig.precision="bf16"``);
* ``bf16+cl+compile``: the same through ``torch.compile`` (its compile time reported apart).

Then the best setting runs in 1, 2, 4 … processes at once on the same device (started together,
timed over the same steps), and their images/s are added up.  Reported: steady images/s (median
over timed windows after ``--warmup`` steps), the seconds to the first step, and the device-hours of
both studies' ``paper`` profile and of the ``cifar10`` study's ``gpu`` profile (``ncmse.study.plan``:
runs × epochs × training images) at the best total rate — an extrapolation that leaves out
evaluation passes, labelled so.  cuDNN autotuning is on
(``cudnn.benchmark``), as for runs that do not ask for bit-exact resumption.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_report  # noqa: E402

SETTINGS = ("fp32", "bf16+cl", "bf16+cl+compile")


def _timed_steps(setting: str, device: str, batch: int, steps: int, warmup: int, d: int = 512) -> dict:
    """Train ``warmup + steps`` steps of ResNet18 in ``setting``; seconds to the first step and the
    steady images/s over the last ``steps``."""
    import torch

    from ncmse.data import Tensors
    from ncmse.loader import TensorLoader
    from ncmse.losses import loss_module
    from ncmse.models import build_model

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    g = torch.Generator().manual_seed(0)
    n = batch * (steps + warmup)
    data = Tensors(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                   torch.randint(0, 10, (n,), generator=g), [str(k) for k in range(10)], "synthetic")
    channels_last = "cl" in setting
    loader = TensorLoader(data, batch, augment=True, device=dev, mean=[0.5] * 3, std=[0.25] * 3)
    if channels_last:
        loader.memory_format = torch.channels_last
    torch.manual_seed(0)
    model = build_model("resnet18", (3, 32, 32), 10, d).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if "compile" in setting else model
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    criterion = loss_module("mse", 1.0, 1.0)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled="bf16" in setting)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    t0 = time.perf_counter()
    first = None
    marks = []
    for i, (x, y) in enumerate(loader):
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = criterion(step_model(x), y)
        loss.backward()
        opt.step()
        if i == 0:
            sync()
            first = time.perf_counter() - t0
        if i + 1 >= warmup and (i + 1 - warmup) % max(1, steps // 5) == 0:
            sync()
            marks.append((i + 1, time.perf_counter()))
    sync()
    marks.append((warmup + steps, time.perf_counter()))
    rates = [batch * (s1 - s0) / (t1 - t0_) for (s0, t0_), (s1, t1) in zip(marks, marks[1:], strict=False) if s1 > s0]
    return {"setting": setting, "first_step_s": first, "images_per_s": statistics.median(rates) if rates else None}


def _worker(args, barrier, queue):
    from ncmse.threads import use_budget

    use_budget(1)
    barrier.wait()
    queue.put(_timed_steps(*args))


def _concurrent(setting: str, device: str, batch: int, steps: int, warmup: int, n: int) -> dict:
    """``n`` processes training ``setting`` at once: their images/s, added up."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=((setting, device, batch, steps, warmup), barrier, queue))
             for _ in range(n)]
    for p in procs:
        p.start()
    out = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    rates = [o["images_per_s"] for o in out]
    return {"runs": n, "setting": setting, "per_run_images_per_s": rates,
            "total_images_per_s": sum(rates) if all(r is not None for r in rates) else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=60, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=15, help="untimed steps first (cuDNN autotuning, compile)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    p.add_argument("--out", default=None, help="folder for the JSON report (e.g. benchmarks/results)")
    args = p.parse_args(argv)
    import torch

    from ncmse.machine import device_description
    from ncmse.study import plan
    from ncmse.train import resolve_device

    device = str(resolve_device(args.device))
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else device_description()
    single = []
    for setting in args.settings:
        try:
            single.append(_timed_steps(setting, device, args.batch, args.steps, args.warmup))
        except Exception as exc:          # torch.compile without a working compiler, say
            single.append({"setting": setting, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
        print(single[-1], file=sys.stderr, flush=True)
    timed = [s for s in single if s.get("images_per_s")]
    best = max(timed, key=lambda s: s["images_per_s"])
    together = [_concurrent(best["setting"], device, args.batch, args.steps, args.warmup, n)
                for n in args.concurrency]
    for t in together:
        print(t, file=sys.stderr, flush=True)
    rate = max([best["images_per_s"]] + [t["total_images_per_s"] for t in together if t["total_images_per_s"]])
    projected = {}
    for study_name, profile in (("deep", "paper"), ("cifar10", "paper"), ("cifar10", "gpu")):
        pl = plan(profile, study_name)
        projected[f"{study_name} {profile}"] = {"runs": pl.runs, "image_epochs": pl.image_epochs,
                                                "device_hours": pl.image_epochs / rate / 3600}
    report = {"device": name, "torch": torch.__version__, "batch": args.batch, "steps": args.steps,
              "warmup": args.warmup, "single": single, "concurrent": together, "best_images_per_s": rate,
              "projected_paper": projected}
    kind = "".join(c for c in name.lower().split()[-1] if c.isalnum()) if device.startswith("cuda") else "cpu"
    write_report(report, args.out, f"gpu_throughput_{kind}.json", summary, "benchmarks/gpu_throughput.py")
    return 0


def summary(r: dict) -> dict:
    """The status page's line for this report."""
    single = "; ".join(f"{s['setting']} {s['images_per_s']:.0f} img/s" if s.get("images_per_s")
                       else f"{s['setting']} failed" for s in r["single"])
    conc = "; ".join(f"{t['runs']} at once {t['total_images_per_s']:.0f} img/s in total"
                     for t in r["concurrent"] if t["total_images_per_s"])
    hours = "; ".join(f"study {k}: {v['device_hours']:.2f} device-hours ({v['runs']} runs)"
                      for k, v in r["projected_paper"].items())
    return {"what": f"ResNet18 training throughput at batch {r['batch']} (synthetic CIFAR-size images) by "
                    "precision, layout, compile and concurrent runs",
            "result": f"{single}; {conc}; extrapolated without evaluation passes: {hours}",
            "machine": r["device"]}


if __name__ == "__main__":
    sys.exit(main())

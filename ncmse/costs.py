"""What the deep-network studies cost at each profile (the page "Running at the paper's scale"): the
study ``deep`` of the chapter "Deep networks" and ``cifar10`` of the chapter "CIFAR-10" (whose
``paper`` runs are among the deep study's).

The amount of work comes from the settings (:func:`ncmse.study.plan`: runs × epochs × training
images); the rates come from the benchmarks that measured them (``benchmarks/results``), each on its
own device and model: a CPU rate for the MLP of the ``cpu`` profile (``threads_bench.py``), one for the
small CNN of the CIFAR-10 chapter (``precision_check.py``), a GPU rate
for ResNet18 on CIFAR-10 (``device_deep_check.py``).  An hour figure is *measured* only where the
rate was measured on that very workload; everything else is labelled *extrapolated*, and a profile
with no rate for its model says so instead of guessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .config import profile_config
from .profiles import GPU_PROFILE, PROFILES, STUDIES
from .study import plan

__all__ = ["Rate", "rates", "cost_rows", "cost_table", "precision_check"]

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


@dataclass(frozen=True)
class Rate:
    """Seconds per training image (one image through one SGD step) of ``model`` on ``device``."""

    model: str
    device: str
    seconds_per_image: float
    source: str                # the benchmark report it comes from
    note: str = ""


def rates(results: Path = RESULTS) -> list[Rate]:
    """The training rates measured by the benchmarks whose reports are in ``results``."""
    out = []
    threads = results / "threads_cpu.json"
    if threads.exists():
        r = json.loads(threads.read_text())
        images = r["epochs"] * profile_config("cpu").n_per_class * 10

        def quiet(threads):
            return next(c for c in r["cells"] if c["threads"] == threads and c["policy"] == "default"
                        and not c["busy"])["seconds"]
        out.append(Rate("mlp", r["machine"] + ", 1 process × 2 threads", quiet(2) / images, threads.name,
                        "the training time of one run"))
        out.append(Rate("mlp", r["machine"] + ", 2 workers × 1 thread", quiet(1) / images / 2, threads.name,
                        "two runs at once, each at the speed of one run with 1 thread"))
    precision = results / "precision_cpu.json"
    if precision.exists():
        r = json.loads(precision.read_text())
        bf16 = sorted(x["seconds"] for x in r["runs"] if x["precision"] == "bf16")
        images = r["base"]["epochs"] * r["base"]["n_per_class"] * 10
        out.append(Rate("cnn", r["machine"] + ", 1 process × 1 thread", bf16[len(bf16) // 2] / images,
                        precision.name, "bf16, the median run of the precision check"))
    deep = results / "device_deep_check_h200.json"
    if deep.exists():
        r = json.loads(deep.read_text())
        out.append(Rate("resnet18", r["gpu"], r["seconds_per_image"], deep.name,
                        "fp32, batch 128, runs of 2 epochs on 5,000 images"))
    return out


def cost_rows(results: Path = RESULTS) -> list[dict]:
    """One row per study, profile and matching rate: the plan, and the hours it takes at that rate."""
    rows = []
    known = rates(results)
    for name in STUDIES:
        for profile in PROFILES + ((GPU_PROFILE,) if name == "cifar10" else ()):
            p = plan(profile, name)
            model = profile_config(profile, name).model
            matching = [r for r in known if r.model == model]
            base = {"study": name, "profile": profile, "model": model, "runs": p.runs, "tuning": p.tuning,
                    "test": p.test, "epochs": p.epochs, "images": p.images, "image_epochs": p.image_epochs}
            if not matching:
                rows.append({**base, "device": "—", "hours": None, "source": "no rate measured for this model",
                             "kind": "no rate measured for this model"})
            for r in matching:
                rows.append({**base, "device": r.device, "hours": p.image_epochs * r.seconds_per_image / 3600,
                             "source": f"{r.source}: {r.note}" if r.note else r.source,
                             "kind": f"extrapolated from {r.source}" + (f" ({r.note})" if r.note else "")})
    return rows


def cost_table(results: Path = RESULTS) -> str:
    """:func:`cost_rows` as a Markdown table."""
    from .plotting import markdown_table

    def hours(h):
        if h is None:
            return "—"
        return f"{h * 3600:.0f} s" if h < 1 / 60 else f"{h * 60:.1f} min" if h < 1 else f"{h:.1f} h"

    rows = [(f"{r['study']}, {r['profile']} ({r['model']})", f"{r['runs']} ({r['tuning']} + {r['test']})",
             f"{r['epochs']} × {r['images']:,}", r["device"], hours(r["hours"]), r["source"])
            for r in cost_rows(results)]
    return markdown_table(rows, ["study, profile (model)", "runs (tuning + test)", "epochs × images", "device",
                                 "time, extrapolated", "rate from"])


def precision_check(results: Path = RESULTS) -> dict | None:
    """The report of ``benchmarks/precision_check.py`` (bf16 against fp32 side by side on the chapter
    "CIFAR-10"'s runs: ``comparison`` per loss and d, ``within_noise``, ``bf16_over_fp32_seconds``,
    ``compile``, ``summary``), or None where it has not been run."""
    path = results / "precision_cpu.json"
    return json.loads(path.read_text()) if path.exists() else None

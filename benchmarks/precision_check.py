"""bf16 autocast against fp32 on the CPU, side by side, for the runs of the chapter "CIFAR-10" (and
whether torch.compile pays for itself there).

    python benchmarks/precision_check.py [--seeds 0 1] [--ds 4 16] [--losses mse ce] [--out benchmarks/results]

Each configuration of the sample — the ``cifar10`` study's ``cpu`` base run (the small CNN on 500
CIFAR-10 images a class, 12 epochs) at every d, loss and seed given, with the base learning rate — is
trained twice in this process, once with ``precision="fp32"`` and once with ``"bf16"``, one right
after the other so that both see the same machine.  Per (loss, d), the seed-mean test accuracies of
the two precisions are compared by the book's *clear gap* rule (``ncmse.stats.clear_gap``: a gap larger
than both two standard errors over seeds and one point is clear).  The verdict "bf16 is within seed
noise of fp32" holds when no (loss, d) has a clear gap; the study's ``cpu`` profile trains in bf16
only because it held.  Reported too: the training seconds of each run and the median bf16 / fp32
ratio, and, for torch.compile, the first compiled step less the first eager one (the compile time,
with inductor's caches off: a cold compile) and the steady step time against eager bf16 steps,
measured in the same process (``--compile-only`` reruns just that part into an existing report).
Timings belong here, never in tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _report import write_report  # noqa: E402

from ncmse.machine import device_description  # noqa: E402
from ncmse.profiles import profile_config  # noqa: E402
from ncmse.stats import clear_gap  # noqa: E402
from ncmse.threads import use_budget  # noqa: E402
from ncmse.train import train  # noqa: E402


def _compile_check(base, steps: int) -> dict:
    """Seconds of the first step and the median steady step, eager against ``torch.compile``, bf16."""
    import torch._inductor.config as inductor_config

    from ncmse.data import load_dataset
    from ncmse.loader import TensorLoader, subsample
    from ncmse.losses import loss_module
    from ncmse.models import build_model

    inductor_config.force_disable_caches = True     # a cold compile, as in a fresh process on a new machine
    data = subsample(load_dataset("cifar10", "train"), base.n_per_class, seed=0)
    loader = TensorLoader(data, base.batch_size, seed=0)
    loader.memory_format = torch.channels_last
    batches = [b for _, b in zip(range(steps + 1), loader, strict=False)]
    criterion = loss_module("ce", 1.0, 1.0)
    out = {}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        model = build_model("cnn", (3, 32, 32), 10, 16).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        step_model = torch.compile(model) if name == "compiled" else model
        times = []
        try:
            for x, y in batches:
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = criterion(step_model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - t)
        except Exception as exc:             # no C++ compiler, an inductor limitation, …
            out[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            continue
        out[name] = {"first_step_s": times[0], "steady_step_s": statistics.median(times[1:])}
    if "error" not in out["compiled"]:
        e, c = out["eager"], out["compiled"]
        saved = e["steady_step_s"] - c["steady_step_s"]
        out["speedup"] = e["steady_step_s"] / c["steady_step_s"]
        out["compile_s"] = c["first_step_s"] - e["first_step_s"]
        # the number of steps after which the compile time is paid back (None: never)
        out["break_even_steps"] = out["compile_s"] / saved if saved > 0 else None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--ds", type=int, nargs="+", default=[4, 16])
    p.add_argument("--losses", nargs="+", default=["mse", "ce"], choices=["mse", "ce"])
    p.add_argument("--compile-steps", type=int, default=20, help="steps of the torch.compile check (0: skip)")
    p.add_argument("--out", default=None, help="folder for the JSON report (e.g. benchmarks/results)")
    p.add_argument("--compile-only", action="store_true",
                   help="rerun only the torch.compile check and update it in the report in --out")
    args = p.parse_args(argv)
    threads = use_budget()
    base = profile_config("cpu", "cifar10", nc_epochs=())
    if args.compile_only:
        if not args.out:
            p.error("--compile-only updates the report in --out")
        report = json.loads((Path(args.out) / "precision_cpu.json").read_text())
        report["compile"] = _compile_check(base, args.compile_steps)
        write_report(report, args.out, "precision_cpu.json", summary, "benchmarks/precision_check.py")
        return 0
    runs = []
    for loss in args.losses:
        for d in args.ds:
            for seed in args.seeds:
                pair = {}
                for precision in ("fp32", "bf16"):
                    config = base.replace(loss=loss, d=d, seed=seed, precision=precision)
                    r = train(config, device="cpu", progress=False)
                    pair[precision] = r
                    runs.append({"loss": loss, "d": d, "seed": seed, "precision": precision,
                                 "test_accuracy": r["test"]["accuracy"], "train_accuracy": r["train"]["accuracy"],
                                 "seconds": r["provenance"]["wall_seconds"]})
                    print(f"{loss} d={d} seed={seed} {precision}: test {r['test']['accuracy']:.3f} "
                          f"({r['provenance']['wall_seconds']:.1f} s)", file=sys.stderr, flush=True)
    comparison = []
    for loss in args.losses:
        for d in args.ds:
            values = {prec: [r["test_accuracy"] for r in runs if (r["loss"], r["d"], r["precision"]) == (loss, d, prec)]
                      for prec in ("fp32", "bf16")}
            c = clear_gap(values["fp32"], values["bf16"])
            comparison.append({"loss": loss, "d": d, "fp32": c["a"], "bf16": c["b"], "gap": c["gap"], "se": c["se"],
                               "clear": c["clear"]})
    ratio = statistics.median(b["seconds"] / a["seconds"] for a, b in zip(runs[0::2], runs[1::2], strict=True))
    report = {"machine": device_description(), "torch": torch.__version__, "threads": threads,
              "base": base.to_dict(), "seeds": args.seeds, "runs": runs, "comparison": comparison,
              "within_noise": not any(c["clear"] for c in comparison), "bf16_over_fp32_seconds": ratio,
              "compile": _compile_check(base, args.compile_steps) if args.compile_steps else None}
    write_report(report, args.out, "precision_cpu.json", summary, "benchmarks/precision_check.py")
    return 0


def summary(r: dict) -> dict:
    """The status page's line for this report."""
    gaps = ", ".join(f"{c['loss']} d={c['d']} {c['bf16'] - c['fp32']:+.3f} (se {c['se']:.3f})" for c in r["comparison"])
    text = (f"bf16 − fp32 test accuracy over seeds {r['seeds']}: {gaps}; "
            f"{'no clear gap: within seed noise' if r['within_noise'] else 'a clear gap: NOT within seed noise'}; "
            f"bf16 training took {r['bf16_over_fp32_seconds']:.2f}× the fp32 time")
    c = r.get("compile")
    if c and "speedup" in c:
        back = (f"pays back after {c['break_even_steps']:.0f} steps" if c["break_even_steps"] is not None
                else "never pays back")
        text += f"; torch.compile: {c['compile_s']:.0f} s to compile, steady steps {c['speedup']:.2f}× eager ({back})"
    elif c:
        text += f"; torch.compile failed: {c['compiled'].get('error', '?')}"
    return {"what": "bf16 autocast against fp32 side by side on the CIFAR-10 chapter's cpu runs (small CNN, "
                    f"{r['base']['n_per_class']} images a class, {r['base']['epochs']} epochs)",
            "result": text, "machine": r["machine"]}


if __name__ == "__main__":
    sys.exit(main())

"""What one training step of the ``cpu`` profile costs, and which cheaper steps are worth keeping (CPU).

    python benchmarks/step_bench.py [--rounds 7] [--out benchmarks/results]

Everything is measured in this one process with one thread (what each local worker gets on a
laptop), alternating the variants round by round so that a noisy neighbour slows both alike; the
report gives medians over ``--rounds`` and ratios against the baseline of the same round.

1. **The optimizer.** The MLP's whole training step (forward, loss, backward, update; d = 16, batch
   128) with torch's per-tensor SGD loop against its fused SGD (one kernel per parameter tensor),
   which ``ncmse.train.make_optimizer`` uses since.
2. **An ensemble of runs that share a data stream** (same seed and split, different lr or loss):
   E MLPs stacked into one batched model (first layer one wide matrix product, then batched products,
   BatchNorm over E·C channels) against E single steps; plus how far member 0's weights drift from its
   single run after the timed steps (a different summation order, so not bit-identical).
3. **Whole runs** of the profile's kind (15 epochs, NC measured after epochs 1, 2, 3, 5, 7, 10 and 15),
   before (loop SGD) and after (fused SGD), and, with fused SGD, a run that measures NC only after its last epoch — what
   ``ncmse.study.curves_only_where_drawn`` gives every run whose curve the chapter does not draw.
4. **Where a step's time goes**: torch.profiler's self time of the matrix products (``aten::mm``,
   ``aten::addmm``) in the chapter's own step, against the step's wall time measured without the
   profiler; with the whole runs of 3, the share of a run that is matrix products
   (``ncmse.costs.step_breakdown`` turns it into the least time the chapter could take).
5. **torch.compile** of the step's forward and backward (inductor, C++ on the CPU): its first-call
   time and its steady steps against eager steps, alternated round by round (``--skip-compile``: not
   measured).

Timings belong here, never in tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _report import write_report  # noqa: E402
from torch import nn  # noqa: E402

import ncmse.train as T  # noqa: E402
from ncmse.costs import StepBreakdown, training_steps  # noqa: E402
from ncmse.losses import loss_module  # noqa: E402
from ncmse.machine import device_description  # noqa: E402
from ncmse.models import build_model  # noqa: E402
from ncmse.profiles import profile_config  # noqa: E402

K, B, HIDDEN = 10, 128, 256
GEMM_OPS = StepBreakdown.GEMM_OPS          # the profiler's names of matrix products (forward addmm, backward mm)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


class StackedMLP(nn.Module):
    """E copies of ``ncmse.models.MLP`` (784 → 256 → 256 → d → K, BatchNorm, ReLU) as one batched model,
    initialised from E single MLPs; forward returns logits (E, B, K).  A measurement prototype only."""

    def __init__(self, singles: list[nn.Module], d: int):
        super().__init__()
        E = len(singles)
        lin = [[m.body[i] for m in singles] for i in (1, 4, 7)]
        self.W1 = nn.Parameter(torch.cat([m.weight.detach() for m in lin[0]]))                 # (E·256, 784)
        self.b1 = nn.Parameter(torch.cat([m.bias.detach() for m in lin[0]]))
        self.W2 = nn.Parameter(torch.stack([m.weight.detach() for m in lin[1]]))               # (E, 256, 256)
        self.b2 = nn.Parameter(torch.stack([m.bias.detach() for m in lin[1]])[:, None])
        self.W3 = nn.Parameter(torch.stack([m.weight.detach() for m in lin[2]]))               # (E, d, 256)
        self.b3 = nn.Parameter(torch.stack([m.bias.detach() for m in lin[2]])[:, None])
        self.Wf = nn.Parameter(torch.stack([m.fc.weight.detach() for m in singles]))           # (E, K, d)
        self.bf = nn.Parameter(torch.stack([m.fc.bias.detach() for m in singles])[:, None])
        self.bn = nn.ModuleList([nn.BatchNorm1d(E * HIDDEN), nn.BatchNorm1d(E * HIDDEN), nn.BatchNorm1d(E * d)])
        self.E, self.d = E, d

    def _bn_relu(self, h, i):                     # h (E, B, C) → BatchNorm per member and channel → ReLU
        E, n, C = h.shape
        return torch.relu(self.bn[i](h.transpose(0, 1).reshape(n, E * C))).view(n, E, C).transpose(0, 1)

    def forward(self, x):                         # x (B, 784)
        n = x.shape[0]
        h = torch.relu(self.bn[0](torch.addmm(self.b1, x, self.W1.t()))).view(n, self.E, HIDDEN).transpose(0, 1)
        h = self._bn_relu(torch.baddbmm(self.b2, h, self.W2.transpose(1, 2)), 1)
        h = self._bn_relu(torch.baddbmm(self.b3, h, self.W3.transpose(1, 2)), 2)
        return torch.baddbmm(self.bf, h, self.Wf.transpose(1, 2))


def optimizer_cell(rounds: int, steps: int) -> dict:
    x, y = torch.randn(B, 1, 28, 28), torch.randint(0, K, (B,))
    crit = loss_module("mse", convention="torch")
    setups = {}
    for name, kw in (("loop", {"foreach": False}), ("fused", {"fused": True})):
        torch.manual_seed(0)
        m = build_model("mlp", (1, 28, 28), K, 16)
        setups[name] = (m, torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, **kw))
    times = {k: [] for k in setups}
    for _ in range(rounds):
        for name, (m, opt) in setups.items():
            t = time.perf_counter()
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                loss = crit(m(x), y)
                float(loss.detach())
                loss.backward()
                opt.step()
            times[name].append((time.perf_counter() - t) / steps)
    drift = max(float((a - b).detach().abs().max()) for a, b in zip(setups["loop"][0].parameters(),
                                                           setups["fused"][0].parameters(), strict=True))
    ratio = statistics.median(f / lo for f, lo in zip(times["fused"], times["loop"], strict=True))
    return {"loop_step_ms": median_ms(times["loop"]), "fused_step_ms": median_ms(times["fused"]),
            "fused_over_loop": ratio, "max_weight_difference": drift, "steps": steps * rounds}


def ensemble_cell(rounds: int, steps: int, sizes=(4, 12)) -> list[dict]:
    x, y = torch.randn(B, 784), torch.randint(0, K, (B,))
    Y = nn.functional.one_hot(y, K).float()
    out = []
    for E in sizes:
        singles = []
        for _ in range(E):
            torch.manual_seed(0)
            singles.append(build_model("mlp", (1, 28, 28), K, 16))
        stacked = StackedMLP(singles, 16)
        one = singles[0]
        opt1 = torch.optim.SGD(one.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, fused=True)
        optE = torch.optim.SGD(stacked.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, fused=True)
        x4 = x.view(B, 1, 28, 28)
        times = {"single": [], "ensemble": []}
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(steps):
                opt1.zero_grad(set_to_none=True)
                loss = ((one(x4) - Y) ** 2).mean()
                float(loss.detach())
                loss.backward()
                opt1.step()
            times["single"].append((time.perf_counter() - t) / steps)
            t = time.perf_counter()
            for _ in range(steps):
                optE.zero_grad(set_to_none=True)
                losses = ((stacked(x) - Y) ** 2).mean(dim=(1, 2))           # (E,): each member's own loss
                losses.detach().tolist()
                losses.sum().backward()
                optE.step()
            times["ensemble"].append((time.perf_counter() - t) / steps)
        speedup = statistics.median(E * s / e for s, e in zip(times["single"], times["ensemble"], strict=True))
        drift = float((stacked.W2[0] - one.body[4].weight).detach().abs().max())
        out.append({"members": E, "single_step_ms": median_ms(times["single"]),
                    "ensemble_step_ms": median_ms(times["ensemble"]), "speedup": speedup,
                    "member0_max_weight_difference": drift, "steps": steps * rounds})
    return out


def _chapter_step(d: int = 16):
    """The chapter's kind of step (cpu profile, MSE, fused SGD from ``ncmse.train.make_optimizer``) on a
    fixed random batch: returns ``step()``, which runs one forward, backward and update."""
    cfg = profile_config("cpu", d=d, loss="mse")
    torch.manual_seed(0)
    model = build_model("mlp", (1, 28, 28), K, d)
    opt = T.make_optimizer(model, cfg)
    crit = loss_module(cfg.loss, cfg.alpha, cfg.M, convention=cfg.mse_convention)
    x, y = torch.randn(cfg.batch_size, 1, 28, 28), torch.randint(0, K, (cfg.batch_size,))

    def forward_backward(model, x, y):
        loss = crit(model(x), y)
        loss.backward()
        return loss.detach()

    def step(fb=forward_backward):
        opt.zero_grad(set_to_none=True)
        float(fb(model, x, y))
        opt.step()
    return step, forward_backward, model


def breakdown_cell(rounds: int, steps: int) -> dict:
    """The step's wall time (median over rounds, no profiler) and the matrix products' part of it
    (torch.profiler self time over ``steps`` profiled steps), with the profiler's five costliest ops."""
    from torch.profiler import ProfilerActivity, profile

    step, _, _ = _chapter_step()
    for _ in range(20):                                  # warm-up: allocator, MKL's buffers
        step()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - t) / steps)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    per_step = {e.key: e.self_cpu_time_total / 1e3 / steps for e in events}           # µs in all → ms a step
    gemm_ms = sum(per_step.get(k, 0.0) for k in GEMM_OPS)
    step_ms = median_ms(times)
    top = dict(sorted(per_step.items(), key=lambda kv: -kv[1])[:5])
    return {"step_ms": step_ms, "gemm_ms": gemm_ms, "gemm_share_of_step": gemm_ms / step_ms,
            "top_ops_ms": top, "profiled_steps": steps, "timed_steps": steps * rounds}


def compile_cell(rounds: int, steps: int) -> dict:
    """torch.compile of the forward and backward (the update stays torch's fused SGD): the first
    compiled step's seconds (compiling it, from an empty cache) and compiled over eager step time,
    alternated round by round."""
    import tempfile

    # a cold compile, as in a fresh clone: an empty inductor cache of its own (read when compiling)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ncmse-inductor-")
    torch._dynamo.reset()
    eager_step, fb, _ = _chapter_step()
    compiled_step, fb2, _ = _chapter_step()
    compiled = torch.compile(fb2)
    t = time.perf_counter()
    compiled_step(compiled)
    first_s = time.perf_counter() - t
    for _ in range(20):
        eager_step()
        compiled_step(compiled)
    times = {"eager": [], "compiled": []}
    for _ in range(rounds):
        for name, run in (("eager", eager_step), ("compiled", lambda: compiled_step(compiled))):
            t = time.perf_counter()
            for _ in range(steps):
                run()
            times[name].append((time.perf_counter() - t) / steps)
    ratio = statistics.median(c / e for c, e in zip(times["compiled"], times["eager"], strict=True))
    return {"first_step_s": first_s, "eager_step_ms": median_ms(times["eager"]),
            "compiled_step_ms": median_ms(times["compiled"]), "compiled_over_eager": ratio,
            "steps": steps * rounds}


def runs_cell(rounds: int, epochs: int = 15) -> dict:
    cfg = profile_config("cpu", d=16, loss="mse")
    cfg = cfg.replace(epochs=epochs, nc_epochs=tuple(e for e in cfg.nc_epochs if e <= epochs))
    fused_optimizer = T.make_optimizer

    def loop_optimizer(model, config):
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, foreach=False)

    variants = {"before": (loop_optimizer, cfg), "after": (fused_optimizer, cfg),
                "after_final_nc_only": (fused_optimizer, cfg.replace(nc_epochs=()))}
    times = {k: [] for k in variants}
    acc = {}
    T.train(cfg.replace(epochs=1, nc_epochs=()), progress=False)          # warm-up: data, allocator
    try:
        for _ in range(rounds):
            for name, (make, config) in variants.items():
                T.make_optimizer = make
                t = time.perf_counter()
                r = T.train(config, progress=False)
                times[name].append(time.perf_counter() - t)
                acc[name] = r["test"]["accuracy"]
    finally:
        T.make_optimizer = fused_optimizer
    ratio = {k: statistics.median(a / b for a, b in zip(times[k], times["before"], strict=True)) for k in times}
    return {"config": f"cpu profile: Fashion-MNIST, MLP, d=16, MSE, 1,000 images a class, {epochs} epochs",
            "seconds": {k: statistics.median(v) for k, v in times.items()}, "over_before": ratio,
            "test_accuracy": acc, "steps": training_steps(cfg)}


def summary(report: dict) -> dict:
    o, runs, b, c = report["optimizer"], report["runs"], report["breakdown"], report.get("compile")
    ens = ", ".join(f"{e['members']} MLPs {e['speedup']:.2f}×" for e in report["ensemble"])
    share = StepBreakdown.from_report(report).gemm_share_of_run
    compiled = (f"; torch.compile: {c['first_step_s']:.0f} s to compile, steps {c['compiled_over_eager']:.2f}× "
                "eager's time" if c else "")
    return {"what": ("one cpu-profile run, 1 thread: fused SGD, NC measured only at the end, ensembles sharing "
                     "batches, where a step's time goes, torch.compile"),
            "result": (f"fused SGD: a step {o['fused_over_loop']:.2f}× the loop's time, a whole run "
                       f"{runs['over_before']['after']:.2f}× "
                       f"before ({runs['over_before']['after_final_nc_only']:.2f}× measuring NC only at the end); "
                       f"ensembles sharing batches: {ens} (not kept); matrix products "
                       f"{b['gemm_share_of_step']:.0%} of a step, {share:.0%} of a run"
                       f"{compiled}"),
            "machine": report["machine"]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--run-rounds", type=int, default=3, help="rounds of whole runs (each ~15 s)")
    p.add_argument("--steps", type=int, default=100, help="timed steps per round and variant")
    p.add_argument("--epochs", type=int, default=15, help="epochs of the whole runs (the profile's: 15)")
    p.add_argument("--skip-compile", action="store_true", help="do not time torch.compile (it compiles C++)")
    p.add_argument("--out", default=None, help="folder for step_cpu.json (e.g. benchmarks/results)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    report = {"machine": device_description(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "optimizer": optimizer_cell(args.rounds, args.steps),
              "ensemble": ensemble_cell(args.rounds, max(10, args.steps // 4)),
              "runs": runs_cell(args.run_rounds, args.epochs),
              "breakdown": breakdown_cell(args.rounds, args.steps)}
    if not args.skip_compile:
        report["compile"] = compile_cell(args.rounds, args.steps)
    write_report(report, args.out, "step_cpu.json", summary, "benchmarks/step_bench.py")


if __name__ == "__main__":
    main()

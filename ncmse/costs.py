"""What the deep-network studies cost at each profile (the page "Running at the paper's scale"): the
study ``deep`` of the chapter "Deep networks" and ``cifar10`` of the chapter "CIFAR-10" (whose
``paper`` runs are among the deep study's).

The amount of work comes from the settings (:func:`ncmse.study.plan`: runs × epochs × training
images); the rates come from the benchmarks that measured them (``benchmarks/results``), each on its
own device and model: a CPU rate for the MLP of the ``cpu`` profile (``threads_bench.py``), one for the
small CNN of the CIFAR-10 chapter (``precision_check.py``), a GPU rate
for ResNet18 on CIFAR-10 (``device_deep_check.py``), and the deep study's whole training at ``cpu``
timed from an empty cache (``chapter_bench.py``: :func:`chapter_benchmark`), with the share of a run
that is matrix products (``step_bench.py``: :func:`step_breakdown`).  An hour figure is
*measured* only where the rate was measured on that very workload; everything else is labelled
*extrapolated*, and a profile with no rate for its model says so instead of guessing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .paths import ROOT
from .profiles import STUDIES, profile_config, study_profiles
from .study import plan

__all__ = ["paper_gpu_hours", "Rate", "rates", "cost_rows", "cost_table", "precision_check", "PrecisionSummary",
           "precision_summary", "StepsHere", "steps_here", "training_steps", "ChapterMode", "ChapterBenchmark",
           "chapter_benchmark", "StepBreakdown", "step_breakdown", "device_name"]

RESULTS = ROOT / "benchmarks" / "results"


def paper_gpu_hours(results: Path = RESULTS) -> float | None:
    """The GPU hours the paper profile would take by ``benchmarks/device_deep_check.py``'s extrapolation
    (its ``paper_gpu_hours_estimate``), or None where that benchmark has not been run."""
    path = Path(results) / "device_deep_check_h200.json"
    return float(json.loads(path.read_text())["paper_gpu_hours_estimate"]) if path.exists() else None


@dataclass(frozen=True)
class Rate:
    """Seconds per training image (one image through one SGD step) of ``model`` on ``machine``, run as
    ``setup`` (processes × threads; '' on a GPU), in ``precision`` ('' where the report does not say)."""

    model: str
    machine: str
    setup: str
    seconds_per_image: float
    source: str                # the benchmark report it comes from
    note: str = ""
    precision: str = ""

    @property
    def device(self) -> str:
        return device_name(self.machine, self.setup)


def device_name(machine: str, setup: str = "") -> str:
    """The cost table's device: the machine, then its setup (processes × threads) where there is one."""
    return f"{machine}, {setup}" if setup else machine


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
        out.append(Rate("mlp", r["machine"], "1 process × 2 threads", quiet(2) / images, threads.name,
                        "the training time of one run"))
        out.append(Rate("mlp", r["machine"], "2 workers × 1 thread", quiet(1) / images / 2, threads.name,
                        "two runs at once, each at the speed of one run with 1 thread"))
    precision = results / "precision_cpu.json"
    if precision.exists():
        r = json.loads(precision.read_text())
        images = r["base"]["epochs"] * r["base"]["n_per_class"] * 10
        for p in ("bf16", "fp32"):
            seconds = sorted(x["seconds"] for x in r["runs"] if x["precision"] == p)
            out.append(Rate("cnn", r["machine"], "1 process × 1 thread", seconds[len(seconds) // 2] / images,
                            precision.name, f"{p}, the median run of the precision check", p))
    deep = results / "device_deep_check_h200.json"
    if deep.exists():
        r = json.loads(deep.read_text())
        out.append(Rate("resnet18", r["gpu"], "", r["seconds_per_image"], deep.name,
                        "fp32, batch 128, runs of 2 epochs on 5,000 images", "fp32"))
    return out


def cost_rows(results: Path = RESULTS) -> list[dict]:
    """One row per study, profile and matching rate: the plan, and the hours it takes at that rate on
    ``device`` (the machine and ``setup``, its processes × threads; '' on a GPU).  A rate matches the
    profile's model, and its precision where a rate of that precision was measured (precision "auto"
    resolved on this machine)."""
    rows = []
    known = rates(results)
    for name in STUDIES:
        for profile in study_profiles(name):
            p = plan(profile, name)
            config = profile_config(profile, name)
            model = config.model
            matching = [r for r in known if r.model == model]
            matching = [r for r in matching if r.precision == config.precision] or matching
            base = {"study": name, "profile": profile, "model": model, "runs": p.runs, "tuning": p.tuning,
                    "test": p.test, "epochs": p.epochs, "images": p.images, "image_epochs": p.image_epochs}
            if not matching:
                rows.append({**base, "device": "—", "setup": "", "hours": None, "measured": False,
                             "source": "no rate measured for this model",
                             "kind": "no rate measured for this model"})
            for r in matching:
                rows.append({**base, "device": r.device, "setup": r.setup,
                             "hours": p.image_epochs * r.seconds_per_image / 3600,
                             "source": f"{r.source}: {r.note}" if r.note else r.source,
                             "kind": f"extrapolated from {r.source}" + (f" ({r.note})" if r.note else ""),
                             "measured": False})
            if name == "deep" and profile == "cpu":
                bench = chapter_benchmark(results)
                for m in bench.modes if bench else ():
                    rows.append({**base, "device": device_name(bench.machine, m.executor), "setup": m.executor,
                                 "hours": m.seconds / 3600,
                                 "source": f"{CHAPTER_REPORT}: the whole study from an empty cache",
                                 "kind": f"measured by {CHAPTER_REPORT}", "measured": True})
    return rows


CHAPTER_REPORT = "chapter_cpu.json"
_EXECUTORS = {"local": "2 workers × 1 thread", "busy": "2 workers × 1 thread, beside a busy process",
              "sequential": "1 process"}


@dataclass(frozen=True)
class ChapterMode:
    """One mode of ``benchmarks/chapter_bench.py``: the deep study at ``cpu`` trained from an empty
    cache by ``executor``, in ``seconds`` (``tuning_seconds`` of them for the learning-rate tuning);
    ``run_seconds``: the runs' own training seconds added up; ``fingerprint``: of every run's accuracy."""

    mode: str
    executor: str
    seconds: float
    tuning_seconds: float
    runs: int
    run_seconds: float
    fingerprint: str


@dataclass(frozen=True)
class ChapterBenchmark:
    """``benchmarks/chapter_bench.py``'s report: its :class:`ChapterMode` s, the ``machine``, the
    ratios the build's goals are about: ``busy_over_quiet`` (local beside a busy process over local
    alone) and ``sequential_over_local``, NaN where a mode is missing; ``same_numbers``: every mode
    trained the same accuracies; ``baseline``: (git revision, seconds) of the local mode timed with
    older code in the same session (``--baseline``), or None."""

    modes: tuple
    machine: str
    baseline: tuple | None = None

    def mode(self, name: str) -> ChapterMode | None:
        return next((m for m in self.modes if m.mode == name), None)

    def _ratio(self, a: str, b: str) -> float:
        ma, mb = self.mode(a), self.mode(b)
        return ma.seconds / mb.seconds if ma and mb else math.nan

    @property
    def busy_over_quiet(self) -> float:
        return self._ratio("busy", "local")

    @property
    def sequential_over_local(self) -> float:
        return self._ratio("sequential", "local")

    @property
    def same_numbers(self) -> bool:
        return len({m.fingerprint for m in self.modes}) == 1

    def sentence(self, busy_goal: float = 2.5) -> str:
        """What the report says, in words: each mode's minutes and the two ratios (``busy_goal``: the
        slow-down beside a busy process that the build must stay within)."""
        parts = []
        if (m := self.mode("local")) is not None:
            parts.append(f"On {self.machine}, the chapter's {m.runs} runs took {m.seconds / 60:.1f} minutes with "
                         f"{m.executor} ({m.tuning_seconds / 60:.1f} of them for the learning-rate tuning).")
        if (m := self.mode("busy")) is not None and not math.isnan(self.busy_over_quiet):
            within = "within" if self.busy_over_quiet <= busy_goal else "above"
            parts.append(f"Beside a busy process they took {m.seconds / 60:.1f} minutes, "
                         f"{self.busy_over_quiet:.2f}× the quiet time ({within} the {busy_goal:g}× the build "
                         "allows itself).")
        if (m := self.mode("sequential")) is not None and not math.isnan(self.sequential_over_local):
            parts.append(f"One after another in a single process they took {m.seconds / 60:.1f} minutes, "
                         f"{self.sequential_over_local:.2f}× the workers' time.")
        if self.baseline is not None and (m := self.mode("local")) is not None:
            rev, seconds = self.baseline
            parts.append(f"In the same session the code of commit {rev} took {seconds / 60:.1f} minutes for the "
                         f"same training, so this code takes {m.seconds / seconds:.2f}× its time.")
        parts.append("Every way trained the same accuracies, run by run." if self.same_numbers else
                     "The ways did not train the same accuracies.")
        return " ".join(parts)

    def currency(self, runs_now: int) -> str:
        """One sentence where the report no longer describes this build: a study of another size than
        today's ``runs_now`` (``ncmse.study.plan("cpu").trainings``), or another machine than this one
        (by name and capability); empty where it does."""
        from .hardware import capability
        from .machine import device_description

        parts = []
        m = self.mode("local") or (self.modes[0] if self.modes else None)
        if m is not None and m.runs != runs_now:
            parts.append(f"The report is of a study of {m.runs} runs; today's has {runs_now}, so its times are "
                         "not this chapter's.")
        here = f"{device_description()}, {capability()}"
        if not self.machine.startswith(device_description()):
            parts.append(f"It was made on {self.machine}; this build runs on {here}, so its times are a fact about "
                         "that machine only (the status page has this build's own).")
        return " ".join(parts)

    def table(self) -> str:
        """Markdown: one row per mode (minutes, of which tuning, runs, the runs' summed seconds)."""
        from .plotting import markdown_table

        base = self.mode("local")
        rows = [(m.executor, m.seconds / 60, m.tuning_seconds / 60, m.runs, m.run_seconds,
                 m.seconds / base.seconds if base else math.nan) for m in self.modes]
        return markdown_table(rows, ["executor", "minutes", "of which tuning", "runs", "runs' own seconds, summed",
                                     "× the 2 workers' time"], formats=[None, ".1f", ".1f", None, ".0f", ".2f"])


def chapter_benchmark(results: Path = RESULTS) -> ChapterBenchmark | None:
    """:class:`ChapterBenchmark` of the report in ``results`` (modes in the order local, busy,
    sequential), or None where ``benchmarks/chapter_bench.py`` has not been run at ``cpu``."""
    path = results / CHAPTER_REPORT
    if not path.exists():
        return None
    r = json.loads(path.read_text())
    if r.get("profile", "cpu") != "cpu":
        return None
    modes = tuple(ChapterMode(name, _EXECUTORS[name], m["seconds"], m["tuning_seconds"], m["runs"], m["run_seconds"],
                              m["accuracy_fingerprint"]) for name in _EXECUTORS if (m := r["modes"].get(name)))
    b = r.get("baseline", {}).get("local")
    return ChapterBenchmark(modes, r["machine"], (b["rev"], b["seconds"]) if b else None)


STEP_REPORT = "step_cpu.json"


@dataclass(frozen=True)
class StepBreakdown:
    """``benchmarks/step_bench.py``'s account of one run of the deep chapter's kind (``cpu`` profile,
    MLP, d = 16, MSE, one thread) on ``machine``: ``step_ms``, a training step's wall time;
    ``gemm_ms``, its matrix products (torch.profiler's self time of ``aten::mm`` and ``aten::addmm``);
    ``run_seconds``, a whole run that measures NC only after its last epoch, of ``steps`` SGD steps;
    ``other_op``, the (name, ms a step) of the costliest other operation in the profile, or None;
    ``compile_s`` and ``compiled_over_eager``, torch.compile's first step from an empty cache and its
    steady step time over eager's (NaN where not measured)."""

    step_ms: float
    gemm_ms: float
    run_seconds: float
    steps: int
    machine: str
    other_op: tuple | None = None
    compile_s: float = math.nan
    compiled_over_eager: float = math.nan

    #: the profiler's names of matrix products (``step_bench.GEMM_OPS``)
    GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")

    @classmethod
    def from_report(cls, r: dict) -> StepBreakdown:
        """From the report dict of ``step_bench.py`` (its ``breakdown``, ``runs`` and ``compile`` cells)."""
        b, runs, c = r["breakdown"], r["runs"], r.get("compile") or {}
        others = [(k, v) for k, v in b.get("top_ops_ms", {}).items() if k not in cls.GEMM_OPS]
        return cls(b["step_ms"], b["gemm_ms"], runs["seconds"]["after_final_nc_only"], runs["steps"], r["machine"],
                   max(others, key=lambda kv: kv[1]) if others else None,
                   c.get("first_step_s", math.nan), c.get("compiled_over_eager", math.nan))

    @property
    def gemm_share_of_step(self) -> float:
        return self.gemm_ms / self.step_ms

    @property
    def gemm_share_of_run(self) -> float:
        """The matrix products of every step of the run, at their profiled speed, over the run's seconds."""
        return self.gemm_ms * self.steps / 1e3 / self.run_seconds

    def floor_minutes(self, minutes: float) -> float:
        """What a training of such runs that took ``minutes`` would take if nothing but its matrix
        products cost time: ``minutes`` × :attr:`gemm_share_of_run`."""
        return minutes * self.gemm_share_of_run

    def sentence(self, minutes: float | None = None) -> str:
        """What the report says, in words; with ``minutes`` (the chapter's measured training), the least
        that training could take at this speed of the matrix products."""
        parts = [f"In one run of this kind (d = 16, one thread, on {self.machine}), the matrix products are "
                 f"{self.gemm_share_of_step:.0%} of a training step and {self.gemm_share_of_run:.0%} of the whole "
                 "run."]
        if self.other_op is not None:
            name, ms = self.other_op
            parts.append(f"The rest is spread thin: the costliest other operation, `{name}`, takes "
                         f"{ms / self.step_ms:.0%} of a step, and outside the steps come the batches, the data and "
                         "the evaluation after the last epoch.")
        if minutes is not None:
            parts.append(f"Even if everything but the matrix products cost nothing, the {minutes:.1f} minutes "
                         f"above would still be about {self.floor_minutes(minutes):.1f}.")
        if not math.isnan(self.compiled_over_eager):
            saved = (1 - self.compiled_over_eager) * self.step_ms * self.steps / 1e3
            parts.append(f"`torch.compile` (C++ kernels from inductor) took {self.compile_s:.0f} s to compile the "
                         f"step from an empty cache, and its steps took {self.compiled_over_eager:.2f}× eager's "
                         f"time, {saved:.2f} s of a run. Every worker process would compile at least once, and "
                         "again whenever a new shape or loss fails the compiled graph's guards, and the compiled "
                         "kernels round differently from eager ones: the book does not compile.")
        return " ".join(parts)


def step_breakdown(results: Path = RESULTS) -> StepBreakdown | None:
    """:class:`StepBreakdown` of ``step_bench.py``'s report in ``results``, or None where there is none
    (or it predates the breakdown)."""
    path = results / STEP_REPORT
    if not path.exists():
        return None
    r = json.loads(path.read_text())
    return StepBreakdown.from_report(r) if "breakdown" in r and "steps" in r.get("runs", {}) else None


def cost_table(results: Path = RESULTS) -> str:
    """:func:`cost_rows` as a Markdown table."""
    from .plotting import markdown_table

    def hours(h):
        if h is None:
            return "—"
        return f"{h * 3600:.0f} s" if h < 1 / 60 else f"{h * 60:.1f} min" if h < 1 else f"{h:.1f} h"

    rows = [(f"{r['study']}, {r['profile']} ({r['model']})", f"{r['runs']} ({r['tuning']} + {r['test']})",
             f"{r['epochs']} × {r['images']:,}", r["device"], hours(r["hours"]),
             "—" if r["hours"] is None else "measured" if r.get("measured") else "extrapolated", r["source"])
            for r in cost_rows(results)]
    return markdown_table(rows, ["study, profile (model)", "runs (tuning + test)", "epochs × images", "device",
                                 "time", "how", "from"])


def precision_check(results: Path = RESULTS) -> dict | None:
    """The report of ``benchmarks/precision_check.py`` (bf16 against fp32 side by side on the chapter
    "CIFAR-10"'s runs: ``comparison`` per loss and d, ``within_noise``, ``bf16_over_fp32_seconds``,
    ``compile``, ``summary``), or None where it has not been run."""
    path = results / "precision_cpu.json"
    return json.loads(path.read_text()) if path.exists() else None


@dataclass(frozen=True)
class PrecisionSummary:
    """What the chapter "CIFAR-10" says about the precision check's report: ``table`` (Markdown, one row
    per loss and d: fp32 and bf16 seed-mean test accuracy, gap, standard error, clear or not),
    ``within_noise`` (no clear gap), ``same_kind`` (the check trained the chapter's kind of run: its
    base configuration equals ``base`` but for epochs, NC epochs and precision), ``epochs`` and
    ``seeds`` of the check, ``machine``, ``bf16_over_fp32`` (training time ratio), and for
    torch.compile ``compile_s`` (cold compile time), ``compile_speedup`` (steady steps, compiled over
    eager; above 1 is faster) and ``break_even_steps`` (steps to pay the compile back; None: never)."""

    table: str
    within_noise: bool
    same_kind: bool
    epochs: int
    seeds: str
    machine: str
    capability: str            # the checking machine's (ncmse.hardware.capability); "not recorded" in old reports
    bf16_over_fp32: float
    compile_s: float
    compile_speedup: float
    break_even_steps: float | None

    @property
    def machine_here(self) -> bool:
        """Whether the check ran on this kind of machine (same CPU model, cores and capability): only then
        are its timings a statement about this build."""
        from .hardware import capability
        from .machine import device_description

        return self.machine == device_description() and self.capability == capability()

    def where_sentence(self) -> str:
        """Whether the check's timings describe this build's machine (one sentence for the page)."""
        if self.machine_here:
            return "That machine is this build's own."
        from .hardware import capability
        from .machine import device_description

        return (f"That is not this build's machine ({device_description()}, {capability()}): its timings are a "
                "fact about that machine only; the step times measured above are this machine's.")

    def compile_pays_within(self, steps: int) -> bool:
        """Whether torch.compile's time is paid back within ``steps`` steps."""
        return self.break_even_steps is not None and self.break_even_steps <= steps


def training_steps(config, K: int = 10) -> int:
    """The SGD steps of one run of ``config`` (a ``RunConfig`` with ``n_per_class`` set): epochs ×
    ⌈K · n_per_class / batch_size⌉ (the last, incomplete batch is kept)."""
    return config.epochs * -(-config.n_per_class * K // config.batch_size)


def precision_summary(base, results: Path = RESULTS) -> PrecisionSummary | None:
    """:class:`PrecisionSummary` of :func:`precision_check`'s report against the base run ``base`` (a
    ``RunConfig``), or None where the check has not been run."""
    from .plotting import markdown_table

    r = precision_check(results)
    if r is None:
        return None
    rows = [(c["loss"].upper(), c["d"], c["fp32"], c["bf16"], c["gap"], c["se"], "yes" if c["clear"] else "no")
            for c in r["comparison"]]
    table = markdown_table(rows, ["loss", "d", "fp32 test acc", "bf16 test acc", "bf16 − fp32", "std. error",
                                  "clear gap"], formats=[None, None, ".3f", ".3f", "+.3f", ".3f", None])
    ignore = ("epochs", "nc_epochs", "precision")
    same = ({k: v for k, v in r["base"].items() if k not in ignore}
            == {k: v for k, v in base.to_dict().items() if k not in ignore})
    c = r.get("compile") or {}
    return PrecisionSummary(table=table, within_noise=bool(r["within_noise"]), same_kind=same,
                            epochs=r["base"]["epochs"], seeds=", ".join(map(str, r["seeds"])), machine=r["machine"],
                            capability=r.get("capability", "capability not recorded"),
                            bf16_over_fp32=r["bf16_over_fp32_seconds"], compile_s=c.get("compile_s", math.nan),
                            compile_speedup=c.get("speedup", math.nan), break_even_steps=c.get("break_even_steps"))


@dataclass(frozen=True)
class StepsHere:
    """One training step of a run's model, measured on the machine that builds the page
    (:func:`steps_here`): ``ms[(precision, layout)]`` in milliseconds for precision in fp32, bf16 and
    layout in "nchw", "channels-last"; the ``machine`` and its ``capability``; the ``precision`` and
    ``channels_last`` that this build's runs use (``ncmse.hardware``'s decisions)."""

    machine: str
    capability: str
    ms: dict
    precision: str
    channels_last: bool

    def best(self, precision: str) -> float:
        """The faster layout's step time in ``precision``."""
        return min(v for (p, _), v in self.ms.items() if p == precision)

    @property
    def bf16_over_fp32(self) -> float:
        """Step time in bf16 over fp32, each in its faster layout (below 1: bf16 is faster here)."""
        return self.best("bf16") / self.best("fp32")

    @property
    def table(self) -> str:
        from .plotting import markdown_table

        rows = [(p, f"{self.ms[(p, 'nchw')]:.0f}", f"{self.ms[(p, 'channels-last')]:.0f}") for p in ("fp32", "bf16")]
        return markdown_table(rows, ["precision", "step, NCHW (ms)", "step, channels-last (ms)"])


def steps_here(base, in_shape: tuple[int, ...] = (3, 32, 32)) -> StepsHere:
    """:class:`StepsHere` for the model and batch size of ``base`` (a ``RunConfig``) on this machine's
    CPU: a few steps of each precision and layout, in this process (a few seconds; more where bf16 is
    emulated), with this process's threads."""
    from .hardware import capability, channels_last, measure_layout
    from .machine import device_description

    ms = {}
    for precision in ("fp32", "bf16"):
        t = measure_layout(base.model, precision, in_shape, base.batch_size, d=base.d)
        ms[(precision, "nchw")], ms[(precision, "channels-last")] = t["nchw_ms"], t["channels_last_ms"]
    return StepsHere(device_description(), capability(), ms, base.precision,
                     channels_last(base.model, base.precision, "cpu", in_shape, base.batch_size))

"""Execute every chapter with papermill at a profile, then build the HTML book (Jupyter Book 1.x).

Chapters are MyST-markdown notebooks (jupytext) under ``book/``; pages without a ``kernelspec`` are
plain Markdown.  Executed notebooks are written to ``_build/stage/`` (a copy of the book's sources with
each notebook replaced by its executed ``.ipynb``), never over the sources; the site is built from that
stage with execution off, strictly (``-W -n --keep-going``), into ``_build/html``.

A chapter's kernel gets ``NCMSE_DOWNLOADS``, a folder of its own beside its executed notebook
(:func:`downloads_of`) where ``ncmse.results.download_link`` writes the files the page offers (its
runs as CSV); they are staged next to the page, and Sphinx's ``{download}`` role copies them into the
site.

A run of some chapters only (``--chapters``) re-executes those and reuses the last execution of the
others; the site is built only when every chapter has been executed at least once, and otherwise the
run says so in one line before executing anything (:func:`run`; ``--no-build`` executes the named
chapters on a fresh clone).

Per-chapter timings go to ``_build/timings.json``; the status page (``book/status.md``) gets a table of
them, with the device and package versions, in the stage.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import yaml

from . import threads
from .machine import device_description
from .paths import ROOT
from .profiles import DEFAULT_PROFILE, check_profile

__all__ = ["ROOT", "toc_files", "is_notebook", "execute_chapter", "downloads_of", "never_executed", "build_book",
           "html_dir", "run", "ChapterResult"]

STATUS_MARKER = "<!-- status-table -->"
PACKAGES = ("torch", "torchvision", "numpy", "matplotlib", "seaborn", "papermill", "jupytext",
            "jupyter-book", "myst-nb", "sphinx")


@dataclass
class ChapterResult:
    """How one chapter's execution went (:func:`execute_chapter`), as stored in ``_build/timings.json``
    and shown on the status page."""

    chapter: str          # toc entry, e.g. "book/ufm_global_optimality"
    profile: str
    seconds: float
    ok: bool
    error: str = ""
    finished: str = ""    # UTC time stamp
    device: str = ""
    executor: str = ""    # where the chapter's deep-network runs trained
    concurrent: int = 1   # chapters executing at once while this one did (their times overlap)


def toc_files(root: Path = ROOT) -> list[str]:
    """All ``file`` entries of ``_toc.yml`` (root first), without extension, in reading order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    out = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                out.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(toc)
    return out


def source_of(entry: str, root: Path = ROOT) -> Path:
    """The source file of a toc entry (``.md`` or ``.ipynb``); errors if missing or ambiguous."""
    found = [root / f"{entry}{ext}" for ext in (".md", ".ipynb") if (root / f"{entry}{ext}").exists()]
    if not found:
        raise FileNotFoundError(f"_toc.yml lists {entry!r} but neither {entry}.md nor {entry}.ipynb exists")
    if len(found) > 1:
        raise ValueError(f"{entry} exists both as .md and .ipynb; keep one source per chapter")
    return found[0]


def is_notebook(path: Path) -> bool:
    """Whether a source is a notebook: an ``.ipynb``, or Markdown whose front matter has a kernelspec."""
    if path.suffix == ".ipynb":
        return True
    text = path.read_text()
    if not text.startswith("---"):
        return False
    end = text.find("\n---", 3)
    front = yaml.safe_load(text[3:end]) if end > 0 else None
    return isinstance(front, dict) and "kernelspec" in front


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def _ipc_kernel_manager(env: dict):
    """A Jupyter kernel manager whose kernel gets the environment ``env`` (not this process's, so that
    chapters executing at once in threads each give their kernel its own) and talks to it over Unix
    sockets instead of TCP: the kernel is local anyway, and ipykernel warns on every start that
    unencrypted TCP can be eavesdropped."""
    from jupyter_client.manager import KernelManager
    from traitlets import CaselessStrEnum

    class IPCKernelManager(KernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        def __init__(self, **kw):
            super().__init__(**kw)
            # sockets of their own: by default every kernel started from one folder takes the paths
            # kernel-ipc-1, -2, …, and two starting at once take the same ones
            self.ip = os.path.join(tempfile.gettempdir(), f"ncmse-kernel-{uuid.uuid4().hex[:12]}")

        async def _async_pre_start_kernel(self, **kw):
            kw["env"] = dict(env)
            return await super()._async_pre_start_kernel(**kw)

    return IPCKernelManager


def execute_chapter(src: Path, out: Path, profile: str = DEFAULT_PROFILE, *, timeout: int = 3600,
                    cwd: Path = ROOT, env: dict | None = None, downloads: Path | None = None) -> ChapterResult:
    """Execute one notebook source with papermill (parameter ``profile``) into ``out`` (.ipynb).

    Never writes to ``src``.  A failing cell does not raise: the result says which cell failed.
    ``env``: variables for the kernel's environment, on top of this process's (which is not changed, so
    that several chapters may execute at once from threads).
    ``downloads``: the folder for the files the chapter offers (``NCMSE_DOWNLOADS``; default
    :func:`downloads_of` ``out``).
    """
    import jupytext
    import papermill as pm

    check_profile(profile)
    out.parent.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(src)
    t0 = time.perf_counter()
    ok, error = True, ""
    # The kernel gets this process's environment with ``env`` on top; a non-interactive MPLBACKEND (Agg)
    # would silently stop every figure from reaching the notebook, so it is left out.
    kernel_env = {**os.environ, **(env or {}), "NCMSE_DOWNLOADS": str(downloads or downloads_of(out))}
    kernel_env.pop("MPLBACKEND", None)
    workers = kernel_env.get("NCMSE_WORKERS", "1")
    executor = f"{workers} local workers" if kernel_env.get("NCMSE_EXECUTOR") == "local" else "sequential"
    try:
        pm.execute_notebook(nb, str(out), parameters={"profile": profile}, kernel_name="python3",
                            cwd=str(cwd), execution_timeout=timeout, progress_bar=False, log_output=False,
                            kernel_manager_class=_ipc_kernel_manager(kernel_env))
    except pm.PapermillExecutionError as exc:
        ok = False
        error = f"cell {exc.cell_index} (execution count {exc.exec_count}): {exc.ename}: {exc.evalue}"
    except Exception as exc:  # kernel died, timeout, bad parameters: still name the chapter
        ok = False
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - t0
    if out.exists():
        _hide_parameter_cells(out)
    return ChapterResult(chapter=str(src.relative_to(ROOT).with_suffix("")) if src.is_relative_to(ROOT) else str(src),
                         profile=profile, seconds=seconds, ok=ok, error=error,
                         finished=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), device=device_description(),
                         executor=executor)


def downloads_of(executed: Path) -> Path:
    """Where the chapter executed into ``executed`` (.ipynb) writes the files it offers for download
    (``ncmse.results.download_link``): the folder ``<name>_downloads`` beside it."""
    return executed.with_name(f"{executed.stem}_downloads")


def missing_figures(executed: Path) -> list[str]:
    """Figure cells (``mystnb.figure`` metadata) of an executed notebook that produced no image.

    With execution off, Jupyter Book renders such a cell as an empty figure without a warning.
    """
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    out = []
    for i, cell in enumerate(nb.cells):
        fig = cell.get("metadata", {}).get("mystnb", {}).get("figure")
        if cell.cell_type != "code" or not fig:
            continue
        images = [o for o in cell.get("outputs", []) if any(k.startswith("image/") for k in o.get("data", {}))]
        if not images:
            out.append(f"cell {i} (figure {fig.get('name', '?')}) produced no image")
    return out


def _hide_parameter_cells(executed: Path) -> None:
    """Tag the ``parameters`` and papermill's ``injected-parameters`` cells ``remove-cell``: the page
    states its profile in prose (``ncmse.profiles.describe``) instead of showing two code cells."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if ("parameters" in tags or "injected-parameters" in tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(nb, executed)


def _stage_sources(stage: Path, root: Path) -> None:
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, stage / name)
    shutil.copytree(root / "book", stage / "book")


def _status_table(timings: dict, versions: dict) -> str:
    from .hardware import capability

    concurrent = max((r.get("concurrent", 1) for r in timings.values()), default=1)
    lines = [f"This build's machine: {device_description()}, {capability()}. "
             + (f"Chapters executed {concurrent} at a time, so their times overlap." if concurrent > 1 else ""),
             "", "| chapter | profile | execution time | finished | device | executor for deep-network runs |",
             "| --- | --- | ---: | --- | --- | --- |"]
    for chapter, r in timings.items():
        state = "" if r["ok"] else " (failed)"
        time_cell = f"{r['seconds']:.1f} s{state}"
        lines.append(f"| {chapter} | `{r['profile']}` | {time_cell} | {r['finished']} | {r['device']} "
                     f"| {r.get('executor') or '—'} |")
    lines += ["", "| package | version |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in versions.items()]
    return "\n".join(lines)


def html_dir(build_dir: Path) -> Path:
    """Where the site of a build folder lands: ``<build_dir>/html`` (Jupyter Book writes
    ``<path-output>/_build/html``, so a build folder named ``_build`` uses its parent as path-output)."""
    return build_dir / "html" if build_dir.name == "_build" else build_dir / "_build" / "html"


def _benchmark_table(root: Path) -> str:
    """The summaries of the reports under ``benchmarks/results``, each written by its own script
    (``benchmarks/_report.py``): what was measured, the result, the machine."""
    rows = []
    for path in sorted((root / "benchmarks" / "results").glob("*.json")):
        try:
            report = json.loads(path.read_text())
            s = report["summary"]
            # a speed is a fact about one CPU: its capability beside its name (older reports lack it)
            cap = report.get("capability", "capability not recorded")
            machine = s["machine"] if cap in s["machine"] else f"{s['machine']} ({cap})"
            rows.append((s["what"], s["result"], machine, s.get("script", "")))
        except (ValueError, KeyError, TypeError):
            rows.append((path.name, "no summary (rerun its benchmark)", "", ""))
    if not rows:
        return ""
    lines = ["", "## Benchmarks", "", "Measured by the scripts in `benchmarks/` (results in `benchmarks/results/`).",
             "", "| what | result | machine | script |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | `{d}` |" for a, b, c, d in rows]
    return "\n".join(lines)


def _drill_table(root: Path) -> str:
    """What the interruption drill (``benchmarks/interrupt_drill.py``: ``benchmarks/results/
    interrupt_drill_cpu.json``) did to a training run's files between kills, one row per damage: the
    file, the damage, the kills after it, the warnings it gave, and whether the run ended bit-identical
    to an uninterrupted one."""
    path = root / "benchmarks" / "results" / "interrupt_drill_cpu.json"
    try:
        report = json.loads(path.read_text())
        kills, damaged = report["kills"], report["damaged_files"]
        rows = [(t["file"], t["damage"], t["signal"], t["kills_after_damage"], t["warnings"],
                 "yes" if t["bit_identical"] else "**no**", "yes" if t["traceback"] else "no")
                for t in damaged["trials"]]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    kept = damaged.get("corrupt_files_kept") or []
    lines = ["", "## Interruptions and damaged files", "",
             f"`benchmarks/interrupt_drill.py` ({report.get('date', '?')}, {report.get('machine', '?')}): one training "
             f"run through the command line, killed {kills['kills_landed']} times at random moments "
             f"({sum(t['bit_identical'] for t in kills['trials'])} of {len(kills['trials'])} completed runs "
             "bit-identical to an uninterrupted one); then its files damaged between kills, each damage followed "
             "by a launch killed at a random moment and a launch to the end. The same key's result was damaged "
             f"{len(kept)} times; every damaged file was kept: {', '.join(f'`{k}`' for k in kept) or 'none'}.", "",
             "| file | damage | signal | kills after it | warnings | bit-identical result | traceback |",
             "| --- | --- | --- | ---: | ---: | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} | {f} | {g} |" for a, b, c, d, e, f, g in rows]
    return "\n".join(lines)


def _archive_table(root: Path) -> str:
    """The committed runs (``data/trained``, ``ncmse.archive``) per study and profile: how many, how
    many of the study's runs that is, and how many today's training code would not reproduce (other
    code fingerprint): they are shown as the record of the commit that trained them."""
    from . import archive
    from .profiles import STUDIES, study_profiles

    rows = []
    for study in STUDIES:
        for profile in study_profiles(study):
            try:
                ours, total = archive.progress(study, profile, root / "data" / "trained")
            except archive.ArchiveError as exc:        # a damaged file: name it, once
                rows.append((study, "—", "unreadable", str(exc), ""))
                break
            if ours:
                rows.append((study, profile, len(ours), total, len(archive.stale_runs(ours))))
    if not rows:
        return ""
    lines = ["", "## Committed runs", "",
             "Runs trained once and committed under `data/trained/` (page CIFAR-10). A run trained by other "
             "training code than this build's is shown as the record of its commit, and counted here as "
             "*other code*.", "", "| study | profile | runs committed | runs of the study | other code |",
             "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    return "\n".join(lines)


def _book_times(root: Path) -> str:
    """The measured time of ``./run.sh book`` at ``cpu`` from a fresh clone, per machine class
    (``benchmarks/chapter_bench.py --book``: ``benchmarks/results/book_cpu.json``)."""
    path = root / "benchmarks" / "results" / "book_cpu.json"
    try:
        classes = json.loads(path.read_text())["classes"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    lines = ["", "## How long the main job takes", "",
             "`./run.sh book` at `cpu` from a fresh clone (empty results cache, no decoded data; the install not "
             "counted), on a quiet machine, per machine class measured (`benchmarks/chapter_bench.py --book`). "
             "A class capped at AVX2 ran on a newer CPU with torch's dispatch and oneDNN limited to AVX2: it shows "
             "what the missing AVX-512 and native bf16 cost, not the speed of any particular AVX2 CPU.", "",
             "| machine class | minutes | every chapter ok | measured |", "| --- | ---: | --- | --- |"]
    for name, r in classes.items():
        ok = "yes" if r.get("ok") else "no"
        lines.append(f"| {name} | {r['seconds'] / 60:.1f} | {ok} | {r.get('finished', '?')} |")
    return "\n".join(lines)


def _cache_table(root: Path, limit: int = 40) -> str:
    """The results cache's entries whose code, data, torch, device or thread count differ from this
    environment (``ResultsCache.audit``): stale ones (other code or data) are retrained when next used."""
    from .cache import ResultsCache

    cache = ResultsCache(root / "data" / "results")
    total = len(cache.entries())
    if not total:
        return ""
    rows = cache.audit()
    lines = ["", "## Results cache", "",
             f"`data/results/` holds {total} run(s); {len(rows)} differ from the environment that built this page "
             f"({sum(r['stale'] for r in rows)} of them stale: trained by other code or on other data, so they "
             "are trained again when a chapter asks for them, never served)."]
    if rows:
        lines += ["", "| run | differs in | torch | device | threads | finished |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in rows[:limit]:
            lines.append(f"| {r['run']} | {', '.join(r['differs'])}{' (stale)' if r['stale'] else ''} | {r['torch']} "
                         f"| {r['device']} | {r['threads']} | {r['finished']} |")
        if len(rows) > limit:
            lines.append(f"\n… and {len(rows) - limit} more.")
    return "\n".join(lines)


def never_executed(entries: list[str], chapters: list[str] | None, executed_dir: Path,
                   root: Path = ROOT) -> list[str]:
    """The notebook entries among ``entries`` that a run executing only ``chapters`` (``None``: all)
    would have to reuse but that have no executed notebook in ``executed_dir`` (never executed there,
    as on a fresh clone), in ``_toc.yml`` order."""
    if chapters is None:
        return []
    return [e for e in entries if e not in chapters and is_notebook(source_of(e, root))
            and not (executed_dir / f"{e}.ipynb").exists()]


def build_book(stage: Path, build_dir: Path) -> int:
    """Build the HTML book from ``stage`` into :func:`html_dir` (strict, execution off)."""
    exe = Path(sys.executable).parent / "jupyter-book"
    path_output = html_dir(build_dir).parent.parent
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(stage), "--path-output", str(path_output),
           "-W", "-n", "--keep-going", "--all"]   # --all: no stale navigation in unchanged pages
    return subprocess.call(cmd)


def run(profile: str = DEFAULT_PROFILE, *, chapters: list[str] | None = None, build: bool = True,
        timeout: int = 3600, root: Path = ROOT, build_dir: Path | None = None, workers: int | None = None,
        concurrent: int | None = None) -> int:
    """Execute the chapters of ``_toc.yml`` (or the named subset) and build the book; 0 on success.

    Everything is written below ``build_dir`` (default ``root/_build``; the site in :func:`html_dir`).
    ``chapters``: execute only these ``_toc.yml`` entries and reuse the last execution of the others
    (``build_dir/executed``); one whose last execution failed fails the run.  The site shows each
    chapter's executed notebook, so it is built only when every chapter has been executed at least
    once: where one outside ``chapters`` never was (a fresh clone), the run stops before executing
    anything, with one line (``ValueError``) naming those chapters and the ways out (run without
    ``chapters``, name them too, or ``build=False``).  With ``build=False`` the named chapters are
    executed on their own and the never-executed ones are listed in one note.
    ``workers``: the deep-network runs train in that many local processes (``ncmse.executors.Local``,
    one thread each on a 2-core machine); default the machine's cores; 1 trains them in the kernel.
    Every kernel gets the thread budget of ``ncmse.threads.default_threads`` (all cores but one), so
    that a busy machine does not make its OpenMP threads spin against each other.
    ``concurrent``: how many chapters execute at once (default: 2 where the machine has 2 cores or
    more, else 1); their execution times on the status page then overlap.
    """
    check_profile(profile)
    workers = workers or os.cpu_count() or 1
    concurrent = concurrent or min(2, os.cpu_count() or 1)
    kernel_env = {**threads.child_environment(threads.default_threads(), base={}),
                  "NCMSE_EXECUTOR": "local" if workers > 1 else "sequential", "NCMSE_WORKERS": str(workers)}
    build_dir = root / "_build" if build_dir is None else Path(build_dir)
    stage = build_dir / "stage"
    timings_path = build_dir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    previous = build_dir / "executed"          # executed notebooks survive a re-stage
    entries = toc_files(root)
    unknown = set(chapters or []) - set(entries)
    if unknown:
        raise ValueError(f"not in _toc.yml: {sorted(unknown)}; chapters are {entries}")
    never = never_executed(entries, chapters, previous, root)
    if never and build:
        named = " ".join(chapters or [])
        raise ValueError(f"cannot build the site: {', '.join(never)} {'has' if len(never) == 1 else 'have'} never "
                         f"been executed here; run ./run.sh book without --chapters once, add "
                         f"{'it' if len(never) == 1 else 'them'} to --chapters, or add --no-build to execute only "
                         f"{named}")
    if never:
        print(f"[ncmse] note: not executed yet (no site can be built until they are): {', '.join(never)}",
              flush=True)
    _stage_sources(stage, root)
    failures = []
    notebooks = [e for e in entries if is_notebook(source_of(e, root)) and e not in never]
    for entry in notebooks:
        if chapters is not None and entry not in chapters:
            last = timings.get(entry)
            if last is not None and not last.get("ok", False):
                failures.append(f"{entry}: its last execution failed ({last.get('error') or 'no detail'}); "
                                f"execute it again (--chapters {entry}) or run without --chapters")
            elif last is not None and last.get("profile") != profile:
                print(f"[ncmse] note: {entry} is reused from an execution at profile '{last.get('profile')}'",
                      flush=True)
    todo = [e for e in notebooks if chapters is None or e in chapters]

    def execute(entry: str) -> ChapterResult:
        executed = previous / f"{entry}.ipynb"
        print(f"[ncmse] executing {entry} at profile '{profile}' …", flush=True)
        shutil.rmtree(downloads_of(executed), ignore_errors=True)        # nothing left from an earlier execution
        res = execute_chapter(source_of(entry, root), executed, profile, timeout=timeout, cwd=root, env=kernel_env)
        if res.ok and (missing := missing_figures(executed)):
            res.ok, res.error = False, "; ".join(missing)
        res.concurrent = concurrent
        print(f"[ncmse] {entry}: {'ok' if res.ok else 'FAILED'} in {res.seconds:.1f} s", flush=True)
        return res

    # Chapters run `concurrent` at a time, in reading order, each kernel with its thread budget: a
    # chapter of the UFM computes on one thread, so a second one fills the other core; the deep-network
    # chapters' worker processes share the cores with whatever else runs (one thread each, no spinning).
    with ThreadPoolExecutor(max_workers=max(1, min(concurrent, len(todo) or 1))) as pool:
        for entry, res in zip(todo, pool.map(execute, todo), strict=True):
            timings[entry] = asdict(res)
            if not res.ok:
                failures.append(f"{entry}: {res.error}")
    build_dir.mkdir(parents=True, exist_ok=True)
    timings_path.write_text(json.dumps(timings, indent=2))
    for entry in notebooks:
        src = source_of(entry, root)
        executed = previous / f"{entry}.ipynb"
        if not executed.exists():      # its execution failed before papermill wrote it: reported above
            continue
        staged_md = stage / src.relative_to(root)
        staged_md.unlink()
        shutil.copy2(executed, stage / f"{entry}.ipynb")
        offered = downloads_of(executed)
        for f in sorted(offered.glob("*")) if offered.is_dir() else ():   # next to the page: {download} finds them
            shutil.copy2(f, staged_md.parent / f.name)
    status = stage / "book" / "status.md"
    if status.exists():
        table = (_status_table(timings, package_versions()) + "\n" + _book_times(root) + "\n"
                 + _benchmark_table(root) + "\n" + _drill_table(root) + "\n" + _cache_table(root) + "\n"
                 + _archive_table(root))
        status.write_text(status.read_text().replace(STATUS_MARKER, table))
    print("[ncmse] chapter execution times:")
    for entry, r in timings.items():
        print(f"    {r['seconds']:8.1f} s  {entry}  ({r['profile']}{'' if r['ok'] else ', FAILED'})")
    rc = 0
    if build:
        print("[ncmse] building the book …", flush=True)
        rc = build_book(stage, build_dir)
        if rc == 0:
            print(f"[ncmse] book built: {html_dir(build_dir) / 'index.html'}")
    for f in failures:
        print(f"[ncmse] FAILED {f}", file=sys.stderr)
    return 1 if failures or rc else 0

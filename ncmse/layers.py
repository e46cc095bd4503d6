"""The package's shape, as data: its layers and the path a deep-network result takes through it (the
book's page "Architecture" draws them with :func:`ncmse.plotting.architecture_figure`, and
``tests/test_architecture.py`` holds the code to them, so the drawing stays true when a module moves).

:data:`LAYERS`: a module imports only from its own layer or the ones before it.  :data:`DATA_FLOW`:
the stages from a profile to a page, each with the modules that carry it.
"""

from __future__ import annotations

__all__ = ["LAYERS", "ROLES", "DATA_FLOW", "layer_list"]

#: layer → its modules, in order: theory, training, runs, site
LAYERS = {
    "theory": ("etf", "ufm", "minimizers", "saddles", "optim", "feature_landscape", "losses", "metrics", "collapse",
               "checks"),
    "training": ("config", "hardware", "data", "loader", "models", "train", "files", "fingerprint", "machine",
                 "threads", "paths"),
    "runs": ("variants", "cache", "executors", "cluster", "study", "stats", "summary", "mean_geometry", "archive",
             "results", "costs", "profiles", "plotting"),
    "site": ("runner", "sitecheck", "layers", "pages", "cli_checks", "__main__"),
}

#: layer → what its modules do
ROLES = {
    "theory": "the mathematics of the unconstrained features model and the NC metrics",
    "training": "one run, and what its result is valid for",
    "runs": "many runs: their cache, executors, analysis, and what a page says about them",
    "site": "executing the chapters, building and checking the book, the command line",
}

#: (stage, what happens there, its modules), from a profile to a page
DATA_FLOW = (
    ("profile", "smoke | cpu | paper (gpu, long): every size; outside the fingerprint", ("profiles",)),
    ("configuration", "everything that changes a result; precision 'auto' resolved where it trains",
     ("config", "hardware")),
    ("executor", "what is not cached trains here, in local workers or a Slurm job array",
     ("executors", "cluster")),
    ("training", "data → model → loss; NC during training; a checkpoint every epoch",
     ("train", "data", "loader", "models", "losses", "metrics")),
    ("results cache", "one JSON per configuration, valid for the code and data that made it",
     ("cache", "fingerprint", "files")),
    ("archive", "runs trained once (a GPU, the long study), committed and shown as a record", ("archive",)),
    ("analysis", "tuning, seed pooling, the clear-gap rule, what a page says",
     ("study", "stats", "summary", "mean_geometry", "results")),
    ("chapter", "papermill executes the notebook at its profile; Jupyter Book builds the site",
     ("runner", "plotting")),
)


def layer_list() -> str:
    """The layers as a numbered Markdown list, each with its role and modules (the page "Architecture")."""
    return "\n".join(f"{i}. **{name}**: {ROLES[name]}: " + ", ".join(f"`{m}`" for m in mods) + "."
                     for i, (name, mods) in enumerate(LAYERS.items(), start=1))

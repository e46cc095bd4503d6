"""Train one archived run again from an empty cache and compare it with the archive: does this checkout
reproduce the committed evidence (``data/trained/<study>/``) it shows?

    python benchmarks/reproduce_archived.py --study cifar10 --profile long --loss mse --d 10 --seed 0

picks the archived test run (not a tuning run) of that study and profile with that loss, d and seed,
trains its configuration again through ``ncmse.cache.run`` in a temporary, empty cache with as many
threads as the archived run had, and prints whether the test metrics, the training accuracy and the
classifier (``W``, ``b``) are bit-identical, the largest difference of ``W`` where they are not, both
training fingerprints and both wall times (each with its machine: a time from another machine is not a
ratio).  ``--key`` picks a run by its file name instead.  ``--out DIR`` writes the report as
``reproduce_<key>.json``.  The exit status is 0 where the run is reproduced exactly, 1 where it is not.

Equal numbers are expected where the training fingerprint and the data are the same and the precision,
thread count and memory layout match (the run's provenance records them); a different CPU may order
floating-point sums differently.  A run of the `long` profile takes about 6–10 minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def pick(runs: list[dict], *, profile: str | None = None, loss: str | None = None, d: int | None = None,
         seed: int | None = None, key: str | None = None) -> dict:
    """The one archived test run that matches; ``LookupError`` naming the candidates where none or several do."""
    from ncmse.config import RunConfig
    from ncmse.results import study_and_profile

    def matches(r):
        c = r["config"]
        if key is not None:
            return RunConfig.from_dict(c).key() == key
        return (r.get("evaluated_on", "test") == "test" and (profile is None or study_and_profile(c)[1] == profile)
                and (loss is None or c["loss"] == loss) and (d is None or c["d"] == d)
                and (seed is None or c["seed"] == seed))

    found = [r for r in runs if matches(r)]
    if len(found) != 1:
        seen = sorted({(r["config"]["loss"], r["config"]["d"], r["config"]["seed"]) for r in (found or runs)})
        raise LookupError(f"{len(found)} archived runs match (loss, d, seed among {seen[:12]}"
                          f"{' …' if len(seen) > 12 else ''}); narrow it with --loss/--d/--seed or --key")
    return found[0]


def compare(archived: dict, again: dict) -> dict:
    """What a report says: equality of each part that a page reads, and the largest difference of ``W``."""
    import torch

    W0, W1 = torch.tensor(archived["W"]), torch.tensor(again["W"])
    return {"test_equal": archived["test"] == again["test"],
            "train_accuracy_equal": archived["train"]["accuracy"] == again["train"]["accuracy"],
            "W_equal": archived["W"] == again["W"], "b_equal": archived["b"] == again["b"],
            "W_max_abs_diff": float((W0 - W1).abs().max()) if W0.shape == W1.shape else float("inf"),
            "test_accuracy": [archived["test"]["accuracy"], again["test"]["accuracy"]],
            "train_accuracy": [archived["train"]["accuracy"], again["train"]["accuracy"]]}


def reproduce(study: str, *, root=None, data_root=None, **which) -> dict:
    """Train the run that :func:`pick` finds in ``study``'s archive (under ``root``) again in an empty
    cache; the report (a dict) of :func:`compare`, with both fingerprints, machines and wall times."""
    import torch

    from ncmse import archive, threads
    from ncmse.cache import ResultsCache, run
    from ncmse.config import RunConfig
    from ncmse.fingerprint import code_fingerprint

    archived = pick(archive.load(study, root), **which)
    config = RunConfig.from_dict(archived["config"])
    n = archived["provenance"].get("threads") or 1                  # as many threads as the archived run had
    before = torch.get_num_threads()
    start = time.perf_counter()
    with threads.environment({k: n for k in threads.COUNT_VARIABLES}), tempfile.TemporaryDirectory() as tmp:
        torch.set_num_threads(n)
        try:
            again = run(config, cache=ResultsCache(tmp), progress=False, data_root=data_root, device="cpu")
        finally:
            torch.set_num_threads(before)
    wall = time.perf_counter() - start
    report = {"study": study, "key": config.key(), "trained": not again["cached"], **compare(archived, again),
              "fingerprint": {"archived": archived["validity"]["code"], "now": code_fingerprint()},
              "archived_on": {"machine": archived["provenance"]["machine"],
                              "capability": archived["provenance"].get("capability"),
                              "wall_seconds": archived["provenance"]["wall_seconds"]},
              "now_on": {"machine": again["provenance"]["machine"],
                         "capability": again["provenance"].get("capability"), "wall_seconds": wall}}
    report["reproduced"] = all(report[k] for k in ("test_equal", "train_accuracy_equal", "W_equal", "b_equal"))
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="cifar10")
    parser.add_argument("--profile", default=None, help="the archived runs of this profile only (e.g. long)")
    parser.add_argument("--loss", default=None)
    parser.add_argument("--d", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--key", default=None, help="the run's file name without .json (instead of the filters)")
    parser.add_argument("--root", default=None, help="the archive's folder (default: the repository's data/trained)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default=None, help="a folder for the report (reproduce_<key>.json)")
    args = parser.parse_args(argv)
    try:
        report = reproduce(args.study, root=args.root, data_root=args.data_root, profile=args.profile,
                           loss=args.loss, d=args.d, seed=args.seed, key=args.key)
    except LookupError as e:
        print(f"[reproduce] {e}", file=sys.stderr)
        return 2
    a, n = report["archived_on"], report["now_on"]
    print(f"run {report['key']} of {report['study']}: fingerprint {report['fingerprint']['archived']} archived, "
          f"{report['fingerprint']['now']} now")
    print(f"test accuracy {report['test_accuracy'][0]:.4f} archived, {report['test_accuracy'][1]:.4f} again; "
          f"training accuracy {report['train_accuracy'][0]:.4f}, {report['train_accuracy'][1]:.4f}")
    print(f"bit-identical: test {report['test_equal']}, training accuracy {report['train_accuracy_equal']}, "
          f"W {report['W_equal']} (max |ΔW| {report['W_max_abs_diff']:.3g}), b {report['b_equal']}")
    print(f"wall time: {a['wall_seconds']:.0f} s archived on {a['machine']} ({a['capability']}); "
          f"{n['wall_seconds']:.0f} s now on {n['machine']} ({n['capability']})")
    print("REPRODUCED" if report["reproduced"] else "NOT REPRODUCED")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"reproduce_{report['key']}.json").write_text(json.dumps(report, indent=1))
    return 0 if report["reproduced"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""What Papyan et al.'s NC4 (``NC4_ncc``, the nearest-class-centre mismatch rate) adds to an NC measurement.

Run from the repository root:  python benchmarks/ncc_bench.py [--out benchmarks/results] [--device cpu]

``NC4_ncc`` needs the final class means and then every feature again, so it cannot come from the
single streaming pass of :class:`ncmse.metrics.NCAccumulator`: with ``keep_features=True`` the
accumulator keeps the features it was fed and :meth:`~ncmse.metrics.NCAccumulator.compute` computes the
rate from them afterwards (``ncmse.metrics.ncc_mismatch``), which is what training's evaluation pass
does.  Two settings, each timed without and with ``keep_features`` in the same process (medians of
``--repeats`` runs after a warm-up), the ratio being the result:

* features: N = 50,000 random float32 features, d = 512, K = 10 (the paper's CIFAR-10 scale, as in
  ``nc_metrics_bench.py``), fed in batches of 1024: the metric computation alone;
* evaluation: the ``cpu`` profile's evaluation pass — the MLP on 10,000 Fashion-MNIST-sized random
  inputs (1 × 28 × 28) with d = 16, forward pass and accumulator — the cost a training run sees.

The process gets the thread budget of ``ncmse.threads`` (all cores but one, ``--threads``).  Prints
the machine and, with ``--out DIR``, writes DIR/ncc_<device>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_report  # noqa: E402
from nc_metrics_bench import machine, make_data, timed  # noqa: E402

from ncmse import threads  # noqa: E402
from ncmse.metrics import NCAccumulator  # noqa: E402
from ncmse.models import build_model  # noqa: E402


def metrics_pass(X, y, W, b, K: int, B: int, keep: bool) -> dict:
    """One pass of the accumulator over X (N, d) in batches of B, then every metric."""
    acc = NCAccumulator(K, X.shape[1], device=X.device, keep_features=keep)
    for i in range(0, X.shape[0], B):
        acc.update(X[i:i + B], y[i:i + B])
    return acc.compute(W, b)


@torch.no_grad()
def evaluation_pass(model, x, y, K: int, B: int, keep: bool) -> dict:
    """As ``ncmse.train.evaluate`` with ``nc=True``: forward pass, predictions, accumulator."""
    acc = NCAccumulator(K, model.d, device=x.device, keep_features=keep)
    correct = 0
    for i in range(0, x.shape[0], B):
        z, h = model(x[i:i + B], return_features=True)
        correct += int((z.argmax(1) == y[i:i + B]).sum())
        acc.update(h, y[i:i + B])
    return {**acc.compute(model.W.detach(), model.b.detach()), "accuracy": correct / x.shape[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for ncc_<device>.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores but one)")
    args = parser.parse_args()
    threads.use_budget(args.threads)           # no OpenMP spin-waiting against a busy machine (CONTRIBUTING.md)
    device = torch.device(args.device)
    report = {"machine": machine(device), "repeats": args.repeats,
              "timing": f"median of {args.repeats} runs after a warm-up, without and with keep_features"}
    K, B = 10, 1024

    X, y, W = make_data(50_000, 512, K, args.seed, device)
    b = torch.zeros(K, device=device)
    gen = torch.Generator().manual_seed(args.seed)
    x_img = torch.randn(10_000, 1, 28, 28, generator=gen).to(device)
    y_img = torch.randint(0, K, (10_000,), generator=gen).to(device)
    torch.manual_seed(args.seed)
    model = build_model("mlp", (1, 28, 28), K, 16).to(device).eval()
    settings = {
        "features": (dict(N=50_000, d=512, K=K), lambda keep: metrics_pass(X, y, W, b, K, B, keep)),
        "evaluation": (dict(N=10_000, d=16, K=K, model="mlp"), lambda keep: evaluation_pass(model, x_img, y_img, K,
                                                                                            B, keep)),
    }
    for name, (sizes, fn) in settings.items():
        fn(False), fn(True)                       # warm-up
        plain, t_plain = timed(lambda fn=fn: fn(False), device, args.repeats)
        kept, t_kept = timed(lambda fn=fn: fn(True), device, args.repeats)
        same = all(plain[k] == kept[k] or (plain[k] != plain[k] and kept[k] != kept[k]) for k in plain)
        entry = {**sizes, "seconds_without": statistics.median(t_plain), "seconds_with": statistics.median(t_kept),
                 "seconds_all_without": t_plain, "seconds_all_with": t_kept, "NC4_ncc": kept["NC4_ncc"],
                 "other_metrics_unchanged": same}
        entry["ratio_with_over_without"] = entry["seconds_with"] / entry["seconds_without"]
        report[name] = entry
        print(f"{name:>10}: {entry['seconds_without']:.3f} s without, {entry['seconds_with']:.3f} s with NC4_ncc "
              f"({entry['ratio_with_over_without']:.2f}×), NC4_ncc = {kept['NC4_ncc']:.4f}", flush=True)
    write_report(report, args.out, f"ncc_{device.type}.json", summary, "benchmarks/ncc_bench.py")
    return 0 if all(report[k]["other_metrics_unchanged"] for k in settings) else 1


def summary(r: dict) -> dict:
    """The status page's line for this report."""
    m, f, e = r["machine"], r["features"], r["evaluation"]
    return {"what": "Papyan's NC4 (NC4_ncc): the NC measurement with kept features against without",
            "result": f"metrics of N={f['N']:,}, d={f['d']}: {f['ratio_with_over_without']:.2f}× "
                      f"({f['seconds_without']:.2f} → {f['seconds_with']:.2f} s); cpu profile's evaluation pass "
                      f"(N={e['N']:,}, d={e['d']}): {e['ratio_with_over_without']:.2f}×",
            "machine": f"{m['cpu']}, {m['cpu_count']} cores, {m['torch_num_threads']} threads"}


if __name__ == "__main__":
    sys.exit(main())

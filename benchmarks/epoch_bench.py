"""One training epoch: the tensor-resident loader with batched augmentation (ncmse.loader.TensorLoader)
against a torchvision DataLoader with per-sample PIL transforms — same model, data, batch size and
augmentation (RandomCrop(32, padding=4) + RandomHorizontalFlip).

    python benchmarks/epoch_bench.py [--n 10000] [--model cnn] [--out benchmarks/results]

Prints the seconds per epoch of each (median of ``--repeats``), their ratio, and the loader alone (no
model) for both; the machine and thread count are recorded with the numbers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torchvision import transforms
from torchvision.transforms.functional import to_pil_image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_report  # noqa: E402

from ncmse.data import load_dataset  # noqa: E402
from ncmse.loader import TensorLoader, subsample  # noqa: E402
from ncmse.machine import device_description  # noqa: E402
from ncmse.models import build_model  # noqa: E402


class PILDataset(torch.utils.data.Dataset):
    """The baseline: each sample becomes a PIL image and goes through torchvision transforms alone."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(to_pil_image(self.x[i])), int(self.y[i])


def epoch(model, batches, optimizer) -> None:
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000, help="training images (balanced subsample of CIFAR-10)")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    data = subsample(load_dataset("cifar10", "train"), args.n // 10, seed=0)
    fast = TensorLoader(data, args.batch_size, shuffle=True, augment=True, seed=0)
    mean, std = fast.mean.tolist(), fast.std.tolist()
    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(mean, std)])
    slow = torch.utils.data.DataLoader(PILDataset(data.x, data.y, tf), batch_size=args.batch_size, shuffle=True,
                                       num_workers=0)
    torch.manual_seed(0)
    model = build_model(args.model, (3, 32, 32), 10, 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    epoch(model, [next(iter(fast))], opt)                              # warm-up
    report = {
        "machine": device_description(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "data": f"{data.source}, {len(data)} training images", "model": args.model, "batch_size": args.batch_size,
        "loader_only_tensor_s": timed(lambda: [b for b in fast], args.repeats),
        "loader_only_pil_s": timed(lambda: [b for b in slow], args.repeats),
        "epoch_tensor_s": timed(lambda: epoch(model, fast, opt), args.repeats),
        "epoch_pil_s": timed(lambda: epoch(model, slow, opt), args.repeats),
    }
    report["loader_ratio"] = report["loader_only_pil_s"] / report["loader_only_tensor_s"]
    report["epoch_ratio"] = report["epoch_pil_s"] / report["epoch_tensor_s"]
    write_report(report, args.out, "epoch_cpu.json", summary, "benchmarks/epoch_bench.py")
    return 0


def summary(r: dict) -> dict:
    """The status page's line for this report."""
    return {"what": f"one training epoch, {r['data']}, {r['model']} (tensor loader vs DataLoader + PIL)",
            "result": f"{r['epoch_tensor_s']:.2f} s vs {r['epoch_pil_s']:.2f} s: {r['epoch_ratio']:.2f}×; loader "
                      f"alone {r['loader_only_tensor_s']:.2f} s vs {r['loader_only_pil_s']:.2f} s: "
                      f"{r['loader_ratio']:.1f}×",
            "machine": f"{r['machine']}, {r['threads']} threads"}


if __name__ == "__main__":
    sys.exit(main())

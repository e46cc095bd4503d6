"""ncmse.collapse: measure_collapse on any model and loader, CollapseMetric in a training loop and under
DDP, against an independent NumPy computation from the definitions (page Notation) and against
ncmse.metrics on the same stored features."""

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ncmse
from ncmse.collapse import CollapseMetric, classifier_layer, measure_collapse
from ncmse.metrics import nc_metrics


def reference(H: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray) -> dict:
    """NC1–NC4 and NC4_ncc straight from the definitions, in two passes (means, then covariances)."""
    K, d = W.shape
    mu = np.stack([H[y == k].mean(0) for k in range(K)])               # (K, d)
    mu_G = H.mean(0)
    Sw = sum((H[y == k] - mu[k]).T @ (H[y == k] - mu[k]) for k in range(K)) / len(H)
    M = (mu - mu_G).T                                                   # (d, K)
    Sb = M @ M.T / K
    U, S, _ = np.linalg.svd(Sb)
    r = min(d, K - 1)
    Sb_pinv = U[:, :r] @ np.diag(1 / S[:r]) @ U[:, :r].T
    C = np.eye(K) - 1 / K

    def etf(G):
        return np.linalg.norm(G / np.linalg.norm(G) - C / np.sqrt(K - 1))

    Wt = W - W.mean(0)
    logits = H @ W.T + b
    nearest = ((H[:, None, :] - mu[None]) ** 2).sum(-1).argmin(1)
    return {"NC1": np.trace(Sw @ Sb_pinv) / K, "NC2": etf(Wt @ Wt.T), "NC3": etf(Wt @ M),
            "NC4": np.linalg.norm(W @ mu_G + b), "NC4_ncc": float((logits.argmax(1) != nearest).mean()),
            "accuracy": float((logits.argmax(1) == y).mean())}


def features_of(model, x, layer):
    out = []
    handle = layer.register_forward_hook(lambda m, a, o: out.append(a[0].detach()))
    model.eval()
    with torch.no_grad():
        model(x)
    handle.remove()
    return torch.cat(out)


def imbalanced_labels(n: int, K: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = torch.multinomial(torch.linspace(1, 4, K), n, replacement=True, generator=g)
    y[:K] = torch.arange(K)                                  # every class occurs
    return y


def test_resnet18_matches_an_independent_computation():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)      # random weights: nothing is downloaded
    x, y = torch.randn(90, 3, 32, 32), imbalanced_labels(90, 10)
    assert len(set(torch.bincount(y).tolist())) > 1          # imbalanced
    got = measure_collapse(model, DataLoader(TensorDataset(x, y), batch_size=16))
    H = features_of(model, x, model.fc).double().numpy()
    ref = reference(H, y.numpy(), model.fc.weight.detach().double().numpy(), model.fc.bias.detach().double().numpy())
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k
    assert got["N"] == 90 and got["passes"] == 2


def mlp(d=6, K=4):
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, d), nn.Tanh(), nn.Linear(d, K))


def test_matches_nc_metrics_on_stored_features_for_every_ncc_mode():
    model = mlp()
    x, y = torch.randn(200, 5), imbalanced_labels(200, 4, seed=3)
    H = features_of(model, x, model[5])
    ref = nc_metrics(H, y, model[5].weight.detach(), model[5].bias.detach())
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    for ncc, passes in (("pass", 2), ("keep", 1), (None, 1)):
        got = measure_collapse(model, loader, ncc=ncc)
        assert got["passes"] == passes
        for k, v in ref.items():
            if k == "NC4_ncc" and ncc is None:
                assert k not in got
                continue
            assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), (ncc, k)


class CountingLoader:
    def __init__(self, batches):
        self.batches, self.iterations = batches, 0

    def __iter__(self):
        self.iterations += 1
        return iter(self.batches)


def test_one_pass_without_ncc_and_two_with_it():
    model = mlp()
    batches = [(torch.randn(20, 5), torch.arange(20) % 4) for _ in range(3)]
    for ncc, expected in ((None, 1), ("keep", 1), ("pass", 2)):
        loader = CountingLoader(batches)
        measure_collapse(model, loader, ncc=ncc)
        assert loader.iterations == expected


def test_modes_and_hooks_are_restored_also_after_an_error():
    model = mlp()
    model.train()
    model[2].eval()                                          # a mixed state must come back as it was
    before = {n: m.training for n, m in model.named_modules()}
    seen = []
    model[5].register_forward_hook(lambda m, a, o: seen.append(1))
    hooks = {n: len(m._forward_hooks) for n, m in model.named_modules()}
    measure_collapse(model, [(torch.randn(8, 5), torch.arange(8) % 4)])
    bad = [(torch.randn(8, 5), torch.zeros(8, dtype=torch.long))]            # classes 1–3 absent
    with pytest.raises(ValueError, match=r"classes \[1, 2, 3\] never occur"):
        measure_collapse(model, bad)
    assert {n: m.training for n, m in model.named_modules()} == before
    assert {n: len(m._forward_hooks) for n, m in model.named_modules()} == hooks
    assert seen                                              # the user's own hook still ran


@pytest.mark.parametrize("loader, kwargs, message", [
    ([], {}, "yielded no samples"),
    ([(torch.randn(4, 5), torch.tensor([0, 1, 2, 9]))], {}, r"labels must lie in \[0, 4\)"),
    ([(torch.randn(4, 5), torch.arange(4))], {"layer": "head"}, "has no layer 'head'"),
    ([(torch.randn(4, 5), torch.arange(4))], {"layer": "1"}, "no weight matrix"),
    ([(torch.randn(4, 5), torch.arange(4))], {"num_classes": 10}, "has 4 outputs"),
    ([(torch.randn(4, 5), torch.arange(4))], {"ncc": "twice"}, "ncc must be one of"),
    ([(torch.randn(4, 5), torch.arange(4))], {"device": "cuda"}, "the model is on cpu, not on cuda"),
    ([torch.randn(4, 5)], {}, r"needs \(x, y\) batches"),
    ([(torch.randn(4, 5), torch.arange(3))], {}, "4 features but 3 labels"),
])
def test_bad_input_gives_one_clear_error(loader, kwargs, message):
    with pytest.raises(ValueError, match=message):
        measure_collapse(mlp(), loader, **kwargs)


def test_features_must_be_one_vector_per_sample():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(6, 2))       # a Linear on a 4-D input
    with pytest.raises(ValueError, match=r"needs one feature vector per sample, shape \(B, 6\)"):
        measure_collapse(model, [(torch.randn(2, 3, 8, 8), torch.tensor([0, 1]))])


def test_classifier_layer_default_name_and_module():
    model = mlp()
    assert classifier_layer(model) == ("5", model[5])
    assert classifier_layer(model, model[3]) == ("3", model[3])
    with pytest.raises(ValueError, match="not a module of"):
        classifier_layer(model, nn.Linear(2, 2))


def test_accumulates_in_float64_for_a_bfloat16_model_and_under_autocast():
    model = mlp().to(torch.bfloat16)
    x, y = torch.randn(64, 5).to(torch.bfloat16), torch.arange(64) % 4
    H = features_of(model, x, model[5])
    assert H.dtype == torch.bfloat16
    ref = nc_metrics(H.double(), y, model[5].weight.detach().double(), model[5].bias.detach().double())
    got = measure_collapse(model, [(x[:32], y[:32]), (x[32:], y[32:])])
    for k in ("NC1", "NC2", "NC3", "NC4"):
        assert got[k] == pytest.approx(ref[k], rel=1e-9), k
    model = mlp()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = measure_collapse(model, [(torch.randn(64, 5), torch.arange(64) % 4)])
    assert all(np.isfinite(auto[k]) for k in ("NC1", "NC2", "NC3", "NC4"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_runs_on_cuda():
    model = mlp().cuda()
    x, y = torch.randn(64, 5), torch.arange(64) % 4
    got = measure_collapse(model, [(x, y)], device="cuda")
    cpu = measure_collapse(model.cpu(), [(x, y)])
    assert got["NC1"] == pytest.approx(cpu["NC1"], rel=1e-5)


def test_the_package_exports_it_lazily():
    assert ncmse.measure_collapse is measure_collapse and ncmse.CollapseMetric is CollapseMetric
    with pytest.raises(AttributeError):
        ncmse.no_such_thing  # noqa: B018


def test_collapse_metric_update_compute_reset():
    g = torch.Generator().manual_seed(5)
    H, y = torch.randn(300, 6, generator=g), imbalanced_labels(300, 4)
    W, b = torch.randn(4, 6, generator=g), torch.randn(4, generator=g)
    metric = CollapseMetric(4, 6)
    for i in range(0, 300, 64):
        metric.update(H[i:i + 64], y[i:i + 64])
    ref = nc_metrics(H, y, W, b)
    got = metric.compute(W, b)
    assert got["N"] == 300 and "NC4_ncc" not in got
    for k in ("NC1", "NC2", "NC3", "NC4", "NC2_M"):
        assert got[k] == pytest.approx(ref[k], rel=1e-10), k
    metric.reset()
    assert metric.N == 0
    with pytest.raises(ValueError, match="never occur"):
        metric.compute(W, b)


def _ddp_worker(rank: int, world: int, init: str, H, y, W, b, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        metric = CollapseMetric(4, H.shape[1])
        shard = slice(rank, None, world)                     # uneven class counts per process
        for i in range(0, H[shard].shape[0], 50):
            metric.update(H[shard][i:i + 50], y[shard][i:i + 50])
        first = metric.compute(W, b)
        again = metric.compute(W, b)                         # computing twice does not count twice
        out.put((rank, first, again, metric.N))
    finally:
        dist.destroy_process_group()


def test_collapse_metric_merges_exactly_across_processes(tmp_path):
    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(7)
    H = torch.randn(401, 5, generator=g, dtype=torch.float64) + 1e4      # far from the origin
    y = imbalanced_labels(401, 4, seed=2)
    W, b = torch.randn(4, 5, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    ref = nc_metrics(H, y, W, b)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, init, H, y, W, b, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for rank, first, again, local_N in results:
        assert first["N"] == 401 and local_N in (200, 201)
        for k in ("NC1", "NC2", "NC3", "NC4", "NC2_M"):
            assert first[k] == pytest.approx(ref[k], rel=1e-8), (rank, k)
            assert again[k] == first[k]


def test_collapse_metric_takes_a_layers_parameters_without_warnings():
    layer = nn.Linear(6, 4)                                   # weight and bias require grad
    metric = CollapseMetric(4, 6)
    metric.update(torch.randn(40, 6), torch.arange(40) % 4)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = metric.compute(layer.weight, layer.bias)
    assert np.isfinite(out["NC3"])

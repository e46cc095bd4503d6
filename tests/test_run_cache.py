"""Run configurations, the results cache, and training with resume (needs ../shared/data for MNIST)."""

import json

import pytest
import torch
from offline_data import DATA_ROOT
from offline_data import needs_fashion as needs_data

from ncmse.__main__ import sweep_configs
from ncmse.cache import ResultsCache, run
from ncmse.config import RunConfig
from ncmse.profiles import d_grid, profile_config


@pytest.mark.parametrize("kw,match", [
    (dict(d=-1), "feature dimension"), (dict(d=0), "feature dimension"), (dict(loss="hinge"), "unknown loss"),
    (dict(dataset="imagenet"), "unknown dataset"), (dict(model="vgg"), "unknown model"),
    (dict(optimizer="lbfgs"), "unknown optimizer"), (dict(schedule="poly"), "unknown schedule"),
    (dict(epochs=0), "epochs"), (dict(loss="mse", alpha=5.0), "loss='rmse' only"),
    (dict(loss="rmse", alpha=0.0), "alpha"),
    (dict(n_per_class=0), "n_per_class"), (dict(nc_epochs=(99,)), "nc_epochs"),
    (dict(lr=-1.0), "lr must be finite and > 0"), (dict(seed=-1), "seed"),
    (dict(augment="yes"), "augment"),
])
def test_bad_configurations(kw, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**kw)


def test_keys_profiles_and_sweeps():
    a = RunConfig()
    assert a.key() == RunConfig().key() and a.key() != a.replace(d=17).key()
    assert RunConfig.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    paper = profile_config("paper")
    assert (paper.dataset, paper.model, paper.lr, paper.batch_size, paper.weight_decay, paper.epochs,
            paper.step_every, paper.gamma, paper.momentum, paper.seed, paper.augment) == \
        ("cifar10", "resnet18", 0.05, 128, 5e-4, 200, 40, 0.1, 0.9, 6, True)
    assert d_grid("paper") == (5, 8, 9, 10, 512) and 9 in d_grid("cpu")
    configs = sweep_configs(profile_config("smoke"), ds=(2, 9), losses=("mse", "ce"), seeds=(0, 1))
    assert len(configs) == 8 and len({c.key() for c in configs}) == 8


def _entry(c: RunConfig, valid: dict) -> dict:
    return {"config": c.to_dict(), "complete": True, "history": [], "train": {"accuracy": 0.5},
            "test": {"accuracy": 0.4}, "provenance": {}, "validity": valid, "diverged": None, "x": 1}


def test_cache_is_atomic_and_checked(tmp_path):
    from ncmse.fingerprint import validity

    cache = ResultsCache(tmp_path / "results")
    c = RunConfig()
    valid = validity(c.dataset, DATA_ROOT)
    assert cache.get(c, data_root=DATA_ROOT) is None
    cache.put(c, _entry(c, valid))
    assert cache.get(c, data_root=DATA_ROOT)["x"] == 1
    assert [p.name for p in (tmp_path / "results").iterdir()] == [f"{c.key()}.json"]   # no temp files left
    cache.path(c.replace(d=3)).write_text(json.dumps(_entry(c, valid)))
    assert cache.read(c.replace(d=3)) == (None, "torn")                                 # another configuration
    assert cache.lookup(c, {**valid, "code": "other"}) == (None, "stale code")
    assert cache.lookup(c, {**valid, "data": "other"}) == (None, "stale data")
    with pytest.raises(ValueError, match="incomplete"):
        cache.put(c, {"config": c.to_dict(), "x": 1})


@needs_data
def test_train_resume_determinism_and_cache(tmp_path, monkeypatch):
    from ncmse import train as train_mod

    config = profile_config("smoke", epochs=3, nc_epochs=(1, 2))
    full = train_mod.train(config, device="cpu", progress=False, data_root=DATA_ROOT)
    again = train_mod.train(config, device="cpu", progress=False, data_root=DATA_ROOT)
    assert full["history"] == again["history"] and full["W"] == again["W"]          # deterministic
    assert len(full["history"]) == 3 and "NC1" in full["history"][0] and "NC1" in full["history"][2]
    ckpt = tmp_path / "run.pt"
    part = train_mod.train(config, device="cpu", checkpoint=ckpt, progress=False, stop_after=1, data_root=DATA_ROOT)
    assert part["complete"] is False and ckpt.exists()
    resumed = train_mod.train(config, device="cpu", checkpoint=ckpt, progress=False, data_root=DATA_ROOT)
    assert resumed["history"] == full["history"] and resumed["W"] == full["W"]      # kill + resume = uninterrupted
    assert 0.0 <= full["test"]["accuracy"] <= 1.0 and full["train"]["live_units"] <= config.d
    assert full["provenance"]["torch"] == torch.__version__

    cache = ResultsCache(tmp_path / "results")
    first = run(config, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT)
    assert first["cached"] is False and first["history"] == full["history"]

    def boom(*a, **k):
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr(train_mod, "train", boom)
    second = run(config, cache=cache, device="cpu", progress=False, data_root=DATA_ROOT)
    assert second["cached"] is True and second["history"] == first["history"]


CIFAR = DATA_ROOT / "cifar10-jpeg"


@pytest.mark.skipif(not CIFAR.exists(), reason=f"no CIFAR-10 JPEG copy under {DATA_ROOT}")
def test_paper_profile_path_one_step_on_cpu(tmp_path):
    """The paper's model, data path (CIFAR-10 JPEG copy, crop + flip) and optimizer: one SGD step on CPU."""
    from ncmse.data import load_dataset
    from ncmse.loader import TensorLoader, subsample
    from ncmse.losses import loss_module
    from ncmse.models import build_model
    from ncmse.train import make_optimizer, make_schedule

    config = profile_config("paper")
    data = subsample(load_dataset("cifar10", "test", root=DATA_ROOT, cache_dir=tmp_path), 13, seed=0)
    assert data.source == "CIFAR-10 (JPEG copy)" and data.x.shape[1:] == (3, 32, 32)
    loader = TensorLoader(data, config.batch_size, shuffle=True, augment=config.augment, seed=config.seed)
    model = build_model(config.model, (3, 32, 32), 10, config.d)
    opt, crit = make_optimizer(model, config), loss_module("mse")
    sched = make_schedule(opt, config)
    x, y = next(iter(loader))
    before = [p.detach().clone() for p in model.parameters()]
    loss = crit(model(x), y)
    loss.backward()
    opt.step()
    sched.step()
    assert torch.isfinite(loss) and any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)            # ×0.1 only after 40 epochs

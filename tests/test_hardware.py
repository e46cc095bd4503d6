"""ncmse.hardware: precision and memory layout decided by the machine at hand."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ncmse import hardware
from ncmse.config import RunConfig
from ncmse.profiles import profile_config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """No remembered layouts, no earlier warning, no forced layout; layouts remembered in tmp_path."""
    monkeypatch.setattr(hardware, "LAYOUT_FILE", tmp_path / "hardware.json")
    monkeypatch.delenv("NCMSE_BF16_WARNED", raising=False)
    monkeypatch.delenv("NCMSE_CHANNELS_LAST", raising=False)
    hardware._cpu_layout.cache_clear()
    yield tmp_path
    hardware._cpu_layout.cache_clear()


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_native_bf16(monkeypatch, fresh, native):
    monkeypatch.setattr(hardware, "native_bf16", lambda device="cpu": native)
    assert hardware.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert hardware.resolve_precision("fp32", "cpu") == "fp32"
    config = RunConfig(model="cnn", dataset="cifar10", precision="auto")
    resolved = config.resolved("cpu")
    assert resolved.precision == ("bf16" if native else "fp32")
    assert resolved.key() != config.key() and resolved.resolved("cpu") is resolved
    assert profile_config("cpu", "cifar10", device="cpu").precision == resolved.precision
    assert profile_config("cpu", "deep", device="cpu").precision == "fp32"      # asked for explicitly


def test_explicit_bf16_where_emulated_warns_once(monkeypatch, fresh, capsys):
    monkeypatch.setattr(hardware, "native_bf16", lambda device="cpu": False)
    assert hardware.resolve_precision("bf16", "cpu") == "bf16"          # it still runs
    assert hardware.resolve_precision("bf16", "cpu") == "bf16"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no native bf16" in err[0] and "slower" in err[0]
    assert os.environ["NCMSE_BF16_WARNED"] == "1"                      # local workers stay silent
    monkeypatch.setattr(hardware, "native_bf16", lambda device="cpu": True)
    monkeypatch.delenv("NCMSE_BF16_WARNED")
    hardware.resolve_precision("bf16", "cpu")
    assert capsys.readouterr().err == ""                                 # native: nothing to say


def test_bad_precision_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        hardware.resolve_precision("fp8", "cpu")
    with pytest.raises(ValueError, match="unknown precision"):
        RunConfig(precision="half")


def test_native_bf16_elsewhere_is_false():
    assert hardware.native_bf16("meta") is False
    if not torch.cuda.is_available():
        assert hardware.native_bf16("cuda") is False


def test_layout_rules(monkeypatch, fresh):
    measured = []
    monkeypatch.setattr(hardware, "measure_layout", lambda *a, **k: measured.append(a) or {})
    assert hardware.channels_last("mlp", "fp32", "cpu", (1, 28, 28), 128) is False      # no convolutions
    assert hardware.channels_last("cnn", "fp32", "cuda", (3, 32, 32), 128) is True
    monkeypatch.setenv("NCMSE_CHANNELS_LAST", "0")
    assert hardware.channels_last("cnn", "fp32", "cuda", (3, 32, 32), 128) is False
    monkeypatch.setenv("NCMSE_CHANNELS_LAST", "1")
    assert hardware.channels_last("cnn", "fp32", "cpu", (3, 32, 32), 128) is True
    assert measured == []


@pytest.mark.parametrize("nchw, nhwc, expected", [(100.0, 80.0, True), (100.0, 97.0, False), (80.0, 100.0, False)])
def test_cpu_layout_is_measured_once_and_remembered(monkeypatch, fresh, nchw, nhwc, expected):
    calls = []

    def fake(model, precision, in_shape, batch_size, **kw):
        calls.append((model, precision, in_shape, batch_size))
        return {"nchw_ms": nchw, "channels_last_ms": nhwc}

    monkeypatch.setattr(hardware, "measure_layout", fake)
    assert hardware.channels_last("cnn", "fp32", "cpu", (3, 32, 32), 64) is expected
    assert hardware.channels_last("cnn", "fp32", "cpu", (3, 32, 32), 64) is expected
    assert len(calls) == 1
    stored = json.loads(hardware.LAYOUT_FILE.read_text())
    (key, entry), = stored.items()
    assert "cnn fp32" in key and hardware.capability() in key and entry["channels_last"] is expected
    hardware._cpu_layout.cache_clear()                      # a new process reads the file, measures nothing
    assert hardware.channels_last("cnn", "fp32", "cpu", (3, 32, 32), 64) is expected and len(calls) == 1
    hardware.channels_last("cnn", "bf16", "cpu", (3, 32, 32), 64)               # another precision: measured
    assert len(calls) == 2


def test_measure_layout_times_both_layouts():
    t = hardware.measure_layout("cnn", "fp32", (3, 8, 8), 4, steps=1)
    assert set(t) == {"nchw_ms", "channels_last_ms"} and all(v > 0 for v in t.values())


def test_capability_names_level_and_bf16():
    cap = hardware.capability()
    assert cap.startswith(torch.backends.cpu.get_cpu_capability())
    assert cap.endswith("native bf16" if hardware.native_bf16("cpu") else "emulated bf16")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="AVX2 is an x86 capability")
def test_an_avx2_machine_resolves_auto_to_fp32():
    """Capped at AVX2 (torch's dispatch and oneDNN's ISA, as on a CPU without AVX-512), "auto" is fp32
    and the capability says bf16 is emulated; an explicit bf16 warns in one line."""
    code = ("from ncmse.profiles import profile_config; from ncmse import hardware; "
            "print(hardware.capability()); print(profile_config('cpu', 'cifar10', device='cpu').precision); "
            "print(hardware.resolve_precision('bf16', 'cpu'))")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    env.pop("NCMSE_BF16_WARNED", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["AVX2, emulated bf16", "fp32", "bf16"]
    assert len([line for line in out.stderr.splitlines() if "no native bf16" in line]) == 1

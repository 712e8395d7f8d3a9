"""Device and dtype resolution: ``--dtype auto`` picks bf16 only where the hardware computes it."""

from __future__ import annotations

import pytest
import torch

import sapiens2
from sapiens2 import device as dev
from sapiens2.nn import precision


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_on_cpu_follows_native_bf16(monkeypatch, native):
    monkeypatch.setattr(dev, "cpu_has_native", lambda dtype: native)
    want = torch.bfloat16 if native else torch.float32
    assert dev.inference_dtype("auto", torch.device("cpu")) == want
    assert dev.inference_dtype("AUTO", torch.device("cpu")) == want


@pytest.mark.parametrize("supported", [True, False])
def test_auto_dtype_on_cuda_asks_for_hardware_bf16(monkeypatch, supported):
    asked = {}

    def is_bf16_supported(including_emulation=True):
        asked["emulation"] = including_emulation
        return supported

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    got = dev.inference_dtype("auto", torch.device("cuda"))
    assert got == (torch.bfloat16 if supported else torch.float32)
    assert asked["emulation"] is False  # emulated bf16 (pre-Ampere) is slower than fp32


def test_auto_dtype_elsewhere_is_fp32_and_explicit_dtypes_pass_through():
    assert dev.inference_dtype("auto", torch.device("mps")) == torch.float32
    assert dev.inference_dtype("fp16", torch.device("cpu")) == torch.float16
    assert dev.inference_dtype(torch.bfloat16, torch.device("cpu")) == torch.bfloat16
    assert dev.inference_dtype(None, torch.device("cpu")) is None
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        dev.inference_dtype("fp8", torch.device("cpu"))


def test_upcast_policy_and_auto_dtype_agree_on_this_cpu():
    """Where ``auto`` picks fp32 on a CPU, bf16 weights would compute in fp32 anyway."""
    cpu = torch.device("cpu")
    auto = dev.inference_dtype("auto", cpu)
    assert precision.compute_dtype(torch.bfloat16, cpu) == (
        torch.bfloat16 if auto == torch.bfloat16 else torch.float32
    )


# ---------------------------------------------------------------- device resolution


@pytest.fixture
def machine(monkeypatch):
    """Pretend to be a machine: ``machine(cuda_built, gpus, mps)``."""

    def set_machine(cuda_built: bool = True, gpus: int = 0, mps: bool = False) -> None:
        monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: cuda_built)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_built and gpus > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus if cuda_built else 0)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_machine


@pytest.mark.parametrize(
    ("gpus", "mps", "want"), [(2, True, "cuda"), (0, True, "mps"), (0, False, "cpu")]
)
def test_auto_device_prefers_cuda_then_mps_then_cpu(machine, gpus, mps, want):
    machine(gpus=gpus, mps=mps)
    assert dev.resolve_device("auto") == torch.device(want)
    assert dev.resolve_device(" AUTO ") == torch.device(want)


def test_available_devices_pass_through(machine):
    machine(gpus=2, mps=True)
    assert dev.resolve_device(None) == torch.device("cpu")
    assert dev.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert dev.resolve_device(torch.device("cuda", 0)) == torch.device("cuda", 0)
    assert dev.resolve_device("mps") == torch.device("mps")
    assert dev.resolve_device("meta") == torch.device("meta")
    assert dev.resolve_device("CPU") == torch.device("cpu")


@pytest.mark.parametrize(
    ("name", "machine_kw", "message"),
    [
        (
            "cuda",
            {"cuda_built": False},
            "device 'cuda' is not available: this PyTorch build has no CUDA",
        ),
        ("cuda", {"gpus": 0}, "device 'cuda' is not available: no CUDA GPU is visible"),
        ("cuda:7", {"gpus": 1}, "device 'cuda:7' is not available: this machine has 1 CUDA device"),
        ("mps", {"mps": False}, "device 'mps' is not available: MPS needs Apple silicon"),
        ("mps:1", {"mps": True}, "device 'mps:1' is not available: there is only one MPS device"),
        ("garbage", {}, "unknown device 'garbage'; use auto"),
        ("cuda:x", {}, "unknown device 'cuda:x'"),
        ("fpga", {}, "unsupported device 'fpga'"),
    ],
)
def test_unavailable_devices_are_one_line_errors(machine, name, machine_kw, message):
    machine(**machine_kw)
    with pytest.raises(dev.DeviceError) as info:
        dev.resolve_device(name)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text
    with pytest.raises(dev.DeviceError):  # the library entry points use the same check
        sapiens2.create_model("sapiens2_tiny", device=name)

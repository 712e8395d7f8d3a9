"""Device and dtype resolution: ``--dtype auto`` picks bf16 only where the hardware computes it."""

from __future__ import annotations

import pytest
import torch

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

"""The inference fast paths of the layers equal the plain formulas they replace, bit for bit."""

import pytest
import torch
import torch.nn.functional as F
from benchmarks.official_style import (
    official_rope,  # the reference recipe, shared with the benchmark
)

import sapiens2
from sapiens2.nn import (
    RMSNorm,
    RopePositionEmbedding,
    apply_rope,
    compute_dtype,
    precision,
    set_cpu_upcast,
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("prefix", [0, 9])
def test_apply_rope_equals_reference_bitwise(dtype, prefix):
    sin, cos = RopePositionEmbedding(16)((4, 3))
    q = torch.randn(2, 12 + prefix, 4, 16).transpose(1, 2).to(dtype)  # strided like attention
    k = torch.randn(2, 2, 12 + prefix, 16).to(dtype)
    q2, k2 = apply_rope(q, k, sin, cos)
    assert q2.dtype == dtype and k2.dtype == dtype
    assert torch.equal(q2, official_rope(q, sin, cos))
    assert torch.equal(k2, official_rope(k, sin, cos))
    if prefix or dtype != cos.dtype:  # rotated tokens are written to a fresh buffer:
        assert q2.is_contiguous() and k2.is_contiguous()  # head-major, for CPU attention


def test_apply_rope_per_sample_tables_and_gradients():
    sin, cos = RopePositionEmbedding(16)((4, 3))
    idx = torch.tensor([[0, 5, 7], [11, 2, 3]])
    s, c = sin[idx].unsqueeze(1), cos[idx].unsqueeze(1)  # (B, 1, K, hd), as masked modelling
    q = torch.randn(2, 4, 3 + 9, 16, requires_grad=True)
    out, _ = apply_rope(q, q, s, c)
    assert torch.equal(out, official_rope(q, s, c))
    out.sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rmsnorm_inference_path_equals_torch(dtype):
    norm = RMSNorm(32).to(dtype)
    with torch.no_grad():
        norm.weight.normal_()
    x = (3 * torch.randn(2, 7, 4, 32)).to(dtype).transpose(1, 2)
    with torch.no_grad():
        out = norm(x)
    assert torch.equal(out, F.rms_norm(x, (32,), norm.weight, 1e-6))


def test_low_precision_cpu_compute_policy():
    cpu = torch.device("cpu")
    assert compute_dtype(torch.float32, cpu) == torch.float32
    native = precision.cpu_has_native(torch.bfloat16)
    assert compute_dtype(torch.bfloat16, cpu) == (torch.bfloat16 if native else torch.float32)
    set_cpu_upcast(False)
    try:
        assert compute_dtype(torch.bfloat16, cpu) == torch.bfloat16
    finally:
        set_cpu_upcast(True)


def test_bf16_model_runs_either_way_and_keeps_its_dtype():
    model = sapiens2.create_model("sapiens2_tiny").eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        ref = model(x)
        model.to(torch.bfloat16)
        outs = []
        for upcast in (True, False):
            set_cpu_upcast(upcast)
            try:
                outs.append(model(x.bfloat16()))
            finally:
                set_cpu_upcast(True)
    for out in outs:
        assert out.dtype == torch.bfloat16
        assert ((out.float() - ref).norm() / ref.norm()).item() < 0.05

"""Golden parity with the official implementation on the tiny fixtures, on any CPU.

The fixtures (``tests/fixtures/official``) hold random-weight tiny checkpoints and the official
code's outputs computed in float64, with the RoPE tables and the rotation still in bfloat16 as in
its float32 run. Three checks per fixture (backbone layers 8 and 17, the 4K backbone, and the pose,
seg, normal, pointmap and albedo models):

1. **Strict**: our float64 run against the official float64 outputs, max|d| <= 1e-10 max|ref|.
2. **float32, official recipe**: our float32 run (q and k rounded to bfloat16 for RoPE) against our
   own float64 run. In float32, last-bit differences between CPU kernels flip some of those
   bfloat16 roundings, and each flip moves the outputs by up to a few 1e-3 of their range, so this
   bound is wide; it catches gross float32-only defects.
3. **float32 arithmetic**: the same two runs with the RoPE computed in the run's own dtype (no
   bfloat16 rounding anywhere), float32 against float64. Without roundings to flip, every float32
   code path is held to ordinary float32 accuracy.

Measured max|d| / max|ref| (worst over the 9 outputs; mean|d| / max|ref| in brackets: over the
outputs with more than one element, then the (1, 1) pointmap scale) with PyTorch 2.13 on an AMD
Zen4 (AVX-512 with bf16) under several kernel selections (``ATEN_CPU_CAPABILITY`` picks ATen's
kernels; ``MKL_ENABLE_INSTRUCTIONS`` and ``ONEDNN_MAX_CPU_ISA`` cap the GEMM and convolution
libraries):

| kernels | 1. strict | 2. float32 bf16 RoPE | 3. float32 arithmetic |
|---|---|---|---|
| native (AVX-512) | 2.7e-14 | 4.2e-3 (1.0e-4; 1.3e-4) | 1.7e-5 (4.9e-7; 1.4e-6) |
| avx2 + MKL AVX2 + oneDNN AVX2 | 1.8e-14 | 4.6e-3 (1.0e-4; 1.3e-4) | 1.8e-5 (5.3e-7; 7.1e-7) |
| avx512 + oneDNN AVX512_CORE_VNNI (no bf16) | 2.7e-14 | 4.2e-3 (1.0e-4; 1.3e-4) | 1.7e-5 (4.9e-7; 1.4e-6) |
| default + MKL SSE4_2 + oneDNN SSE41 | 2.3e-14 | 2.9e-3 (9.2e-5; 7.2e-5) | 2.4e-5 (4.8e-7; 1.1e-7) |
| avx2 (ATen only) | 1.8e-14 | 3.4e-3 (1.0e-4; 1.0e-4) | 1.0e-5 (4.8e-7; 1.3e-6) |
| default (ATen only) | 2.3e-14 | 4.0e-3 (1.0e-4; 2.2e-4) | 1.3e-5 (4.9e-7; 1.2e-6) |
| 1 thread | 2.7e-14 | 4.2e-3 (1.0e-4; 1.3e-4) | 1.7e-5 (4.9e-7; 1.4e-6) |
| ``MKL_CBWR=COMPATIBLE`` | 3.7e-14 | 4.4e-3 (1.0e-4; 8.1e-5) | 1.4e-5 (5.0e-7; 1.8e-6) |
| **bound** | **1e-10** | **1e-2 (5e-4)** | **1e-4 (1e-5)** |

The worst case of check 2 is always albedo. For comparison, the official float32 file differs from
the official float64 one by 4.4e-3 (albedo), and our float32 run from the official float32 file by
up to 2.8e-3 under these kernel selections; the all-AVX2 selection reproduces the figures seen on a
real AMD EPYC with AVX2 only (albedo 2.3e-3, pose 4.9e-4), where a 5e-4 float32-vs-file bound
failed (it held on the Intel Cascade Lake it had been set on). So no float32 file is compared against: in float32 the reference itself is only this
accurate. Margins: check 2 2.2x on the max and 2.3x on the mean (the pointmap scale), check 3 4x
and 5x. The defect tests at the end show that each check fails on a real defect: RoPE in float32
instead of bfloat16 fails check 1 on every fixture, and so does one attention weight changed by 1e-4
of itself (outputs move by 3e-9 to 5e-7 of their range, far below float32 noise; shown on the two
backbones and pose), and float32 matrix products run in bfloat16 (autocast) fail checks 2 and 3.
"""

from __future__ import annotations

import functools

import pytest
import torch
from tests.conftest import assert_close_rel, official, rel_errors

import sapiens2
from sapiens2.nn import RopePositionEmbedding

FIXTURES = (
    "tiny_backbone",
    "tiny_backbone4k",
    "tiny_pose",
    "tiny_seg",
    "tiny_normal",
    "tiny_pointmap",
    "tiny_albedo",
)
STRICT = 1e-10  # check 1, float64 against the official float64 outputs (max only)
BF16_ROPE_MAX, BF16_ROPE_MEAN = 1e-2, 5e-4  # check 2
FP32_MAX, FP32_MEAN = 1e-4, 1e-5  # check 3


@functools.cache
def _fixture(name: str):
    """``official(name)``, read once per session (the tensors are only read)."""
    return official(name)


def _load(name: str, dtype: torch.dtype, rope_dtype: torch.dtype | None = None):
    path, _, _ = _fixture(name)
    model = sapiens2.load_model(path, dtype=dtype)
    if rope_dtype is not None:  # before the first forward, so no table is cached yet
        for module in model.modules():
            if isinstance(module, RopePositionEmbedding):
                module.rope_dtype = rope_dtype
    return model


def _forward(model, name: str) -> tuple[torch.Tensor, ...]:
    _, io, cfg = _fixture(name)
    x = io["input"].to(next(model.parameters()).dtype)
    with torch.no_grad():
        if name == "tiny_backbone":  # raw tokens of layer 8, final-normalised tokens of layer 17
            return tuple(model.forward_intermediates(x, cfg["out_indices"], output_fmt="raw"))
        out = model(x)
    return out if isinstance(out, tuple) else (out,)


@functools.cache
def _run(name: str, dtype: torch.dtype, rope_dtype: torch.dtype | None = None):
    """Outputs of one configuration, computed once per session (checks share the runs)."""
    return _forward(_load(name, dtype, rope_dtype), name)


def _reference(name: str) -> list[torch.Tensor]:
    _, io, _ = _fixture(name)
    return [io[f"output.{i}"] for i in range(sum(k.startswith("output.") for k in io))]


@pytest.mark.parametrize("name", FIXTURES)
def test_float64_matches_official_float64(name):
    outs, refs = _run(name, torch.float64), _reference(name)
    assert len(outs) == len(refs)
    for out, ref in zip(outs, refs, strict=True):
        assert out.dtype == torch.float64
        assert_close_rel(out, ref, STRICT)


def test_loaded_fixture_models_are_what_they_claim():
    backbone = _load("tiny_backbone", torch.float64)
    x = _fixture("tiny_backbone")[1]["input"].double()
    with torch.no_grad():
        assert torch.equal(backbone.forward_features(x), _run("tiny_backbone", torch.float64)[1])
    assert _load("tiny_backbone4k", torch.float32).cfg.name == "sapiens2_tiny_4k"
    assert _run("tiny_backbone4k", torch.float64)[0].shape == (1, 64, 8, 6)
    for task in ("pose", "seg", "normal", "pointmap", "albedo"):
        model = _load(f"tiny_{task}", torch.float32)
        assert isinstance(model, sapiens2.TaskModel) and model.task == task


@pytest.mark.parametrize("name", FIXTURES)
def test_float32_within_bf16_rounding_of_float64(name):
    for out, ref in zip(_run(name, torch.float32), _run(name, torch.float64), strict=True):
        assert out.dtype == torch.float32
        assert_close_rel(out, ref, BF16_ROPE_MAX, BF16_ROPE_MEAN)


@pytest.mark.parametrize("name", FIXTURES)
def test_float32_arithmetic_matches_float64(name):
    outs = _run(name, torch.float32, torch.float32)
    refs = _run(name, torch.float64, torch.float64)
    for out, ref in zip(outs, refs, strict=True):
        assert_close_rel(out, ref, FP32_MAX, FP32_MEAN)


# Defects: each check must fail on them.


@pytest.mark.parametrize("name", FIXTURES)
def test_strict_check_fails_with_float32_rope(name):
    """The weights expect bfloat16 RoPE: computing it in float32 is a defect check 1 sees."""
    outs = _forward(_load(name, torch.float64, torch.float32), name)
    worst = max(rel_errors(o, r)[0] for o, r in zip(outs, _reference(name), strict=True))
    assert worst > 1e3 * STRICT, worst


@pytest.mark.parametrize("name", ["tiny_backbone", "tiny_backbone4k", "tiny_pose"])
def test_strict_check_fails_with_one_weight_off_by_1e_4(name):
    model = _load(name, torch.float64)
    backbone = model if isinstance(model, sapiens2.Sapiens2) else model.backbone
    with torch.no_grad():
        backbone.blocks[-1].attn.proj.weight[0, 0] *= 1 + 1e-4
    outs = _forward(model, name)
    worst = max(rel_errors(o, r)[0] for o, r in zip(outs, _reference(name), strict=True))
    assert worst > 10 * STRICT, worst


@pytest.mark.parametrize("name", ["tiny_backbone", "tiny_albedo"])
def test_float32_checks_fail_with_bf16_gemms(name):
    """float32 matrix products silently run in bfloat16 (autocast) fail checks 2 and 3."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_rope = _forward(_load(name, torch.float32), name)
        fp32_rope = _forward(_load(name, torch.float32, torch.float32), name)
    ref = _run(name, torch.float64)
    assert any(
        rel_errors(o, r)[0] > BF16_ROPE_MAX or rel_errors(o, r)[1] > BF16_ROPE_MEAN
        for o, r in zip(bf16_rope, ref, strict=True)
    )
    ref = _run(name, torch.float64, torch.float64)
    assert any(
        rel_errors(o, r)[0] > FP32_MAX or rel_errors(o, r)[1] > FP32_MEAN
        for o, r in zip(fp32_rope, ref, strict=True)
    )


def test_bf16_close_to_fp32():
    m16 = _load("tiny_backbone", torch.bfloat16)
    assert m16.blocks[0].attn.wq.weight.dtype == torch.bfloat16
    a = _forward(_load("tiny_backbone", torch.float32), "tiny_backbone")[1]
    b = _forward(m16, "tiny_backbone")[1].float()
    rel = ((a - b).norm() / a.norm()).item()
    assert rel < 0.05, rel

"""Golden parity with the official implementation (fixtures made by the reference code)."""

import pytest
import torch
from tests.conftest import assert_parity, official

import sapiens2


def test_tiny_backbone_layers_match_reference():
    path, io, cfg = official("tiny_backbone")
    model = sapiens2.load_model(path)
    with torch.no_grad():
        outs = model.forward_intermediates(io["input"], cfg["out_indices"], output_fmt="raw")
    # Layer 8 is the raw (unnormalised) token sequence, layer 17 the final normalised one.
    for i, out in enumerate(outs):
        assert_parity(out, io[f"output.{i}"])
    with torch.no_grad():
        assert torch.equal(model.forward_features(io["input"]), outs[-1])


def test_tiny_4k_feature_map_matches_reference():
    path, io, _ = official("tiny_backbone4k")
    model = sapiens2.load_model(path)
    assert model.cfg.name == "sapiens2_tiny_4k"
    with torch.no_grad():
        out = model(io["input"])
    assert out.shape == (1, 64, 8, 6)
    assert_parity(out, io["output.0"])


def test_fp32_rope_is_measurably_different():
    """The bf16 RoPE is what the weights expect: an fp32 RoPE must fail the parity criterion."""
    path, io, cfg = official("tiny_backbone")
    ref = sapiens2.load_model(path)
    fp32 = sapiens2.create_model("sapiens2_tiny", rope_dtype="fp32")
    sd = ref.state_dict()
    sd["rope_embed.periods"] = sd["rope_embed.periods"].float()
    fp32.load_state_dict(sd)
    with torch.no_grad():
        out = fp32.forward_intermediates(io["input"], cfg["out_indices"], output_fmt="raw")[-1]
    with pytest.raises(AssertionError):
        assert_parity(out, io["output.1"])


def test_bf16_close_to_fp32():
    path, io, _ = official("tiny_backbone")
    m32 = sapiens2.load_model(path)
    m16 = sapiens2.load_model(path, dtype="bf16")
    assert m16.blocks[0].attn.wq.weight.dtype == torch.bfloat16
    with torch.no_grad():
        a = m32(io["input"])
        b = m16(io["input"].bfloat16()).float()
    rel = ((a - b).norm() / a.norm()).item()
    assert rel < 0.05, rel

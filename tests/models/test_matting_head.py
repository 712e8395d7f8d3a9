"""The matting head: the official key layout, its outputs, and parity with transformers'
``Sapiens2ForImageMatting`` (an optional peer) once its RoPE runs in bfloat16 as the official one."""

from __future__ import annotations

import math
import re

import pytest
import torch
from safetensors.torch import save_file
from tests.conftest import assert_close_rel

import sapiens2
from sapiens2.models.heads import DenseHeadConfig, MattingHead, NormalHead

# The tiny widths of the normal head (models/task.py) with the 4 matting channels.
TINY = DenseHeadConfig((32, 16, 16, 8), 3, (8, 8, 4), (3, 3, 3), out_channels=4)


def official_head_keys(cfg: DenseHeadConfig) -> set[str]:
    """The official matting head keys for ``cfg`` (InstanceNorm stages have no parameters)."""
    keys = {"input_conv.0.weight", "input_conv.0.bias", "conv_matting.weight", "conv_matting.bias"}
    for j in range(len(cfg.upsample_channels)):
        keys |= {f"upsample_blocks.{j}.0.weight", f"upsample_blocks.{j}.0.bias"}
    for j in range(len(cfg.conv_channels)):
        keys |= {f"conv_layers.{3 * j}.weight", f"conv_layers.{3 * j}.bias"}
    return keys


def test_matting_head_keys_shapes_and_range():
    head = MattingHead(64, TINY)
    sd = head.state_dict()
    assert set(sd) == official_head_keys(TINY)
    assert sd["conv_matting.weight"].shape == (4, 4, 1, 1)
    assert sd["upsample_blocks.0.0.weight"].shape == (4 * 32, 64, 3, 3)
    assert sd["conv_layers.6.weight"].shape == (4, 8, 3, 3)
    with torch.no_grad():
        head.conv_matting.weight.mul_(50)  # push some outputs towards 0 and 1
        out = head(torch.randn(2, 64, 4, 3))
    assert out.shape == (2, 4, 64, 48)
    assert out.min() >= 0 and out.max() <= 1
    assert out.min() < 0.01 and out.max() > 0.99
    wide = DenseHeadConfig(out_channels=4)  # the released widths of the 0.4b-1b heads
    assert set(MattingHead(32, wide, device="meta").state_dict()) == official_head_keys(wide)


def test_matting_head_is_the_normal_trunk_with_a_sigmoid():
    matting = MattingHead(64, TINY)
    normal = NormalHead(64, TINY)
    sd = {k.replace("conv_matting", "conv_normal"): v for k, v in matting.state_dict().items()}
    normal.load_state_dict(sd, strict=True)
    x = torch.randn(1, 64, 3, 2)
    with torch.no_grad():
        torch.testing.assert_close(matting(x), torch.sigmoid(normal(x)), rtol=0, atol=0)


def test_matting_head_refuses_other_channel_counts():
    with pytest.raises(ValueError, match="4 channels"):
        MattingHead(64, DenseHeadConfig(out_channels=3))


# --- parity with transformers ----------------------------------------------------------------------
_BLOCK_NAMES = {  # transformers' names inside model.model.layer.{i} -> official inside blocks.{i}
    "norm1": "ln1",
    "attention.q_proj": "attn.wq",
    "attention.k_proj": "attn.wk",
    "attention.v_proj": "attn.wv",
    "attention.q_norm": "attn.q_norm",
    "attention.k_norm": "attn.k_norm",
    "attention.o_proj": "attn.proj",
    "norm2": "ln2",
    "mlp.down_proj": "ffn.w3",
}


def transformers_to_official(sd: dict[str, torch.Tensor], head_dim: int) -> dict:
    """A ``Sapiens2ForImageMatting`` state dict in the official task-file layout (the key map of
    transformers' conversion: renames, gate/up concatenated into w12, bf16 RoPE periods added)."""
    out: dict[str, torch.Tensor] = {}
    fixed = {
        "model.embeddings.cls_token": "backbone.cls_token",
        "model.embeddings.register_tokens": "backbone.storage_tokens",
        "model.embeddings.patch_embeddings.weight": "backbone.patch_embed.projection.weight",
        "model.embeddings.patch_embeddings.bias": "backbone.patch_embed.projection.bias",
        "model.norm.weight": "backbone.ln1.weight",
        "decode_head.input_conv.convolution.weight": "decode_head.input_conv.0.weight",
        "decode_head.input_conv.convolution.bias": "decode_head.input_conv.0.bias",
        "decode_head.predictor.weight": "decode_head.conv_matting.weight",
        "decode_head.predictor.bias": "decode_head.conv_matting.bias",
    }
    for key, value in sd.items():
        if key in fixed:
            out[fixed[key]] = value
            continue
        if m := re.fullmatch(r"model\.model\.layer\.(\d+)\.(.+)\.(weight|bias|lambda1)", key):
            i, name, kind = m.groups()
            if name == "layer_scale1":
                out[f"backbone.blocks.{i}.attn.gamma.weight"] = value
            elif name == "mlp.gate_proj":  # w12 = [gate (SiLU branch); up]
                up = sd[f"model.model.layer.{i}.mlp.up_proj.{kind}"]
                out[f"backbone.blocks.{i}.ffn.w12.{kind}"] = torch.cat([value, up])
            elif name != "mlp.up_proj":
                out[f"backbone.blocks.{i}.{_BLOCK_NAMES[name]}.{kind}"] = value
        elif m := re.fullmatch(r"decode_head\.upsample_layers\.(\d+)\.convolution\.(\w+)", key):
            out[f"decode_head.upsample_blocks.{m[1]}.0.{m[2]}"] = value
        elif m := re.fullmatch(r"decode_head\.conv_layers\.(\d+)\.convolution\.(\w+)", key):
            out[f"decode_head.conv_layers.{3 * int(m[1])}.{m[2]}"] = value
        else:
            raise KeyError(f"no official name for {key}")
    j = torch.arange(head_dim // 4, dtype=torch.bfloat16)  # every step in bf16, as the official
    out["backbone.rope_embed.periods"] = 100.0 ** (2 * j / (head_dim // 2))
    return out


def _bf16_rope(monkeypatch, modeling) -> None:
    """Make transformers' RoPE compute as the official backbone does: bf16 periods, coordinates,
    angles, sin/cos and rotation, with q and k (prefix tokens included) rounded to bf16; and its
    RMSNorm in the input dtype (it computes in float32 even for float64 inputs)."""
    bf16 = torch.bfloat16

    def rope_forward(self, pixel_values):
        hp = pixel_values.shape[-2] // self.config.patch_size
        wp = pixel_values.shape[-1] // self.config.patch_size
        j = torch.arange(self.head_dim // 4, dtype=bf16)
        periods = self.base ** (2 * j / (self.head_dim // 2))
        rows = torch.arange(0.5, hp, dtype=bf16) / hp
        cols = torch.arange(0.5, wp, dtype=bf16) / wp
        coords = 2.0 * torch.stack(torch.meshgrid(rows, cols, indexing="ij"), -1).flatten(0, 1) - 1
        angles = (2 * math.pi * coords[:, :, None] / periods).flatten(1, 2).tile(2)
        return torch.cos(angles), torch.sin(angles)

    def rotate(x, cos, sin):
        dtype, x = x.dtype, x.to(bf16)
        n = cos.shape[-2]
        body = x[..., -n:, :]
        half = body.shape[-1] // 2
        turned = torch.cat([-body[..., half:], body[..., :half]], -1)
        return torch.cat([x[..., :-n, :], body * cos + turned * sin], -2).to(dtype)

    def apply_rope(q, k, cos, sin, **kwargs):
        return rotate(q, cos, sin), rotate(k, cos, sin)

    def rms_norm(self, x):
        scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * (x * scale)

    monkeypatch.setattr(modeling.Sapiens2RopePositionEmbedding, "forward", rope_forward)
    monkeypatch.setattr(modeling, "apply_rotary_pos_emb", apply_rope)
    monkeypatch.setattr(modeling.Sapiens2RMSNorm, "forward", rms_norm)


def _peer_pair(tmp_path):
    transformers = pytest.importorskip("transformers", minversion="5.25")
    config = transformers.Sapiens2Config(
        hidden_size=64, num_hidden_layers=18, num_attention_heads=4, intermediate_size=256,
        num_key_value_attention_heads=2, num_first_full_attention_layers=8,
        num_last_full_attention_layers=8, num_register_tokens=8, patch_size=16,
        image_size=[64, 48], rope_theta=100.0, pos_embed_rescale=None, num_labels=4,
        head_config={"use_pixel_shuffle": True, "upsample_out_channels": list(TINY.upsample_channels),
                     "upsample_kernel_sizes": [3] * 4, "conv_out_channels": list(TINY.conv_channels),
                     "conv_kernel_sizes": list(TINY.conv_kernels)},
    )  # fmt: skip
    peer = transformers.Sapiens2ForImageMatting(config).eval()
    with torch.no_grad():  # random values everywhere (biases and norms too), not the init's
        for p in peer.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    # the official task-file layout, loaded as any checkpoint: load_model finds the arch, the
    # matting task (decode_head.conv_matting) and the head widths from the keys and shapes
    path = tmp_path / "matting.safetensors"
    save_file(transformers_to_official(peer.state_dict(), 16), str(path))
    ours = sapiens2.load_model(path).eval()
    assert (ours.task, ours.arch.name, ours.head_config) == ("matting", "sapiens2_tiny", TINY)
    return peer, ours


def _peer_outputs(peer, x):
    logits = {}
    hook = peer.decode_head.register_forward_hook(lambda m, i, o: logits.setdefault("x", o))
    with torch.no_grad():
        out = peer(pixel_values=x)
    hook.remove()
    return torch.cat([out.foregrounds, out.alphas], 1), logits["x"]


def _our_outputs(ours, x):
    with torch.no_grad():
        logits = ours.decode_head.conv_matting(ours.decode_head.trunk(ours.backbone(x)))
        return ours(x), logits


def test_matting_model_equals_transformers_with_bf16_rope(monkeypatch, tmp_path):
    pytest.importorskip("transformers", minversion="5.25")
    from transformers.models.sapiens2 import modeling_sapiens2

    peer, ours = _peer_pair(tmp_path)
    _bf16_rope(monkeypatch, modeling_sapiens2)
    x = torch.randn(2, 3, 64, 48, dtype=torch.float64)
    (ref, ref_logits), (out, logits) = (
        _peer_outputs(peer.double(), x),
        _our_outputs(ours.double(), x),
    )
    assert out.shape == ref.shape == (2, 4, 64, 48)
    assert 0.5 < ref_logits.std() < 50  # not saturated: the sigmoid hides nothing
    # float64 everywhere but the bf16 RoPE of both: equal up to float64 rounding.
    assert (logits - ref_logits).abs().max() <= 1e-9 * ref_logits.abs().max()
    assert (out - ref).abs().max() <= 1e-10
    # float32 (bf16 roundings of q/k may flip with last-bit differences): the float32 bound of
    # tests/models/test_golden.py (check 2, measured over several CPU kernel selections).
    x32 = x.float()
    (ref, ref_logits), (out, logits) = (
        _peer_outputs(peer.float(), x32),
        _our_outputs(ours.float(), x32),
    )
    assert_close_rel(logits, ref_logits, 1e-2, 5e-4)
    assert_close_rel(out, ref, 1e-2, 5e-4)

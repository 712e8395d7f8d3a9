"""The arch table against the official layout (``Sapiens2.arch_zoo`` and the state-dict
keys of ``sapiens/backbones/sapiens2.py``), built on meta."""

import time

import pytest
import torch

import sapiens2
from sapiens2.models.configs import get_arch

# (params, key count) as counted from the official code.
OFFICIAL = {
    "sapiens2_0.1b": (113_993_472, 210),
    "sapiens2_0.4b": (395_450_368, 414),
    "sapiens2_0.8b": (814_283_520, 550),
    "sapiens2_1b": (1_455_474_176, 686),
    "sapiens2_1b_4k": (1_606_588_928, 744),
    "sapiens2_5b": (5_066_902_976, 958),
}


def official_layout(name: str) -> dict[str, tuple[int, ...]]:
    """The official key -> shape table written out from the official layout's rules, independently of the
    model code: 8 leading and 8 trailing full-attention blocks, half the kv heads in between."""
    cfg = get_arch(name)
    d, f, hd = cfg.embed_dim, cfg.ffn_dim, cfg.head_dim
    keys = {
        "cls_token": (1, 1, d),
        "storage_tokens": (1, 8, d),
        "patch_embed.projection.weight": (d, 3, 16, 16),
        "patch_embed.projection.bias": (d,),
        "rope_embed.periods": (hd // 4,),
        "ln1.weight": (d,),
    }

    def block(prefix, kv_dim, qk_norm, gamma):
        keys.update(
            {
                f"{prefix}ln1.weight": (d,),
                f"{prefix}attn.wq.weight": (d, d),
                f"{prefix}attn.wq.bias": (d,),
                f"{prefix}attn.wk.weight": (kv_dim, d),
                f"{prefix}attn.wk.bias": (kv_dim,),
                f"{prefix}attn.wv.weight": (kv_dim, d),
                f"{prefix}attn.wv.bias": (kv_dim,),
                f"{prefix}attn.proj.weight": (d, d),
                f"{prefix}attn.proj.bias": (d,),
                f"{prefix}ln2.weight": (d,),
                f"{prefix}ffn.w12.weight": (2 * f, d),
                f"{prefix}ffn.w12.bias": (2 * f,),
                f"{prefix}ffn.w3.weight": (d, f),
                f"{prefix}ffn.w3.bias": (d,),
            }
        )
        if qk_norm:
            keys[f"{prefix}attn.q_norm.weight"] = (hd,)
            keys[f"{prefix}attn.k_norm.weight"] = (hd,)
        if gamma:
            keys[f"{prefix}attn.gamma.weight"] = (d,)

    for i in range(cfg.depth):
        full = i < 8 or i >= cfg.depth - 8
        block(f"blocks.{i}.", d if full else d // 2, True, True)
    if cfg.use_tokenizer:
        keys["tokenizer.local_pos_embed"] = (1, 17, d)
        keys["tokenizer.w_cls"] = (1, 1, d)
        for j in range(cfg.tokenizer_depth):
            block(f"tokenizer.blocks.{j}.", d, False, False)
    return keys


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_params_and_keys_match_official_layout(name):
    t = time.perf_counter()
    model = sapiens2.create_model(name, device="meta")
    assert time.perf_counter() - t < 5.0
    params, nkeys = OFFICIAL[name]
    assert sum(p.numel() for p in model.parameters()) == params
    sd = model.state_dict()
    assert len(sd) == nkeys
    assert {k: tuple(v.shape) for k, v in sd.items()} == official_layout(name)
    assert sd["rope_embed.periods"].dtype == torch.bfloat16


def test_rope_periods_are_bf16_rounded():
    model = sapiens2.create_model("sapiens2_0.4b", depth=1, device="cpu")
    expected = [1.0, 1.3359, 1.7812, 2.375, 3.1562, 4.2188, 5.625, 7.5, 10.0, 13.3125, 17.75,
                23.75, 31.625, 42.25, 56.25, 75.0]  # fmt: skip
    assert torch.allclose(model.rope_embed.periods.float(), torch.tensor(expected), atol=1e-4)


def test_gqa_schedule():
    cfg = get_arch("sapiens2_1b")
    kv = [cfg.kv_heads(i) for i in range(cfg.depth)]
    assert kv[:8] == [24] * 8 and kv[-8:] == [24] * 8 and set(kv[8:32]) == {12}
    assert {get_arch("sapiens2_0.1b").kv_heads(i) for i in range(12)} == {12}


def test_unknown_arch_and_override_are_errors():
    with pytest.raises(KeyError, match="known"):
        get_arch("sapiens2_2b")
    with pytest.raises(TypeError, match="unknown arch field"):
        sapiens2.create_model("sapiens2_tiny", widht=3)


def test_meta_then_init_weights():
    model = sapiens2.create_model("sapiens2_tiny", device="meta")
    model = model.to_empty(device="cpu")
    model.init_weights()
    assert torch.isfinite(model(torch.randn(1, 3, 64, 48))).all()
    assert torch.allclose(
        model.rope_embed.periods.float(), torch.tensor([1.0, 3.1562, 10.0, 31.625]), atol=1e-3
    )


def test_forward_backward_every_parameter_gets_a_gradient():
    for name in ("sapiens2_tiny", "sapiens2_tiny_4k"):
        model = sapiens2.create_model(name).train()
        stride = model.cfg.stride
        out = model(torch.randn(2, 3, 4 * stride, 3 * stride))
        assert out.shape == (2, 64, 4, 3)
        out.square().mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
        # The class and storage tokens only reach the patch outputs through attention.
        assert missing == [], missing

"""Equivalences that keep the implementation honest."""

import pytest
import torch

import sapiens2
from sapiens2.nn import GroupedQueryAttention, RopePositionEmbedding, WindowTokenizer
from sapiens2.nn.attention import sdpa_gqa


def test_gqa_equals_mha_with_repeated_kv_heads():
    dim, heads, kv = 64, 8, 2
    gqa = GroupedQueryAttention(dim, heads, kv, qk_norm=True)
    mha = GroupedQueryAttention(dim, heads, heads, qk_norm=True)
    group = heads // kv
    hd = dim // heads
    with torch.no_grad():
        mha.wq.load_state_dict(gqa.wq.state_dict())
        mha.proj.load_state_dict(gqa.proj.state_dict())
        mha.q_norm.load_state_dict(gqa.q_norm.state_dict())
        mha.k_norm.load_state_dict(gqa.k_norm.state_dict())
        for src, dst in ((gqa.wk, mha.wk), (gqa.wv, mha.wv)):
            # kv head j serves query heads j*group ... j*group+group-1
            w = src.weight.view(kv, hd, dim).repeat_interleave(group, 0).reshape(dim, dim)
            b = src.bias.view(kv, hd).repeat_interleave(group, 0).reshape(dim)
            dst.weight.copy_(w)
            dst.bias.copy_(b)
    rope = RopePositionEmbedding(hd)((4, 3))
    x = torch.randn(2, 3 + 12, dim)
    torch.testing.assert_close(gqa(x, rope), mha(x, rope), rtol=1e-5, atol=1e-6)


def test_sdpa_gqa_fallback_equals_native():
    q = torch.randn(1, 6, 10, 8)
    k, v = torch.randn(1, 2, 10, 8), torch.randn(1, 2, 10, 8)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1)
    )
    torch.testing.assert_close(sdpa_gqa(q, k, v), ref, rtol=1e-5, atol=1e-6)


def test_window_tokenizer_on_one_window_equals_a_block_stack():
    tok = WindowTokenizer(32, 4, 64, depth=2, window=4)
    tokens = torch.randn(3, 16, 32)  # each batch item is exactly one 4x4 window
    out, grid = tok(tokens, (4, 4))
    assert grid == (1, 1)
    x = torch.cat([tok.w_cls.expand(3, -1, -1), tokens], 1) + tok.local_pos_embed
    for blk in tok.blocks:
        x = blk(x)
    torch.testing.assert_close(out[:, 0], x[:, 0])


def test_window_tokenizer_chunking_is_invisible():
    tok = WindowTokenizer(32, 4, 64, depth=1, window=2, chunk_size=3)
    tokens = torch.randn(2, 6 * 4, 32)
    a, _ = tok(tokens, (6, 4))
    tok.chunk_size = 1024
    b, _ = tok(tokens, (6, 4))
    torch.testing.assert_close(a, b)


def test_windows_are_independent():
    """Changing one window's patches changes exactly one output token (no leakage)."""
    tok = WindowTokenizer(16, 2, 32, depth=1, window=2)
    tokens = torch.randn(1, 4 * 6, 16)
    a, _ = tok(tokens, (4, 6))
    t2 = tokens.clone().view(1, 4, 6, 16)
    t2[0, 2:4, 2:4] += 1.0  # window (1, 1)
    b, _ = tok(t2.view(1, 24, 16), (4, 6))
    changed = (a - b).abs().sum(-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == [1 * 3 + 1]


def test_any_size_multiple_of_16_and_clear_errors():
    model = sapiens2.create_model("sapiens2_tiny")
    assert model(torch.randn(1, 3, 80, 112)).shape == (1, 64, 5, 7)
    with pytest.raises(ValueError, match="multiple of 16"):
        model(torch.randn(1, 3, 100, 112))
    with pytest.raises(ValueError, match="3 input channels"):
        model(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match="image batch"):
        model(torch.randn(3, 64, 64))
    model4k = sapiens2.create_model("sapiens2_tiny_4k")
    with pytest.raises(ValueError, match="multiple of 64"):
        model4k(torch.randn(1, 3, 96, 64))


def test_forward_intermediates_contract():
    model = sapiens2.create_model("sapiens2_tiny")
    x = torch.randn(2, 3, 64, 48)
    feats = model.forward_features(x)
    assert feats.shape == (2, 9 + 12, 64)
    last = model.forward_intermediates(x, 1, output_fmt="NCHW")[0]
    torch.testing.assert_close(last, model(x))
    maps = model.forward_intermediates(x, [0, -1, 5], output_fmt="NLC", norm=True)
    assert [m.shape for m in maps] == [(2, 12, 64)] * 3
    split = model.split_tokens(feats)
    assert split.cls.shape == (2, 64) and split.storage.shape == (2, 8, 64)
    torch.testing.assert_close(split.patches, model.forward_intermediates(x, output_fmt="NLC")[0])
    with pytest.raises(IndexError):
        model.forward_intermediates(x, [18])


def test_batch_items_are_independent():
    model = sapiens2.create_model("sapiens2_tiny")
    x = torch.randn(3, 3, 64, 48)
    torch.testing.assert_close(model(x)[1:2], model(x[1:2]), rtol=1e-4, atol=1e-5)


def test_fresh_pose_head_starts_near_zero_heatmaps():
    """A new pose model predicts near-zero heatmaps (heatmap layer std 0.001, zero bias) instead
    of PyTorch's default-init ~0.4-sized noise, which a small model first spends hundreds of
    steps unlearning; the other layers keep their default init."""
    torch.manual_seed(0)
    model = sapiens2.create_model("sapiens2_tiny", task="pose")
    heat = model(torch.randn(2, 3, 256, 192))
    assert heat.shape == (2, 308, 64, 48) and 0 < heat.abs().max() < 0.05
    w = model.decode_head.conv_pose.weight
    assert 0.0005 < w.std() < 0.002 and model.decode_head.conv_pose.bias.abs().max() == 0
    seg = sapiens2.create_model("sapiens2_tiny", task="seg")
    assert seg(torch.randn(1, 3, 256, 192)).abs().max() > 0.1  # untouched default init

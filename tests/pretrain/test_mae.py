from __future__ import annotations

import pytest
import torch

from sapiens2 import create_model
from sapiens2.pretrain.mae import (
    MAEConfig,
    MAEDecoder,
    mae_loss,
    mae_targets,
    patchify,
    unpatchify,
)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("sapiens2_tiny", device="cpu").float()


def test_patchify_round_trip_and_layout():
    x = torch.randn(2, 3, 32, 48)
    p = patchify(x, 16)
    assert p.shape == (2, 6, 16 * 16 * 3)
    # patch 1 (row 0, col 1), pixel (py=2, px=5), channel 1
    assert p[0, 1, (2 * 16 + 5) * 3 + 1] == x[0, 1, 2, 16 + 5]
    assert torch.equal(unpatchify(p, (2, 3), 16), x)
    with pytest.raises(ValueError, match="multiple"):
        patchify(torch.randn(1, 3, 30, 32), 16)


def test_norm_pix_targets_and_target_scale():
    x = torch.randn(2, 3, 64, 32) * 3 + 1
    t = mae_targets(x, 16, 16, norm_pix=True)
    assert t.shape == (2, 8, 768)
    torch.testing.assert_close(t.mean(-1), torch.zeros(2, 8), atol=1e-5, rtol=0)
    torch.testing.assert_close(t.var(-1), torch.ones(2, 8), atol=1e-4, rtol=0)
    # half-resolution target: each token predicts 8x8 pixels of the area-downsampled image
    t2 = mae_targets(x, 16, 8, norm_pix=False)
    assert t2.shape == (2, 8, 192)
    small = torch.nn.functional.avg_pool2d(x, 2)
    assert torch.allclose(unpatchify(t2, (4, 2), 8), small, atol=1e-6)
    with pytest.raises(ValueError, match="non-integer"):
        MAEConfig(target_scale=0.3).target_patch(16)


def test_mae_loss_scores_hidden_tokens_only():
    pred, target = torch.randn(2, 6, 12), torch.randn(2, 6, 12)
    mask = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 1, 1, 1, 0, 0]], dtype=torch.bool)
    loss = mae_loss(pred, target, mask)
    manual = ((pred - target) ** 2).mean(-1)[mask].mean()
    torch.testing.assert_close(loss, manual)
    pred2 = pred.clone()
    pred2[~mask] += 100.0  # visible tokens do not count
    assert mae_loss(pred2, target, mask) == loss


@pytest.mark.parametrize("arch", ["sapiens2_tiny", "sapiens2_tiny_4k"])
def test_forward_masked_with_every_token_equals_forward_features(arch):
    torch.manual_seed(1)
    model = create_model(arch, device="cpu").float()
    s = model.cfg.stride
    x = torch.randn(2, 3, 4 * s, 3 * s)
    keep = torch.arange(12).expand(2, -1)
    with torch.no_grad():
        assert torch.equal(model.forward_masked(x, keep), model.forward_features(x))


def test_forward_masked_tokens_keep_their_positions(tiny):
    # permuting the kept indices permutes the outputs: each token carries its own RoPE position
    x = torch.randn(1, 3, 64, 48)
    keep = torch.tensor([[0, 3, 5, 8, 11]])
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        a = tiny.forward_masked(x, keep)
        b = tiny.forward_masked(x, keep[:, perm])
    p = tiny.num_prefix_tokens
    torch.testing.assert_close(b[:, p:], a[:, p:][:, perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b[:, :p], a[:, :p], atol=1e-5, rtol=1e-5)
    # and a different position gives a different output for the same content
    keep2 = torch.tensor([[0, 3, 5, 8, 10]])
    with torch.no_grad():
        c = tiny.forward_masked(x, keep2)
    assert not torch.allclose(c[:, :p], a[:, :p], atol=1e-4)


@pytest.mark.parametrize("arch", ["sapiens2_tiny", "sapiens2_tiny_4k"])
def test_hidden_pixels_do_not_reach_the_encoder(arch):
    torch.manual_seed(2)
    model = create_model(arch, device="cpu").float()
    s = model.cfg.stride
    x = torch.randn(1, 3, 2 * s, 3 * s)  # 2x3 tokens (4K: 2x3 windows of 4x4 patches)
    keep = torch.tensor([[0, 2, 4]])
    y = x.clone()
    for t in (1, 3, 5):  # hidden tokens: rewrite their pixels
        r, c = divmod(t, 3)
        y[..., r * s : (r + 1) * s, c * s : (c + 1) * s] = torch.randn(3, s, s)
    with torch.no_grad():
        assert torch.equal(model.forward_masked(x, keep), model.forward_masked(y, keep))
        assert not torch.equal(model.forward_features(x), model.forward_features(y))


def test_decoder_shapes_and_mask_tokens(tiny):
    cfg = MAEConfig(decoder_depth=2, decoder_dim=64, decoder_heads=4)
    dec = MAEDecoder(64, tiny.num_prefix_tokens, 16 * 16 * 3, cfg)
    x = torch.randn(2, 3, 64, 48)
    keep = torch.tensor([[0, 4, 7], [1, 2, 11]])
    tokens = tiny.forward_masked(x, keep)
    pred, hidden = dec(tokens, keep, (4, 3), return_hidden=True)
    assert pred.shape == (2, 12, 768) and hidden.shape == (2, 12, 64)
    loss = pred.square().mean()
    loss.backward()
    assert dec.mask_token.grad is not None and dec.mask_token.grad.abs().sum() > 0
    assert tiny.patch_embed.projection.weight.grad is not None

"""The matting loss: each term against a numpy computation, its zeros and gradients, and a tiny
network that learns synthetic mattes with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from sapiens2.train.losses import MattingLoss, MattingLossWeights
from sapiens2.train.losses.matting import laplacian_loss, laplacian_pyramid

D = torch.float64


def _batch(b=2, h=20, w=14, seed=0):
    g = torch.Generator().manual_seed(seed)
    alpha = torch.rand(b, 1, h, w, generator=g, dtype=D)
    colour = torch.rand(b, 3, h, w, generator=g, dtype=D)
    bg = torch.rand(b, 3, h, w, generator=g, dtype=D)
    return {"alpha": alpha, "foreground": colour * alpha, "background": bg}


def _target_pred(batch):
    return torch.cat([batch["foreground"], batch["alpha"]], 1)


def _bilinear_np(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Half-pixel-centre bilinear resize of a (H, W) array (edges clamped)."""
    out = x
    for axis, n_out in enumerate(hw):
        n_in = out.shape[axis]
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, None)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        f = src - i0
        shape = [1, 1]
        shape[axis] = n_out
        f = f.reshape(shape)
        out = np.take(out, i0, axis) * (1 - f) + np.take(out, i1, axis) * f
    return out


def _laplacian_np(a: np.ndarray, levels=5) -> list[np.ndarray]:
    k = np.array([1, 4, 6, 4, 1]) / 16.0
    bands = []
    for _ in range(levels):
        blurred = ndimage.correlate1d(
            ndimage.correlate1d(a, k, 0, mode="nearest"), k, 1, mode="nearest"
        )
        down = blurred[::2, ::2]
        bands.append(a - _bilinear_np(down, a.shape))
        a = down
    return bands


def test_terms_match_numpy():
    batch = _batch()
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(2, 4, 20, 14, generator=g, dtype=D)
    out = MattingLoss(MattingLossWeights(composition=0.5))(pred, batch)
    p, a = pred.numpy(), batch["alpha"].numpy()
    f, b = batch["foreground"].numpy(), batch["background"].numpy()
    assert out["alpha"].item() == pytest.approx(np.abs(p[:, 3:] - a).mean(), rel=1e-12)
    assert out["foreground"].item() == pytest.approx(np.abs(p[:, :3] - f).mean(), rel=1e-12)
    comp = (p[:, :3] + (1 - p[:, 3:]) * b) - (f + (1 - a) * b)
    assert out["composition"].item() == pytest.approx(0.5 * np.abs(comp).mean(), rel=1e-12)
    lap = 0.0
    for i in range(5):
        bp = np.stack([_laplacian_np(p[n, 3])[i] for n in range(2)])
        ba = np.stack([_laplacian_np(a[n, 0])[i] for n in range(2)])
        lap += 2**i * np.abs(bp - ba).mean()
    assert out["laplacian"].item() == pytest.approx(lap, rel=1e-10)
    total = out["alpha"] + out["foreground"] + out["laplacian"] + out["composition"]
    assert out["loss"].item() == pytest.approx(total.item(), rel=1e-12)


def test_laplacian_pyramid_shapes_constants_and_reconstruction():
    x = torch.rand(1, 1, 37, 22, dtype=D)
    bands = laplacian_pyramid(x)
    assert [tuple(b.shape[-2:]) for b in bands] == [(37, 22), (19, 11), (10, 6), (5, 3), (3, 2)]
    # A constant offset lives in the dropped coarsest level: no Laplacian loss.
    assert laplacian_loss(x + 0.25, x).item() == pytest.approx(0, abs=1e-12)
    # A one-pixel change costs (mostly) at the finest band.
    y = x.clone()
    y[0, 0, 18, 11] += 0.5
    fine = (bands[0] - laplacian_pyramid(y)[0]).abs()
    assert fine.argmax().item() == 18 * 22 + 11


def test_zero_at_the_target_and_gradients_flow():
    batch = _batch()
    loss = MattingLoss(MattingLossWeights(composition=1.0))
    out = loss(_target_pred(batch), batch)
    assert set(out) == {"alpha", "foreground", "laplacian", "composition", "loss"}
    assert out["loss"].item() == 0
    pred = (_target_pred(batch) + 0.1 * torch.randn(2, 4, 20, 14, dtype=D)).requires_grad_()
    out = loss(pred, batch)
    out["loss"].backward()
    assert out["loss"].item() > 0
    assert torch.isfinite(pred.grad).all()
    assert all(pred.grad[:, c].abs().sum() > 0 for c in range(4))
    # A smaller prediction is resized to the target; float32 stays float32.
    small = loss(torch.rand(2, 4, 10, 7), {k: v.float() for k, v in batch.items()})
    assert small["loss"].dtype == torch.float32 and small["loss"] > 0


def test_bad_batches_are_named():
    batch = _batch()
    pred = _target_pred(batch)
    with pytest.raises(KeyError, match="needs batch\\['background'\\]"):
        MattingLoss(MattingLossWeights(composition=1.0))(pred, {"alpha": batch["alpha"],
                                                                "foreground": batch["foreground"]})  # fmt: skip
    with pytest.raises(ValueError, match="4 channels"):
        MattingLoss()(pred[:, :3], batch)
    with pytest.raises(KeyError, match="'alpha'"):
        MattingLoss()(pred, {"foreground": batch["foreground"]})
    with pytest.raises(ValueError, match="every loss weight is 0"):
        MattingLoss(MattingLossWeights(0, 0, 0, 0))(pred, batch)


def _synthetic_mattes(n=6, h=24, w=20, seed=0):
    """Soft discs of random bright colours over dark plain backgrounds: image, alpha, foreground."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    images, alphas, fgs = [], [], []
    for _ in range(n):
        cy, cx, r = rng.uniform(6, h - 6), rng.uniform(6, w - 6), rng.uniform(4, 7)
        a = np.clip(r - np.hypot(yy - cy, xx - cx) + 0.5, 0, 1)[None]
        colour, bg = rng.uniform(0.5, 1, (3, 1, 1)), rng.uniform(0, 0.2, (3, 1, 1))
        alphas.append(a)
        fgs.append(colour * a)
        images.append(colour * a + (1 - a) * bg)
    as_t = lambda x: torch.tensor(np.stack(x), dtype=torch.float32)  # noqa: E731
    return as_t(images), {"alpha": as_t(alphas), "foreground": as_t(fgs)}


def test_a_tiny_network_learns_synthetic_mattes():
    torch.manual_seed(0)
    images, batch = _synthetic_mattes()
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.SiLU(), nn.Conv2d(16, 16, 3, padding=1), nn.SiLU(),
        nn.Conv2d(16, 4, 1), nn.Sigmoid(),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = MattingLoss()
    losses = []
    for _ in range(40):
        out = loss_fn(net(images), batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.12 * losses[0], (losses[0], losses[-1])
    with torch.no_grad():
        final = loss_fn(net(images), batch)
    assert final["alpha"] < 0.03

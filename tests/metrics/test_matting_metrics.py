"""Matting metrics: hand-computed values, and an independent scipy re-implementation of the
benchmark's gradient and connectivity errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from sapiens2.metrics import MattingMetric, connectivity_phi
from sapiens2.metrics.matting import gaussian_gradient_kernel, gradient_magnitude


def _one(pred, target, **kw) -> dict:
    m = MattingMetric()
    m.update(pred, target, **kw)
    return m.compute()


def test_sad_and_mse_by_hand():
    target = np.zeros((10, 10))
    pred = target.copy()
    pred[2:6, 3:8] = 0.5  # 20 pixels off by 0.5
    r = _one(pred, target)
    assert r["sad"] == pytest.approx(20 * 0.5 / 1000)
    assert r["mse"] == pytest.approx(20 * 0.25 / 100)
    assert r["num_pixels"] == 100 and r["num_samples"] == 1
    trimap = np.zeros((10, 10), np.uint8)
    trimap[4:6, 6:9] = 128  # 4 of the 6 unknown pixels are in the error block
    trimap[0] = 255
    r = _one(pred, target, trimap=trimap)
    assert r["sad"] == pytest.approx(4 * 0.5 / 1000)
    assert r["mse"] == pytest.approx(4 * 0.25 / 6)
    assert r["num_pixels"] == 6
    assert _one(pred, target, mask=trimap == 128) == r
    same = _one(pred, pred, trimap=trimap)
    assert same["sad"] == same["mse"] == same["grad"] == same["conn"] == 0


def test_gradient_kernel_and_ramp_by_hand():
    h = gaussian_gradient_kernel(1.4)
    assert h.shape == (9, 9)  # r = ceil(1.4 sqrt(-2 ln(sqrt(2 pi) 1.4 0.01))) = ceil(3.62) = 4
    assert np.sum(h**2) == pytest.approx(1.0)
    assert np.allclose(h, -h[:, ::-1]) and np.allclose(h, h[::-1, :])
    # On a ramp a = s x the magnitude away from the border is s |Σ_ij h_ij j|.
    s = 0.01
    ramp = torch.from_numpy(np.tile(np.arange(30.0) * s, (20, 1)))[None]
    j = np.arange(-4, 5)
    want = s * abs((h * j[None, :]).sum())
    mag = gradient_magnitude(ramp)[0]
    assert torch.allclose(mag[4:-4, 4:-4], torch.full((12, 22), want, dtype=torch.float64))
    # The error of a ramp against a constant: Σ mag² / 1000.
    r = _one(ramp.clamp(0, 1), torch.full_like(ramp, 0.3))
    assert r["grad"] == pytest.approx(float((mag**2).sum()) / 1000)


def test_connectivity_by_hand():
    target = np.zeros((7, 7))
    target[1:4, 1:4] = 1.0  # one 3x3 component
    pred = target.copy()
    pred[6, 6] = 0.6  # an island: level 0, d = 0.6 -> phi 0.4 (target: phi 1)
    pred[6, 0] = 0.1  # an island below theta: d = 0.1 < 0.15 -> phi 1, no connectivity error
    pred[2, 4] = target[2, 4] = 0.55  # attached to the block up to t = 0.5
    phi_p, phi_g = connectivity_phi(pred, target)
    assert phi_p[6, 6] == pytest.approx(0.4) and phi_g[6, 6] == 1
    assert phi_p[6, 0] == 1 and phi_g[6, 0] == 1
    assert phi_p[2, 4] == phi_g[2, 4] == 1  # level 0.5, d = 0.05
    assert (phi_p[1:4, 1:4] == 1).all()  # level 1, d = 0
    r = _one(pred, target)
    assert r["conn"] == pytest.approx(0.6 / 1000)
    assert r["sad"] == pytest.approx(0.7 / 1000)
    pred[2, 4] = 0.75  # same level 0.5: d = 0.25 -> phi 0.75 against 1
    assert _one(pred, target)["conn"] == pytest.approx((0.6 + 0.25) / 1000)


# --- an independent reference ----------------------------------------------------------------------
def _reference(pred: np.ndarray, target: np.ndarray, region: np.ndarray) -> dict:
    """The four errors written from the benchmark's definitions with scipy, separably."""
    sigma, r = 1.4, 4
    x = np.arange(-r, r + 1.0)
    g = np.exp(-(x**2) / (2 * sigma**2))
    dg = -x * g
    g, dg = g / np.linalg.norm(g), dg / np.linalg.norm(dg)  # the 2-D filter at unit norm

    def mag(a):
        gx = ndimage.correlate1d(
            ndimage.correlate1d(a, g, 0, mode="nearest"), dg, 1, mode="nearest"
        )
        gy = ndimage.correlate1d(
            ndimage.correlate1d(a, dg, 0, mode="nearest"), g, 1, mode="nearest"
        )
        return np.hypot(gx, gy)

    four = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    run = np.zeros(pred.shape, dtype=int)  # leading thresholds at which a pixel is in the LCC
    alive = np.ones(pred.shape, dtype=bool)
    for k in range(1, 11):
        labels, n = ndimage.label((pred >= k * 0.1) & (target >= k * 0.1), structure=four)
        lcc = labels == 1 + np.argmax(np.bincount(labels.ravel())[1:]) if n else labels < 0
        alive &= lcc
        run += alive
    level = np.where(run == 10, 1.0, run * 0.1)
    dp, dt = pred - level, target - level
    phi_p = 1 - np.where(dp >= 0.15, dp, 0)
    phi_t = 1 - np.where(dt >= 0.15, dt, 0)
    e = pred - target
    return {
        "sad": np.abs(e)[region].sum() / 1000,
        "mse": (e**2)[region].mean(),
        "grad": ((mag(pred) - mag(target)) ** 2)[region].sum() / 1000,
        "conn": np.abs(phi_p - phi_t)[region].sum() / 1000,
    }


def _alphas(rng, b=3, h=40, w=32):
    blobs = ndimage.gaussian_filter(rng.normal(size=(b, h, w)), (0, 2, 2))
    target = np.clip(blobs * 6 + 0.5, 0, 1)
    noise = ndimage.gaussian_filter(rng.normal(size=(b, h, w)), (0, 1.5, 1.5))
    pred = np.clip(target + noise * 2, 0, 1)
    unknown = ndimage.binary_dilation((target > 0) & (target < 1), iterations=2, axes=(1, 2))
    trimap = np.where(unknown, 128, np.where(target > 0.5, 255, 0)).astype(np.uint8)
    return pred, target, trimap


def test_metric_matches_an_independent_reference():
    pred, target, trimap = _alphas(np.random.default_rng(0))
    assert 0.05 < (trimap == 128).mean() < 0.95 and ((pred > 0) & (pred < 1)).mean() > 0.1
    for kw, regions in (({}, np.ones_like(trimap, bool)), ({"trimap": trimap}, trimap == 128)):
        m = MattingMetric()
        m.update(torch.from_numpy(pred)[:, None], torch.from_numpy(target)[:, None], **kw)
        got = m.compute()
        refs = [_reference(p, t, r) for p, t, r in zip(pred, target, regions, strict=True)]
        for key in ("sad", "mse", "grad", "conn"):
            want = np.mean([ref[key] for ref in refs])
            assert got[key] == pytest.approx(want, rel=1e-10), key
            assert want > 0, key


def test_accumulation_inputs_and_errors():
    pred, target, trimap = _alphas(np.random.default_rng(1), b=4, h=24, w=20)
    whole = MattingMetric()
    whole.update(pred, target, trimap=trimap)
    parts = MattingMetric()
    for i in range(4):
        parts.update(pred[i], target[i], trimap=trimap[i])
    for k, v in whole.compute().items():
        assert parts.compute()[k] == pytest.approx(v, rel=1e-12), k
    assert parts.sync().compute() == parts.compute()  # no process group: a copy
    # uint8 alphas are /255; a smaller prediction is resized to the target.
    p8, t8 = np.rint(pred * 255).astype(np.uint8), np.rint(target * 255).astype(np.uint8)
    assert _one(p8, t8) == _one(p8 / 255.0, t8 / 255.0)
    small = _one(np.full((2, 12, 10), 0.25), np.zeros((2, 24, 20)))
    assert small["sad"] == pytest.approx(24 * 20 * 0.25 / 1000)
    empty = _one(pred, target, trimap=np.zeros_like(trimap))
    assert math.isnan(empty["mse"]) and empty["sad"] == 0 and empty["mse_samples"] == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _one(pred * 255, target)
    with pytest.raises(ValueError, match="0, 128 or 255"):
        _one(pred, target, trimap=trimap // 2)
    with pytest.raises(ValueError, match="not both"):
        _one(pred, target, trimap=trimap, mask=trimap)
    with pytest.raises(ValueError, match="one alpha channel"):
        _one(np.zeros((1, 3, 4, 4)), np.zeros((1, 1, 4, 4)))

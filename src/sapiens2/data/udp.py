"""UDP Gaussian heatmap targets for top-down pose training (official ``UDPHeatmap.encode``,
``sapiens/pose/src/datasets/codecs/udp_heatmap.py``)."""

from __future__ import annotations

import numpy as np

__all__ = ["udp_encode"]


def udp_encode(
    keypoints: np.ndarray,
    visible: np.ndarray,
    input_hw: tuple[int, int],
    heatmap_hw: tuple[int, int],
    sigma: float = 6.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode crop-input keypoints as UDP Gaussian heatmaps.

    Keypoints are divided by ``(input - 1) / (heatmap - 1)`` per axis. For each keypoint with
    ``visible >= 0.5``: ``mu = int(kp + 0.5)``; a ``(6σ+1)²`` patch ``[mu - 3σ, mu + 3σ + 1)`` holds
    ``exp(-((x - x0)² + (y - y0)²) / (2σ²))`` with the sub-pixel centre ``x0 = 3σ + kp - mu``, so the
    continuous peak sits exactly at the scaled keypoint; it is written with an elementwise max. If the
    patch misses the heatmap entirely the keypoint weight is 0 (and invisible keypoints weigh 0).

    Args:
        keypoints: (K, 2) keypoints in crop-input pixels (x, y).
        visible: (K,) visibility (> = 0.5 means labelled).
        input_hw: (H_in, W_in) crop size, e.g. (1024, 768).
        heatmap_hw: (H_hm, W_hm), e.g. (256, 192).
        sigma: Gaussian sigma in heatmap pixels (6 in the official configs).

    Returns:
        ``(heatmaps, weights)``: (K, H_hm, W_hm) float32 in [0, 1] and (K,) float32 in {0, 1}.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    vis = np.asarray(visible, dtype=np.float64).reshape(-1)
    if kp.ndim != 2 or kp.shape[1] != 2 or kp.shape[0] != vis.shape[0]:
        raise ValueError(
            f"udp_encode: keypoints must be (K, 2) and visible (K,), got {kp.shape} and {vis.shape}"
        )
    in_h, in_w = input_hw
    hm_h, hm_w = heatmap_hw
    factor = np.array([(in_w - 1) / (hm_w - 1), (in_h - 1) / (hm_h - 1)], dtype=np.float64)
    kp_hm = kp / factor

    num = kp.shape[0]
    heatmaps = np.zeros((num, hm_h, hm_w), dtype=np.float32)
    weights = (vis >= 0.5).astype(np.float32)
    todo = np.flatnonzero(weights > 0)
    bad = todo[~np.isfinite(kp_hm[todo]).all(axis=1)]
    if len(bad):
        raise ValueError(f"udp_encode: keypoint {int(bad[0])} is not finite: {kp[bad[0]].tolist()}")
    radius = int(sigma * 3)
    size = 2 * radius + 1
    mu = (kp_hm[todo] + 0.5).astype(np.int64)  # truncation toward zero, like int()
    left, top = mu[:, 0] - radius, mu[:, 1] - radius
    right, bottom = left + size, top + size
    inside = (left < hm_w) & (top < hm_h) & (right > 0) & (bottom > 0)
    weights[todo[~inside]] = 0
    todo, mu, left, top = todo[inside], mu[inside], left[inside], top[inside]
    # all patches at once: (n, size, size) Gaussians with sub-pixel centres radius + kp - mu
    grid = np.arange(size, dtype=np.float32)
    x0 = (radius + kp_hm[todo, 0] - mu[:, 0]).astype(np.float32)
    y0 = (radius + kp_hm[todo, 1] - mu[:, 1]).astype(np.float32)
    gx = (grid[None, :] - x0[:, None]) ** 2
    gy = (grid[None, :] - y0[:, None]) ** 2
    patches = np.exp(-(gy[:, :, None] + gx[:, None, :]) / np.float32(2 * sigma**2))
    for j, k in enumerate(todo):
        # intersection of the patch with the heatmap (one patch per channel: a plain copy)
        hx0, hx1 = max(left[j], 0), min(left[j] + size, hm_w)
        hy0, hy1 = max(top[j], 0), min(top[j] + size, hm_h)
        px0, py0 = hx0 - left[j], hy0 - top[j]
        heatmaps[k, hy0:hy1, hx0:hx1] = patches[j, py0 : py0 + hy1 - hy0, px0 : px0 + hx1 - hx0]
    return heatmaps, weights

"""UDP Gaussian heatmap targets for top-down pose training (spec §3.3, "Encode")."""

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
    radius = int(sigma * 3)
    size = 2 * radius + 1
    grid = np.arange(size, dtype=np.float32)
    for k in range(num):
        if weights[k] == 0:
            continue
        if not np.all(np.isfinite(kp_hm[k])):
            raise ValueError(f"udp_encode: keypoint {k} is not finite: {kp[k].tolist()}")
        mu_x, mu_y = int(kp_hm[k, 0] + 0.5), int(kp_hm[k, 1] + 0.5)
        left, top = mu_x - radius, mu_y - radius
        right, bottom = mu_x + radius + 1, mu_y + radius + 1
        if left >= hm_w or top >= hm_h or right <= 0 or bottom <= 0:
            weights[k] = 0
            continue
        x0 = np.float32(radius + kp_hm[k, 0] - mu_x)
        y0 = np.float32(radius + kp_hm[k, 1] - mu_y)
        gx = (grid - x0) ** 2
        gy = (grid - y0) ** 2
        patch = np.exp(-(gy[:, None] + gx[None, :]) / np.float32(2 * sigma**2)).astype(np.float32)
        # intersection of the patch with the heatmap
        hx0, hx1 = max(left, 0), min(right, hm_w)
        hy0, hy1 = max(top, 0), min(bottom, hm_h)
        px0, py0 = hx0 - left, hy0 - top
        sub = patch[py0 : py0 + (hy1 - hy0), px0 : px0 + (hx1 - hx0)]
        np.maximum(heatmaps[k, hy0:hy1, hx0:hx1], sub, out=heatmaps[k, hy0:hy1, hx0:hx1])
    return heatmaps, weights

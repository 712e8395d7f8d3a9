"""UDP heatmap decoding with DARK sub-pixel refinement (spec §3.3 "Decode"), and the flip test.

Heatmap arrays are ``(N, K, H, W)`` (instances, keypoints, rows, columns); keypoint coordinates are
``(x, y)`` = ``(column, row)``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

BLUR_KERNEL_SIZE = 11


def heatmap_maximum(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer argmax per channel (row-major first maximum) and its value.

    Args:
        heatmaps: ``(N, K, H, W)``.

    Returns:
        locations ``(N, K, 2)`` float32 ``(x, y)`` (``-1`` where the maximum is ``<= 0``) and
        scores ``(N, K)`` float32 (the raw maxima).
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    scores = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0].astype(np.float32)
    locs = np.stack([idx % w, idx // w], axis=-1).astype(np.float32)
    locs[scores <= 0] = -1
    return locs, scores


def blur_heatmaps(heatmaps: np.ndarray, kernel_size: int = BLUR_KERNEL_SIZE) -> np.ndarray:
    """DARK modulation: per channel, zero-pad, Gaussian blur (sigma from the kernel size), crop, and
    rescale so that the channel maximum is unchanged.

    Args:
        heatmaps: ``(N, K, H, W)`` float32.

    Returns:
        A blurred copy of the same shape.
    """
    border = (kernel_size - 1) // 2
    n, k, h, w = heatmaps.shape
    out = np.empty_like(heatmaps, dtype=np.float32)
    padded = np.zeros((h + 2 * border, w + 2 * border), dtype=np.float32)
    for i in range(n):
        for j in range(k):
            hm = heatmaps[i, j]
            peak = hm.max()
            padded[border:-border, border:-border] = hm
            blurred = cv2.GaussianBlur(padded, (kernel_size, kernel_size), 0)[
                border:-border, border:-border
            ]
            top = blurred.max()
            out[i, j] = blurred * (peak / top) if top != 0 else blurred
    return out


def dark_udp_refine(
    keypoints: np.ndarray, heatmaps: np.ndarray, kernel_size: int = BLUR_KERNEL_SIZE
) -> np.ndarray:
    """Second-order (Taylor / Newton) sub-pixel refinement of integer heatmap maxima.

    On the blurred log-heatmap ``L`` (values clipped to ``[0.001, 50]``, edge-padded by one pixel) the
    gradient and Hessian at each integer maximum are estimated by central differences (the mixed term
    from the (+1, +1) and (-1, -1) diagonal neighbours), and ``kp -= (H + eps I)^-1 grad``.

    Args:
        keypoints: ``(N, K, 2)`` integer locations from :func:`heatmap_maximum`.
        heatmaps: ``(N, K, H, W)``.

    Returns:
        ``(N, K, 2)`` float32 refined locations. Locations marked invalid (``-1``) are returned as is.
    """
    n, k, h, w = heatmaps.shape
    logs = np.log(np.clip(blur_heatmaps(heatmaps.astype(np.float32), kernel_size), 0.001, 50.0))
    pad = np.pad(logs, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge").reshape(n * k, h + 2, w + 2)

    valid = (keypoints[..., 0] >= 0).reshape(-1)
    x = np.clip(keypoints[..., 0].reshape(-1).astype(np.int64), 0, w - 1) + 1
    y = np.clip(keypoints[..., 1].reshape(-1).astype(np.int64), 0, h - 1) + 1
    ch = np.arange(n * k)

    def at(dx: int, dy: int) -> np.ndarray:
        return pad[ch, y + dy, x + dx].astype(np.float64)

    c = at(0, 0)
    xp, xm, yp, ym = at(1, 0), at(-1, 0), at(0, 1), at(0, -1)
    dx = 0.5 * (xp - xm)
    dy = 0.5 * (yp - ym)
    dxx = xp - 2 * c + xm
    dyy = yp - 2 * c + ym
    dxy = 0.5 * (at(1, 1) - xp - yp + 2 * c - xm - ym + at(-1, -1))

    eps = float(np.finfo(np.float32).eps)
    a, b, d = dxx + eps, dxy, dyy + eps  # symmetric 2x2 [[a, b], [b, d]]
    det = a * d - b * b
    with np.errstate(divide="ignore", invalid="ignore"):
        step_x = (d * dx - b * dy) / det
        step_y = (a * dy - b * dx) / det
    out = keypoints.reshape(-1, 2).astype(np.float64).copy()
    ok = valid & np.isfinite(step_x) & np.isfinite(step_y)
    out[ok, 0] -= step_x[ok]
    out[ok, 1] -= step_y[ok]
    return out.reshape(n, k, 2).astype(np.float32)


def decode_udp(
    heatmaps: np.ndarray, input_size: tuple[int, int], kernel_size: int = BLUR_KERNEL_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """``UDPHeatmap.decode``: argmax, DARK-UDP refinement, then ``kp / (hm_size - 1) * input_size``.

    Args:
        heatmaps: ``(N, K, H_hm, W_hm)`` float.
        input_size: network input ``(W, H)``.

    Returns:
        keypoints ``(N, K, 2)`` in network-input pixels and scores ``(N, K)`` (raw heatmap maxima).
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    if heatmaps.ndim != 4:
        raise ValueError(f"expected heatmaps of shape (N, K, H, W), got {heatmaps.shape}")
    h, w = heatmaps.shape[-2:]
    if h < 2 or w < 2:
        raise ValueError(f"heatmaps must be at least 2x2, got {h}x{w}")
    locs, scores = heatmap_maximum(heatmaps)
    locs = dark_udp_refine(locs, heatmaps, kernel_size)
    scale = np.array(input_size, dtype=np.float64) / np.array([w - 1, h - 1], dtype=np.float64)
    kp = (locs * scale).astype(np.float32)
    kp[scores <= 0] = -1
    return kp, scores


def flip_back_heatmaps(
    heatmaps: torch.Tensor, flip_indices: np.ndarray | list[int]
) -> torch.Tensor:
    """Undo a horizontal input flip on heatmaps ``(N, K, H, W)``: mirror along W, swap left/right channels."""
    idx = torch.as_tensor(np.array(flip_indices), dtype=torch.long, device=heatmaps.device)
    if idx.numel() != heatmaps.shape[1]:
        raise ValueError(
            f"flip_indices has {idx.numel()} entries but heatmaps have {heatmaps.shape[1]} channels"
        )
    return heatmaps.flip(-1).index_select(1, idx)

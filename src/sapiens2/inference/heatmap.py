"""UDP heatmap decoding with DARK sub-pixel refinement (official ``UDPHeatmap.decode``,
``sapiens/pose/src/datasets/codecs/udp_heatmap.py`` and ``codecs/utils/refinement.py``), and the
flip test.

Heatmap arrays are ``(N, K, H, W)`` (instances, keypoints, rows, columns); keypoint coordinates are
``(x, y)`` = ``(column, row)``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

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


def _blurred_neighbourhoods(
    keypoints: np.ndarray, heatmaps: np.ndarray, kernel_size: int
) -> np.ndarray:
    """DARK modulation, evaluated where it is needed: per channel, the zero-padded Gaussian blur
    (sigma from the kernel size; a constant-0 border is the same as zero padding by the kernel
    radius), rescaled so its maximum equals the raw maximum, clipped to [0.001, 50], logged, and
    read at the 3x3 neighbourhood of the integer maximum with edge replication.

    Returns:
        ``(N*K, 3, 3)`` float32, ``[:, 1 + dy, 1 + dx]``.
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n * k, h, w)
    offsets = np.arange(-1, 2)
    xs = np.clip(keypoints[..., 0].reshape(-1).astype(np.int64)[:, None] + offsets, 0, w - 1)
    ys = np.clip(keypoints[..., 1].reshape(-1).astype(np.int64)[:, None] + offsets, 0, h - 1)
    out = np.empty((n * k, 3, 3), np.float32)
    for i in range(n * k):
        hm = flat[i]
        blurred = cv2.GaussianBlur(
            hm, (kernel_size, kernel_size), 0, borderType=cv2.BORDER_CONSTANT
        )
        top = blurred.max()
        factor = hm.max() / top if top != 0 else 1.0
        out[i] = blurred[np.ix_(ys[i], xs[i])] * factor
    return np.log(np.clip(out, 0.001, 50.0))


def dark_udp_refine(
    keypoints: np.ndarray, heatmaps: np.ndarray, kernel_size: int = BLUR_KERNEL_SIZE
) -> np.ndarray:
    """Second-order (Taylor / Newton) sub-pixel refinement of integer heatmap maxima.

    On the blurred log-heatmap ``L`` (values clipped to ``[0.001, 50]``, edge-padded by one pixel) the
    gradient and Hessian at each integer maximum are estimated by central differences (the mixed term
    from the (+1, +1) and (-1, -1) diagonal neighbours), and ``kp -= (H + eps I)^-1 grad``.

    Args:
        keypoints: ``(N, K, 2)`` integer locations from :func:`heatmap_maximum`.
        heatmaps: ``(N, K, H, W)`` float32.

    Returns:
        ``(N, K, 2)`` float32 refined locations. Locations marked invalid (``-1``) are returned as is.
    """
    heatmaps = np.ascontiguousarray(heatmaps, dtype=np.float32)
    return _newton_refine(keypoints, _blurred_neighbourhoods(keypoints, heatmaps, kernel_size))


def _newton_refine(keypoints: np.ndarray, nbhd: np.ndarray) -> np.ndarray:
    """The DARK Newton step from the 3x3 log-heatmap neighbourhoods ``nbhd`` ``(N*K, 3, 3)``
    (``nbhd[:, 1 + dy, 1 + dx]``) around integer ``keypoints`` ``(N, K, 2)``."""
    n, k = keypoints.shape[:2]
    v = np.asarray(nbhd, dtype=np.float64)
    c = v[:, 1, 1]
    xp, xm, yp, ym = v[:, 1, 2], v[:, 1, 0], v[:, 2, 1], v[:, 0, 1]
    dx = 0.5 * (xp - xm)
    dy = 0.5 * (yp - ym)
    dxx = xp - 2 * c + xm
    dyy = yp - 2 * c + ym
    dxy = 0.5 * (v[:, 2, 2] - xp - yp + 2 * c - xm - ym + v[:, 0, 0])

    eps = float(np.finfo(np.float32).eps)
    a, b, d = dxx + eps, dxy, dyy + eps  # symmetric 2x2 [[a, b], [b, d]]
    det = a * d - b * b
    with np.errstate(divide="ignore", invalid="ignore"):
        step_x = (d * dx - b * dy) / det
        step_y = (a * dy - b * dx) / det
    out = keypoints.reshape(-1, 2).astype(np.float64).copy()
    valid = out[:, 0] >= 0
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


def decode_udp_torch(
    heatmaps: torch.Tensor, input_size: tuple[int, int], kernel_size: int = BLUR_KERNEL_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode_udp` computed where the heatmaps are (GPU or CPU), same result to float rounding.

    The zero-padded blur is a separable convolution with OpenCV's Gaussian kernel and zero padding
    (the padding width equals the kernel radius, so OpenCV's border mode never matters); only the
    3x3 neighbourhoods of the maxima and the per-channel maxima leave the device.

    Args:
        heatmaps: ``(N, K, H_hm, W_hm)`` tensor.
        input_size: network input ``(W, H)``.

    Returns:
        keypoints ``(N, K, 2)`` float32 in network-input pixels and scores ``(N, K)`` float32 (numpy).
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"expected heatmaps of shape (N, K, H, W), got {tuple(heatmaps.shape)}")
    n, k, h, w = heatmaps.shape
    if h < 2 or w < 2:
        raise ValueError(f"heatmaps must be at least 2x2, got {h}x{w}")
    hm = heatmaps.detach().float().reshape(n * k, 1, h, w)
    scores, idx = hm.reshape(n * k, -1).max(dim=1)
    x, y = idx % w, idx // w

    g = torch.from_numpy(cv2.getGaussianKernel(kernel_size, 0).astype(np.float32)).to(hm.device)
    r = kernel_size // 2
    blurred = F.conv2d(
        F.conv2d(hm, g.view(1, 1, -1, 1), padding=(r, 0)), g.view(1, 1, 1, -1), padding=(0, r)
    )
    top = blurred.reshape(n * k, -1).amax(dim=1)
    factor = torch.where(top != 0, scores / torch.where(top != 0, top, 1), 1)
    offsets = torch.arange(-1, 2, device=hm.device)
    ys = (y[:, None] + offsets).clamp(0, h - 1)  # edge padding == clamped indices
    xs = (x[:, None] + offsets).clamp(0, w - 1)
    ch = torch.arange(n * k, device=hm.device)
    nbhd = blurred[ch[:, None, None], 0, ys[:, :, None], xs[:, None, :]] * factor[:, None, None]
    nbhd = nbhd.clamp(0.001, 50.0).log()

    scores_np = scores.reshape(n, k).cpu().numpy().astype(np.float32)
    locs = torch.stack([x, y], dim=-1).reshape(n, k, 2).cpu().numpy().astype(np.float32)
    locs[scores_np <= 0] = -1
    locs = _newton_refine(locs, nbhd.cpu().numpy())
    scale = np.array(input_size, dtype=np.float64) / np.array([w - 1, h - 1], dtype=np.float64)
    kp = (locs * scale).astype(np.float32)
    kp[scores_np <= 0] = -1
    return kp, scores_np


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

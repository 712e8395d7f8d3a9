"""Dense-task post-processing (spec §2.7): from raw network outputs to maps at the original size.

Every function handles one image: network outputs are ``(C, H_in, W_in)`` tensors for that image.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from sapiens2.data.geometry import LetterboxParams
from sapiens2.inference.preprocess import unletterbox


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(C, H, W)`` to ``size = (H', W')``, align_corners False, no antialias."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]


def seg_labels(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Segmentation: bilinear-resize the logits ``(C, H_in, W_in)`` to ``size = (H, W)``, argmax.

    Returns:
        ``(H, W)`` uint8 class ids.
    """
    # ``max(dim).indices`` is argmax (first maximum on ties) with a much faster CPU kernel
    labels = _resize(logits.float(), size).max(dim=0).indices
    return labels.to(torch.uint8).cpu().numpy()


def normal_map(raw: torch.Tensor, box: LetterboxParams) -> np.ndarray:
    """Normals: divide by the channel L2 norm (clamped at 1e-8), remove the letterbox padding and
    resize bilinearly to the original size. As in the official tool the result is not re-normalised
    after the resize, so vectors at resized pixels can be slightly shorter than 1.

    Args:
        raw: ``(3, H_in, W_in)`` unnormalised network output.

    Returns:
        ``(H, W, 3)`` float32 normals (x right, y down, z forward; OpenCV camera frame).
    """
    raw = raw.float()
    unit = raw / raw.norm(dim=0, keepdim=True).clamp(min=1e-8)
    out = _resize(unletterbox(unit, box), box.in_hw)
    return out.permute(1, 2, 0).cpu().numpy().astype(np.float32)


def metric_pointmap(
    canonical: torch.Tensor, scale: torch.Tensor | float, box: LetterboxParams
) -> np.ndarray:
    """Pointmap: metric = canonical / scale, un-letterbox; when upsampling, four 3×3 Gaussian blurs
    (sigma 0.8) before the bilinear resize to the original size.

    Args:
        canonical: ``(3, H_in, W_in)`` canonical pointmap; scale: the predicted scalar ``s``.

    Returns:
        ``(H, W, 3)`` float32 camera-frame XYZ in metres.
    """
    s = float(scale.reshape(-1)[0]) if isinstance(scale, torch.Tensor) else float(scale)
    if s == 0:
        raise ValueError("pointmap scale prediction is 0; cannot convert to metric units")
    metric = (
        unletterbox(canonical.float() / s, box).permute(1, 2, 0).cpu().numpy().astype(np.float32)
    )
    out_hw = tuple(box.in_hw)
    if out_hw[0] > metric.shape[0] or out_hw[1] > metric.shape[1]:
        metric = np.ascontiguousarray(metric)
        for _ in range(4):
            metric = cv2.GaussianBlur(metric, (3, 3), 0.8)
    if metric.shape[:2] != out_hw:
        t = torch.from_numpy(np.ascontiguousarray(metric)).permute(2, 0, 1)
        metric = _resize(t, out_hw).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(metric, dtype=np.float32)


def albedo_map(raw: torch.Tensor, box: LetterboxParams) -> np.ndarray:
    """Albedo: clamp to [0, 1], un-letterbox, bilinear resize to the original size.

    Args:
        raw: ``(3, H_in, W_in)`` RGB.

    Returns:
        ``(H, W, 3)`` float32 RGB in [0, 1].
    """
    out = _resize(unletterbox(raw.float().clamp(0, 1), box), box.in_hw)
    return out.clamp(0, 1).permute(1, 2, 0).cpu().numpy().astype(np.float32)

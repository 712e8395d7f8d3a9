"""Putting pictures next to each other."""

from __future__ import annotations

import cv2
import numpy as np


def side_by_side(*images: np.ndarray, gap: int = 0) -> np.ndarray:
    """Concatenate ``(H_i, W_i, 3)`` uint8 images left to right, resizing each to the first one's height.

    Returns:
        ``(H, sum W, 3)`` uint8 (plus ``gap`` white columns between panels).
    """
    if not images:
        raise ValueError("side_by_side needs at least one image")
    h = images[0].shape[0]
    panels = []
    for i, img in enumerate(images):
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"panel {i}: expected (H, W, 3), got {img.shape}")
        if img.shape[0] != h:
            w = max(1, round(img.shape[1] * h / img.shape[0]))
            img = cv2.resize(
                img, (w, h), interpolation=cv2.INTER_AREA if img.shape[0] > h else cv2.INTER_LINEAR
            )
        if i and gap:
            panels.append(np.full((h, gap, 3), 255, np.uint8))
        panels.append(img.astype(np.uint8, copy=False))
    return np.concatenate(panels, axis=1)


def fit_into(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``picture`` scaled to fit ``size`` ``(H, W)`` with its aspect ratio kept, centred on black.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    h, w = size
    ph, pw = picture.shape[:2]
    s = min(h / ph, w / pw)
    nh, nw = max(1, min(h, round(ph * s))), max(1, min(w, round(pw * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(picture, (nw, nh), interpolation=interp)
    out = np.zeros((h, w, 3), np.uint8)
    top, left = (h - nh) // 2, (w - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out

"""308-keypoint skeleton drawing in the metadata colours (like the official pose renderer)."""

from __future__ import annotations

import cv2
import numpy as np

from sapiens2.data.geometry import keypoints_in_image
from sapiens2.data.metadata import keypoints308


def default_radius(height: int, width: int) -> int:
    """Keypoint radius that scales with the image (the official demo uses 8 for ~4K-side images)."""
    return max(2, round(max(height, width) / 400))


def draw_pose(
    image: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    *,
    kpt_thr: float = 0.3,
    radius: int | None = None,
    thickness: int | None = None,
    boxes: np.ndarray | None = None,
) -> np.ndarray:
    """Draw skeletons: first the links whose two ends score ``>= kpt_thr`` and lie in the image
    (anti-aliased lines, link colours), then filled circles for keypoints scoring ``>= kpt_thr``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (not modified).
        keypoints: ``(N, 308, 2)`` image coordinates.
        scores: ``(N, 308)``.
        boxes: optional ``(N, 4)`` xyxy boxes drawn as thin white rectangles.

    Returns:
        ``(H, W, 3)`` uint8 RGB copy with the drawing.
    """
    meta = keypoints308()
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, meta.num_keypoints, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1, meta.num_keypoints)
    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    radius = default_radius(h, w) if radius is None else radius
    thickness = max(1, radius // 2) if thickness is None else thickness
    if boxes is not None:
        for x1, y1, x2, y2 in np.asarray(boxes).reshape(-1, 4):
            cv2.rectangle(out, (round(x1), round(y1)), (round(x2), round(y2)), (255, 255, 255), 1)
    for kp, sc in zip(keypoints, scores, strict=True):
        ok = (sc >= kpt_thr) & keypoints_in_image(kp, (h, w))
        for (a, b), color in zip(meta.skeleton, meta.link_colors, strict=True):
            if ok[a] and ok[b]:
                pa = (round(kp[a, 0]), round(kp[a, 1]))
                pb = (round(kp[b, 0]), round(kp[b, 1]))
                cv2.line(out, pa, pb, tuple(int(c) for c in color), thickness, cv2.LINE_AA)
        for k in np.flatnonzero(ok):
            center = (round(kp[k, 0]), round(kp[k, 1]))
            cv2.circle(out, center, radius, tuple(int(c) for c in meta.colors[k]), -1, cv2.LINE_AA)
    return out

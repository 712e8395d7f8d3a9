"""The ``Detector`` protocol and the official person-box post-filter (numpy only).

The top-down pose pipeline asks a detector for boxes, then does what the official demo does after
RTMDet (``sapiens/pose/tools/vis/vis_pose.py``): keep boxes with score > 0.3, greedy IoU-NMS at 0.3
with the "+1 pixel" area convention, and fall back to the whole image ``[0, 0, W-1, H-1]`` when
nothing is left. This module imports nothing but numpy so any caller can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Detector(Protocol):
    """Anything that maps an RGB image to person boxes and scores."""

    def __call__(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB -> (boxes (N, 4) float xyxy in image pixels, scores (N,))."""
        ...


@dataclass(frozen=True)
class PersonBoxes:
    """Person boxes of one image after the post-filter.

    Attributes:
        boxes: (K, 4) float32 ``x1, y1, x2, y2``, K >= 1, in descending score order.
        scores: (K,) float32 detector scores (1.0 for the whole-image fallback box).
        is_fallback: True when no detection survived and ``boxes`` is the whole image.
    """

    boxes: np.ndarray
    scores: np.ndarray
    is_fallback: bool


def _as_boxes_scores(boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {boxes.shape}")
    if scores.shape != (boxes.shape[0],):
        raise ValueError(f"scores must have shape ({boxes.shape[0]},), got {scores.shape}")
    return boxes, scores


def nms_plus_one(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> np.ndarray:
    """Greedy IoU non-maximum suppression with the "+1 pixel" box-size convention.

    Box width is ``x2 - x1 + 1`` (likewise height and overlaps, overlaps floored at 0). Boxes are
    visited by descending score (ties: the later index first); a box is dropped when its IoU with
    an already kept box is strictly greater than ``iou_thr``. Computed in float32.

    Args:
        boxes: (N, 4) xyxy.
        scores: (N,).
        iou_thr: suppression threshold.

    Returns:
        (K,) int64 indices of the kept boxes, in descending score order.
    """
    boxes, scores = _as_boxes_scores(boxes, scores)
    x1, y1, x2, y2 = boxes.T
    one = np.float32(1)
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    order = np.argsort(scores, kind="stable")[::-1]
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(
            np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one
        )
        h = np.maximum(
            np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one
        )
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_thr]
    return np.asarray(keep, dtype=np.int64)


def filter_person_boxes(
    boxes: np.ndarray,
    scores: np.ndarray,
    image_size: tuple[int, int],
    *,
    score_thr: float = 0.3,
    nms_thr: float = 0.3,
) -> PersonBoxes:
    """The official post-filter: score > ``score_thr``, NMS at ``nms_thr``, whole-image fallback.

    Args:
        boxes: (N, 4) xyxy detector boxes in image pixels.
        scores: (N,) detector scores.
        image_size: ``(H, W)`` of the image (for the fallback box ``[0, 0, W-1, H-1]``).
        score_thr: keep boxes with score strictly greater than this.
        nms_thr: IoU threshold of :func:`nms_plus_one`.

    Returns:
        :class:`PersonBoxes` with at least one box.
    """
    boxes, scores = _as_boxes_scores(boxes, scores)
    h, w = image_size
    if h < 1 or w < 1:
        raise ValueError(f"image_size must be a positive (H, W), got {image_size}")
    confident = scores > score_thr
    boxes, scores = boxes[confident], scores[confident]
    keep = nms_plus_one(boxes, scores, nms_thr)
    if keep.size == 0:
        whole = np.array([[0, 0, w - 1, h - 1]], dtype=np.float32)
        return PersonBoxes(whole, np.ones(1, dtype=np.float32), is_fallback=True)
    return PersonBoxes(boxes[keep], scores[keep], is_fallback=False)


def detect_person_boxes(
    detector: Detector,
    image_rgb: np.ndarray,
    *,
    score_thr: float = 0.3,
    nms_thr: float = 0.3,
) -> PersonBoxes:
    """Run ``detector`` on one image and apply :func:`filter_person_boxes`.

    Args:
        detector: any :class:`Detector`.
        image_rgb: (H, W, 3) uint8 RGB image.
        score_thr: score threshold of the post-filter.
        nms_thr: NMS IoU threshold of the post-filter.

    Returns:
        :class:`PersonBoxes` for the image.
    """
    boxes, scores = detector(image_rgb)
    return filter_person_boxes(
        boxes, scores, image_rgb.shape[:2], score_thr=score_thr, nms_thr=nms_thr
    )

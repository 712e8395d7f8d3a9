"""Typed prediction results (numpy arrays) and keypoint layout converters."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sapiens2.data.geometry import keypoints_in_image  # defined below viz, which uses it too
from sapiens2.data.metadata import keypoints308

COCO17_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
COCO_WHOLEBODY_NUM_KEYPOINTS = 133
# COCO-WholeBody hand roots (91 left, 112 right) are the wrists; the official 308 mapping leaves
# them out, we fill them from the 308 wrists.
_HAND_ROOTS = {91: "left_wrist", 112: "right_wrist"}


def coco_wholebody_index() -> np.ndarray:
    """``(133,)`` int array: for each COCO-WholeBody keypoint the 308-layout index, ``-1`` if absent.

    From the official COCO-WholeBody → Goliath name mapping (body 17, feet 6, 30 finger joints),
    plus the two hand roots taken from the wrists. The 68 COCO face points have no counterpart.
    """
    meta = keypoints308()
    idx = np.full(COCO_WHOLEBODY_NUM_KEYPOINTS, -1, dtype=np.int64)
    for coco, gol in meta.coco_wholebody_to_goliath.items():
        idx[coco] = gol
    for coco, name in _HAND_ROOTS.items():
        idx[coco] = meta.index(name)
    return idx


def coco17_index() -> np.ndarray:
    """``(17,)`` int array: the 308-layout index of each COCO-17 body keypoint (all exist)."""
    meta = keypoints308()
    return np.array([meta.index(n) for n in COCO17_NAMES], dtype=np.int64)


def convert_keypoints(
    keypoints: np.ndarray, scores: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Re-index ``(N, 308, 2)`` keypoints and ``(N, 308)`` scores into another layout.

    Args:
        index: ``(K',)`` 308-layout indices, ``-1`` where the target point has no source.

    Returns:
        ``(N, K', 2)`` keypoints and ``(N, K')`` scores; absent points are 0 with score 0.
    """
    keypoints = np.asarray(keypoints)
    scores = np.asarray(scores)
    if keypoints.ndim != 3 or keypoints.shape[1:] != (308, 2):
        raise ValueError(f"expected keypoints of shape (N, 308, 2), got {keypoints.shape}")
    have = index >= 0
    kp = np.zeros((keypoints.shape[0], len(index), 2), dtype=keypoints.dtype)
    sc = np.zeros((scores.shape[0], len(index)), dtype=scores.dtype)
    kp[:, have] = keypoints[:, index[have]]
    sc[:, have] = scores[:, index[have]]
    return kp, sc


@dataclass
class PoseResult:
    """308-keypoint poses of the people in one image.

    Attributes:
        keypoints: ``(N, 308, 2)`` float32 image coordinates ``(x, y)``.
        scores: ``(N, 308)`` float32 raw heatmap maxima (not normalised; can exceed 1).
        boxes: ``(N, 4)`` float32 xyxy person boxes the crops were taken from.
        box_scores: ``(N,)`` float32 detector scores (1 for user / mask / whole-image boxes).
        image_size: ``(H, W)`` of the image.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray
    image_size: tuple[int, int]

    @property
    def num_people(self) -> int:
        return int(self.keypoints.shape[0])

    def in_image(self) -> np.ndarray:
        """``(N, 308)`` bool: the keypoints that lie on the image (:func:`keypoints_in_image`)."""
        return keypoints_in_image(self.keypoints, self.image_size)

    def to_coco17(self) -> tuple[np.ndarray, np.ndarray]:
        """COCO-17 body keypoints ``(N, 17, 2)`` and scores ``(N, 17)``."""
        return convert_keypoints(self.keypoints, self.scores, coco17_index())

    def to_coco_wholebody(self) -> tuple[np.ndarray, np.ndarray]:
        """COCO-WholeBody-133 keypoints ``(N, 133, 2)`` and scores ``(N, 133)``; the 68 face points
        (and the 10 finger base joints) have no 308 counterpart and are 0 with score 0."""
        return convert_keypoints(self.keypoints, self.scores, coco_wholebody_index())


@dataclass
class SegResult:
    """Body-part segmentation: ``labels`` ``(H, W)`` uint8 class ids 0..28 (0 = background)."""

    labels: np.ndarray

    @property
    def foreground(self) -> np.ndarray:
        """``(H, W)`` bool person mask (any non-background class)."""
        return self.labels > 0


@dataclass
class NormalResult:
    """Surface normals ``(H, W, 3)`` float32 (OpenCV camera frame; unit length before the resize to
    the original size); ``mask`` ``(H, W)`` bool foreground when masking was requested, else None."""

    normals: np.ndarray
    mask: np.ndarray | None = None


@dataclass
class PointmapResult:
    """Metric camera-frame point map.

    Attributes:
        points: ``(H, W, 3)`` float32 XYZ in metres (x right, y down, z forward).
        scale: the predicted canonical scale ``s = 768 / fx`` (fx in network-input pixels).
        mask: ``(H, W)`` bool foreground, or None.
    """

    points: np.ndarray
    scale: float
    mask: np.ndarray | None = None

    @property
    def depth(self) -> np.ndarray:
        """``(H, W)`` float32 Z in metres."""
        return self.points[..., 2]


@dataclass
class AlbedoResult:
    """Albedo ``(H, W, 3)`` float32 RGB in [0, 1]; ``mask`` ``(H, W)`` bool or None."""

    albedo: np.ndarray
    mask: np.ndarray | None = field(default=None)


Result = PoseResult | SegResult | NormalResult | PointmapResult | AlbedoResult

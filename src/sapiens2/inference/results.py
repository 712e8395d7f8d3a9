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


#: The focal length (network-input pixels) of the canonical pointmap space: ``s = 768 / fx``.
CANONICAL_FOCAL_LENGTH = 768.0


@dataclass(frozen=True)
class PinholeFit:
    """Pinhole intrinsics fitted to a point map (:func:`fit_intrinsics`).

    Attributes:
        K: ``(3, 3)`` float64 ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in image pixels
            (pixel-centre coordinates).
        rms_px: root-mean-square reprojection error of the points used, in pixels.
        points: how many points the fit used.
    """

    K: np.ndarray
    rms_px: float
    points: int


def fit_intrinsics(
    points: np.ndarray,
    mask: np.ndarray | None = None,
    focal: tuple[float, float] | None = None,
    max_points: int = 1 << 16,
) -> PinholeFit | None:
    """The pinhole camera under which pixel ``(u, v)`` sees ``points[v, u]``: least squares of
    ``u = fx·X/Z + cx`` and ``v = fy·Y/Z + cy`` over the valid pixels (finite, ``Z > 0``, in
    ``mask``; an even subsample of at most ``max_points``).

    Args:
        focal: ``(fx, fy)`` to keep as given (only the principal point is fitted); None fits
            all four.

    Returns:
        The fit, or None with fewer than 16 valid pixels (or a degenerate map).
    """
    pts = np.asarray(points)
    valid = np.isfinite(pts).all(axis=-1) & (pts[..., 2] > 0)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    vs, us = np.nonzero(valid)
    if len(us) < 16:
        return None
    step = max(1, len(us) // max_points)
    vs, us = vs[::step], us[::step]
    p = pts[vs, us].astype(np.float64)
    a = np.stack([p[:, 0] / p[:, 2], p[:, 1] / p[:, 2]], axis=1)  # normalised image coordinates
    k = np.eye(3)
    residual = []
    for axis, pix in ((0, us.astype(np.float64)), (1, vs.astype(np.float64))):
        if focal is not None:
            f = float(focal[axis])
            c = float(np.mean(pix - f * a[:, axis]))
        else:
            design = np.stack([a[:, axis], np.ones_like(pix)], axis=1)
            (f, c), *_ = np.linalg.lstsq(design, pix, rcond=None)
            if not np.isfinite(f) or abs(f) < 1e-9:
                return None
        k[axis, axis], k[axis, 2] = f, c
        residual.append(pix - (f * a[:, axis] + c))
    rms = float(np.sqrt(np.mean(residual[0] ** 2 + residual[1] ** 2)))
    return PinholeFit(k, rms, len(us))


@dataclass
class PointmapResult:
    """Metric camera-frame point map.

    Attributes:
        points: ``(H, W, 3)`` float32 XYZ in metres (x right, y down, z forward).
        scale: the predicted canonical scale ``s = 768 / fx`` (fx in network-input pixels).
        mask: ``(H, W)`` bool foreground, or None.
        focal_length: ``(fx, fy)`` in image pixels that the scale implies (``768 / s`` undone
            the network input's resize), or None when unknown.
    """

    points: np.ndarray
    scale: float
    mask: np.ndarray | None = None
    focal_length: tuple[float, float] | None = None

    @property
    def depth(self) -> np.ndarray:
        """``(H, W)`` float32 Z in metres."""
        return self.points[..., 2]

    def camera(self) -> dict:
        """The camera of the point map, for ``<name>_camera.json``: the predicted scale, the
        focal length it implies, ``K`` (that focal length, with the principal point fitted to the
        points), ``K_fit`` (all four intrinsics fitted to the points) and their reprojection
        errors (see docs/formats.md)."""
        h, w = self.points.shape[:2]
        fixed = (
            fit_intrinsics(self.points, self.mask, self.focal_length) if self.focal_length else None
        )
        free = fit_intrinsics(self.points, self.mask)

        def k(fit: PinholeFit | None):
            return None if fit is None else np.round(fit.K, 4).tolist()

        def rms(fit: PinholeFit | None):
            return None if fit is None else round(fit.rms_px, 4)

        focal = (
            None if self.focal_length is None else [round(float(f), 4) for f in self.focal_length]
        )
        return {
            "image_size": [int(h), int(w)],
            "units": "metres",
            "frame": "OpenCV camera: x right, y down, z forward; pixel centres at integers",
            "scale": float(self.scale),
            "canonical_focal_length": CANONICAL_FOCAL_LENGTH,
            "focal_length_px": focal,
            "K": k(fixed),
            "K_rms_px": rms(fixed),
            "K_fit": k(free),
            "K_fit_rms_px": rms(free),
            "fit_points": None if free is None else free.points,
        }


@dataclass
class AlbedoResult:
    """Albedo ``(H, W, 3)`` float32 RGB in [0, 1]; ``mask`` ``(H, W)`` bool or None."""

    albedo: np.ndarray
    mask: np.ndarray | None = field(default=None)


Result = PoseResult | SegResult | NormalResult | PointmapResult | AlbedoResult

"""Pure image geometry shared by training transforms and inference pre/post-processing.

Conventions used throughout: images are ``(H, W, C)`` numpy arrays; points are ``(..., 2)`` arrays of
``(x, y)`` in **pixel-centre** coordinates (the centre of the top-left pixel is ``(0, 0)``); sizes are
``(H, W)`` tuples unless a name says otherwise. Boxes are ``xyxy`` unless a name says ``xywh``.

Top-down crops follow the official UDP affine (``PoseGetBBoxCenterScale`` and ``PoseTopdownAffine``
in ``sapiens/pose/src/datasets/transforms/pose_transforms.py``, ``get_udp_warp_matrix`` in
``sapiens/pose/src/datasets/transforms/bbox_transforms.py``): a person box becomes a centre and a
``scale = (w, h) * padding`` extent, the extent is widened to the crop aspect ratio, and the crop is
``cv2.warpAffine`` with the "unbiased data processing" matrix that maps the extent onto
``(W_out - 1, H_out - 1)`` pixel steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "LetterboxParams",
    "bbox_xywh_to_xyxy",
    "bbox_xyxy_to_center_scale",
    "crop_to_image_points",
    "fix_aspect_ratio",
    "letterbox_intrinsics",
    "letterbox_params",
    "scale_intrinsics",
    "topdown_interpolation",
    "transform_points",
    "udp_warp_matrix",
    "warp_topdown",
]


def bbox_xywh_to_xyxy(bbox: np.ndarray) -> np.ndarray:
    """Convert ``(..., 4)`` ``[x, y, w, h]`` boxes to ``[x1, y1, x2, y2]``."""
    b = np.asarray(bbox, dtype=np.float64)
    return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:4]], axis=-1)


def bbox_xyxy_to_center_scale(
    bbox: np.ndarray, padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """Box ``(..., 4)`` xyxy -> centre ``(..., 2)`` and scale ``(..., 2)`` = (w, h) * padding."""
    b = np.asarray(bbox, dtype=np.float64)
    center = 0.5 * (b[..., :2] + b[..., 2:4])
    scale = (b[..., 2:4] - b[..., :2]) * padding
    return center, scale


def fix_aspect_ratio(scale: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """Grow the shorter side of ``scale`` (..., 2) = (w, h) so that ``w / h == aspect_ratio``."""
    s = np.asarray(scale, dtype=np.float64).copy()
    w, h = s[..., 0].copy(), s[..., 1].copy()
    wide = w > aspect_ratio * h
    s[..., 0] = np.where(wide, w, h * aspect_ratio)
    s[..., 1] = np.where(wide, w / aspect_ratio, h)
    return s


def udp_warp_matrix(
    center: np.ndarray, scale: np.ndarray, rotation_deg: float, output_hw: tuple[int, int]
) -> np.ndarray:
    """The UDP affine matrix taking image pixels into a ``output_hw`` crop.

    The box of extent ``scale = (sw, sh)`` centred at ``center = (cx, cy)`` is rotated by
    ``rotation_deg`` about its centre and scaled by ``sx = (W_out - 1) / sw``, ``sy = (H_out - 1) / sh``:
    ``x' = sx * ( cos(t)(x - cx) - sin(t)(y - cy) + sw / 2)`` and
    ``y' = sy * ( sin(t)(x - cx) + cos(t)(y - cy) + sh / 2)``.

    Args:
        center: (2,) box centre in image pixels.
        scale: (2,) box extent (w, h) in image pixels (after padding and aspect fix).
        rotation_deg: rotation in degrees.
        output_hw: (H_out, W_out) of the crop.

    Returns:
        (2, 3) float64 matrix for ``cv2.warpAffine`` / :func:`transform_points`.
    """
    cx, cy = (float(v) for v in np.asarray(center, dtype=np.float64).reshape(2))
    sw, sh = (float(v) for v in np.asarray(scale, dtype=np.float64).reshape(2))
    if sw <= 0 or sh <= 0:
        raise ValueError(f"udp_warp_matrix: scale must be positive, got {(sw, sh)}")
    out_h, out_w = output_hw
    sx = (out_w - 1) / sw
    sy = (out_h - 1) / sh
    t = math.radians(rotation_deg)
    c, s = math.cos(t), math.sin(t)
    return np.array(
        [
            [sx * c, -sx * s, sx * (-c * cx + s * cy + 0.5 * sw)],
            [sy * s, sy * c, sy * (-s * cx - c * cy + 0.5 * sh)],
        ],
        dtype=np.float64,
    )


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to ``(..., 2)`` points; returns the same shape (float64)."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def topdown_interpolation(scale: np.ndarray, output_hw: tuple[int, int]) -> int:
    """The official interpolation choice: INTER_AREA if the crop shrinks (min UDP factor < 1) else INTER_CUBIC."""
    sw, sh = (float(v) for v in np.asarray(scale, dtype=np.float64).reshape(2))
    out_h, out_w = output_hw
    factor = min((out_w - 1) / sw, (out_h - 1) / sh)
    return cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC


def warp_topdown(
    image: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    output_hw: tuple[int, int],
    rotation_deg: float = 0.0,
    border_value: float = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """UDP top-down crop of ``image`` (H, W[, C]); ``scale`` must already have the crop aspect ratio.

    Returns:
        ``(crop, matrix)``: crop (H_out, W_out[, C]) of the input dtype (constant border), and the
        (2, 3) matrix mapping image points into the crop.
    """
    matrix = udp_warp_matrix(center, scale, rotation_deg, output_hw)
    flags = topdown_interpolation(scale, output_hw)
    out_h, out_w = output_hw
    crop = cv2.warpAffine(
        image,
        matrix,
        (out_w, out_h),
        flags=flags,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border_value,
    )
    return crop, matrix


def crop_to_image_points(
    points: np.ndarray, center: np.ndarray, scale: np.ndarray, input_hw: tuple[int, int]
) -> np.ndarray:
    """Map crop-input points back to image pixels as the official decoder does (rotation 0).

    ``p_img = p / (W_in, H_in) * scale + center - scale / 2`` (as ``sapiens/pose/tools/vis/vis_pose.py``). Note this uses
    ``W_in`` rather than the UDP ``W_in - 1``; it is the official mapping, kept for output parity.

    Args:
        points: (..., 2) in crop-input pixels.
        center: (2,) or broadcastable; scale: (2,) (after the aspect fix); input_hw: (H_in, W_in).
    """
    h, w = input_hw
    p = np.asarray(points, dtype=np.float64)
    s = np.asarray(scale, dtype=np.float64)
    return p / np.array([w, h], dtype=np.float64) * s + np.asarray(center, np.float64) - 0.5 * s


@dataclass(frozen=True)
class LetterboxParams:
    """Aspect-preserving resize into ``out_hw`` with centred zero padding (official
    ``NormalResizePadImage``, ``sapiens/dense/src/datasets/transforms/normal_transforms.py``).

    ``new_hw = (int(h * s), int(w * s))`` with ``s = min(W_out / w, H_out / h)`` (truncation), and
    padding ``left = pad_w // 2, right = pad_w - left, top = pad_h // 2, bottom = pad_h - top``.
    """

    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    new_hw: tuple[int, int]
    left: int
    right: int
    top: int
    bottom: int

    @property
    def factors(self) -> tuple[float, float]:
        """Actual (x, y) resize factors ``new / in`` (they differ slightly from ``s`` by truncation)."""
        return self.new_hw[1] / self.in_hw[1], self.new_hw[0] / self.in_hw[0]

    def image_to_letterbox(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 2) image pixel-centre points to letterboxed pixels."""
        fx, fy = self.factors
        p = np.asarray(points, dtype=np.float64)
        x = (p[..., 0] + 0.5) * fx - 0.5 + self.left
        y = (p[..., 1] + 0.5) * fy - 0.5 + self.top
        return np.stack([x, y], axis=-1)

    def letterbox_to_image(self, points: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`image_to_letterbox`."""
        fx, fy = self.factors
        p = np.asarray(points, dtype=np.float64)
        x = (p[..., 0] - self.left + 0.5) / fx - 0.5
        y = (p[..., 1] - self.top + 0.5) / fy - 0.5
        return np.stack([x, y], axis=-1)


def letterbox_params(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> LetterboxParams:
    """Compute the letterbox of an ``in_hw`` image into ``out_hw`` (see :class:`LetterboxParams`)."""
    h, w = (int(v) for v in in_hw)
    out_h, out_w = (int(v) for v in out_hw)
    if min(h, w, out_h, out_w) <= 0:
        raise ValueError(f"letterbox_params: sizes must be positive, got in {in_hw}, out {out_hw}")
    s = min(out_w / w, out_h / h)
    new_w, new_h = max(1, int(w * s)), max(1, int(h * s))
    pad_w, pad_h = out_w - new_w, out_h - new_h
    left, top = pad_w // 2, pad_h // 2
    return LetterboxParams(
        in_hw=(h, w),
        out_hw=(out_h, out_w),
        new_hw=(new_h, new_w),
        left=left,
        right=pad_w - left,
        top=top,
        bottom=pad_h - top,
    )


def scale_intrinsics(K: np.ndarray, fx_ratio: float, fy_ratio: float) -> np.ndarray:
    """Intrinsics after resizing an image by ``(fx_ratio, fy_ratio)`` (pixel-centre convention).

    ``f' = f * r`` and ``c' = (c + 0.5) * r - 0.5``, so a 3-D point projects onto the pixel that the
    resize moved its original pixel to.
    """
    K2 = np.asarray(K, dtype=np.float64).copy()
    K2[0, 0] *= fx_ratio
    K2[0, 1] *= fx_ratio
    K2[0, 2] = (K2[0, 2] + 0.5) * fx_ratio - 0.5
    K2[1, 1] *= fy_ratio
    K2[1, 2] = (K2[1, 2] + 0.5) * fy_ratio - 0.5
    return K2


def letterbox_intrinsics(K: np.ndarray, params: LetterboxParams) -> np.ndarray:
    """Intrinsics (3, 3) of the letterboxed image: scaled as the resize, shifted by the padding."""
    fx, fy = params.factors
    K2 = scale_intrinsics(K, fx, fy)
    K2[0, 2] += params.left
    K2[1, 2] += params.top
    return K2


def keypoints_in_image(keypoints: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Which keypoints lie on the image: finite, ``0 <= x < W`` and ``0 <= y < H``.

    Top-down keypoints can land outside the image: the crop around a person is padded (1.25x)
    and widened to the network's aspect ratio, so it reaches past the image borders.

    Args:
        keypoints: ``(..., 2)`` image coordinates ``(x, y)``.
        image_size: ``(H, W)``.

    Returns:
        ``(...)`` bool.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    h, w = image_size
    x, y = kp[..., 0], kp[..., 1]
    with np.errstate(invalid="ignore"):
        return np.isfinite(kp).all(-1) & (x >= 0) & (x < w) & (y >= 0) & (y < h)

"""Top-down person crops for pose (as ``sapiens/pose/tools/vis/vis_pose.py``).

The geometry itself (box → centre/scale, aspect fix, UDP warp) lives in
:mod:`sapiens2.data.geometry`, shared with training; this module applies it to all boxes of an image.
"""

from __future__ import annotations

import numpy as np

from sapiens2.data.geometry import (
    bbox_xyxy_to_center_scale,
    crop_to_image_points,
    fix_aspect_ratio,
    warp_topdown,
)

BBOX_PADDING = 1.25


def crop_people(
    image: np.ndarray, boxes: np.ndarray, input_hw: tuple[int, int], padding: float = BBOX_PADDING
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UDP crops of every person box of one image, ready to be batched.

    Each box is padded by ``padding``, widened to the aspect ratio ``W / H`` of ``input_hw`` and
    warped with the UDP affine (INTER_AREA when shrinking, else INTER_CUBIC; zero border).

    Args:
        image: ``(H_img, W_img, 3)`` uint8 RGB.
        boxes: ``(N, 4)`` xyxy.
        input_hw: network input ``(H, W)``.

    Returns:
        crops ``(N, H, W, 3)`` uint8, centers ``(N, 2)`` and scales ``(N, 2)`` (after the aspect fix),
        both float64.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    center, scale = bbox_xyxy_to_center_scale(boxes, padding)
    scale = fix_aspect_ratio(scale, input_hw[1] / input_hw[0])
    crops = np.empty((len(boxes), input_hw[0], input_hw[1], 3), dtype=image.dtype)
    for i in range(len(boxes)):
        crops[i] = warp_topdown(image, center[i], scale[i], input_hw)[0]
    return crops, center, scale


def keypoints_to_image(
    keypoints: np.ndarray, center: np.ndarray, scale: np.ndarray, input_hw: tuple[int, int]
) -> np.ndarray:
    """Map decoded keypoints ``(N, K, 2)`` from network-input pixels to image pixels.

    The official ``p / (W, H) * scale + center - scale / 2``; with the decoder's
    ``/ (W_hm - 1) * W`` step this is the exact inverse of the UDP warp for heatmap pixels.

    Returns:
        ``(N, K, 2)`` float32.
    """
    out = crop_to_image_points(
        np.asarray(keypoints), np.asarray(center)[:, None], np.asarray(scale)[:, None], input_hw
    )
    return out.astype(np.float32)

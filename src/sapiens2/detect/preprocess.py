"""Test-time preprocessing of mmdet's RTMDet pipeline (``mmdet.apis.inference_detector``
with the official config; see docs/detector.md).

RGB uint8 -> BGR, keep-ratio resize (long side to ``input_size``, cv2 bilinear on uint8), pad
bottom/right with ``pad_value`` to a square, HWC -> CHW float, ``(x - mean) / std`` in BGR order.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from sapiens2.data.image import check_rgb
from sapiens2.detect.config import DetectorTestConfig


@dataclass(frozen=True)
class LetterboxMeta:
    """Geometry of one preprocessed image.

    Attributes:
        ori_shape: ``(H, W)`` of the input image.
        resized_shape: ``(h, w)`` after the keep-ratio resize (before padding).
        scale_factor: ``(w_scale, h_scale) = (w / W, h / H)`` (Python floats, as mmdet records).
    """

    ori_shape: tuple[int, int]
    resized_shape: tuple[int, int]
    scale_factor: tuple[float, float]


def check_rgb_image(image: np.ndarray, name: str = "image") -> None:
    """Raise unless ``image`` is an (H, W, 3) uint8 array with H, W >= 1 (:func:`sapiens2.data.
    image.check_rgb`)."""
    check_rgb(image, name)


def letterbox(image_rgb: np.ndarray, cfg: DetectorTestConfig) -> tuple[np.ndarray, LetterboxMeta]:
    """Resize and pad one image the way mmdet's ``Resize(keep_ratio=True)`` + ``Pad`` do.

    Args:
        image_rgb: (H, W, 3) uint8 RGB image.
        cfg: test settings (``input_size``, ``pad_value``).

    Returns:
        ``(padded, meta)``: ``padded`` is the (S, S, 3) uint8 **BGR** image, S = ``input_size``.
    """
    check_rgb_image(image_rgb)
    h, w = image_rgb.shape[:2]
    size = cfg.input_size
    # mmcv.rescale_size: factor min(long_target / long, short_target / short), rounded half up.
    factor = min(size / max(h, w), size / min(h, w))
    new_w, new_h = int(w * factor + 0.5), int(h * factor + 0.5)
    if new_w < 1 or new_h < 1:
        raise ValueError(f"image of shape {image_rgb.shape} is too elongated to resize to {size}")
    bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
    if (new_w, new_h) == (w, h):
        resized = bgr
    else:
        resized = cv2.resize(bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    padded = np.full((size, size, 3), cfg.pad_value, dtype=np.uint8)
    padded[:new_h, :new_w] = resized
    meta = LetterboxMeta(
        ori_shape=(h, w), resized_shape=(new_h, new_w), scale_factor=(new_w / w, new_h / h)
    )
    return padded, meta


def normalize(batch_bgr: torch.Tensor, cfg: DetectorTestConfig) -> torch.Tensor:
    """(B, S, S, 3) uint8 BGR -> (B, 3, S, S) float32 ``(x - mean) / std`` (on the batch's device)."""
    # Contiguous CHW like mmdet's PackDetInputs (a channels-last view would pick other conv kernels).
    x = batch_bgr.permute(0, 3, 1, 2).contiguous().float()
    mean = torch.tensor(cfg.mean_bgr, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std_bgr, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std

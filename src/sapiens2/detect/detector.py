"""The callable person detector: RGB images in, boxes and scores out (mmdet-equivalent)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from sapiens2.detect.config import DetectorTestConfig
from sapiens2.detect.model import RTMDet
from sapiens2.detect.postprocess import decode_image
from sapiens2.detect.preprocess import LetterboxMeta, check_rgb_image, letterbox, normalize


class Detections(NamedTuple):
    """Detections of one image, sorted by descending score (unpacks as ``boxes, scores``).

    Attributes:
        boxes: (N, 4) float32 ``x1, y1, x2, y2`` in original-image pixels (not clipped to it).
        scores: (N,) float32 sigmoid scores.
    """

    boxes: np.ndarray
    scores: np.ndarray


class RTMDetDetector:
    """RTMDet with mmdet's test-time pipeline; satisfies :class:`sapiens2.detect.Detector`.

    Args:
        model: the network (moved to ``device`` and set to eval mode here).
        test_config: pre/post-processing settings (defaults: the official Sapiens person config).
        classes: class names stored with the weights (informational).
        device: where the network runs (default: the model's current device).
    """

    def __init__(
        self,
        model: RTMDet,
        test_config: DetectorTestConfig | None = None,
        *,
        classes: tuple[str, ...] = ("person",),
        device: torch.device | str | None = None,
    ) -> None:
        if model.config.num_classes != 1:
            raise ValueError(
                f"only single-class (person) RTMDet models are supported, this one has "
                f"{model.config.num_classes} classes"
            )
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        self.test_config = test_config or DetectorTestConfig()
        self.classes = classes

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The network's dtype; inputs are normalised in float32, then cast to it."""
        return next(self.model.parameters()).dtype

    def __call__(self, image_rgb: np.ndarray) -> Detections:
        """Detect people in one image.

        Args:
            image_rgb: (H, W, 3) uint8 RGB image.

        Returns:
            :class:`Detections` with boxes (N, 4) and scores (N,), N <= ``max_per_img``.
        """
        return self.detect_batch([image_rgb])[0]

    @torch.inference_mode()
    def detect_batch(
        self, images_rgb: Sequence[np.ndarray], *, batch_size: int = 8
    ) -> list[Detections]:
        """Detect people in several images (e.g. video frames), ``batch_size`` per forward.

        Args:
            images_rgb: (H_i, W_i, 3) uint8 RGB images; sizes may differ.
            batch_size: images per network forward.

        Returns:
            One :class:`Detections` per image, in order.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for i, image in enumerate(images_rgb):
            check_rgb_image(image, name=f"image {i}")
        results: list[Detections] = []
        for start in range(0, len(images_rgb), batch_size):
            chunk = images_rgb[start : start + batch_size]
            padded, metas = zip(*(letterbox(img, self.test_config) for img in chunk), strict=True)
            batch = torch.from_numpy(np.stack(padded)).to(self.device)
            x = normalize(batch, self.test_config).to(self.dtype)
            results.extend(self._detect_tensor(x, list(metas)))
        return results

    def _detect_tensor(self, x: torch.Tensor, metas: list[LetterboxMeta]) -> list[Detections]:
        cls_scores, bbox_preds = self.model(x)
        out = []
        for b, meta in enumerate(metas):
            boxes, scores = decode_image(
                [c[b].float() for c in cls_scores],
                [p[b].float() for p in bbox_preds],
                self.model.config.strides,
                meta,
                self.test_config,
            )
            out.append(Detections(boxes.cpu().numpy(), scores.cpu().numpy()))
        return out

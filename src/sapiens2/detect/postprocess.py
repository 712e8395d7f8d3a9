"""Decoding of RTMDet head outputs into boxes (mmdet's ``predict_by_feat`` in
``mmdet/models/dense_heads/base_dense_head.py``, with the official ``test_cfg``).

Priors at cell corners, sigmoid scores above ``score_thr``, top ``nms_pre`` per level, distance
decoding clamped to the padded network input, rescale to the original image, no NMS (the Sapiens
config sets ``nms=None``), top ``max_per_img`` by score.
"""

from __future__ import annotations

import torch

from sapiens2.detect.config import DetectorTestConfig
from sapiens2.detect.preprocess import LetterboxMeta


def level_priors(height: int, width: int, stride: int, device: torch.device) -> torch.Tensor:
    """(H*W, 2) float32 ``(x, y) = (j*stride, i*stride)``, row-major (y outer, x inner)."""
    ys = torch.arange(height, device=device, dtype=torch.float32) * stride
    xs = torch.arange(width, device=device, dtype=torch.float32) * stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def decode_image(
    cls_scores: list[torch.Tensor],
    bbox_preds: list[torch.Tensor],
    strides: tuple[int, ...],
    meta: LetterboxMeta,
    cfg: DetectorTestConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn one image's head outputs into detections.

    Args:
        cls_scores: per level (1, H_l, W_l) class logits of this image (single class).
        bbox_preds: per level (4, H_l, W_l) distances (left, top, right, bottom) in input pixels.
        strides: stride of each level.
        meta: the image's letterbox geometry.
        cfg: thresholds and limits.

    Returns:
        ``(boxes (N, 4) float32 xyxy in original-image pixels, scores (N,) float32)`` sorted by
        descending score, N <= ``max_per_img``. Boxes are not clipped to the original image.
    """
    all_boxes, all_scores = [], []
    for logits, dists, stride in zip(cls_scores, bbox_preds, strides, strict=True):
        if logits.shape[0] != 1:
            raise ValueError(f"expected single-class logits (1, H, W), got {tuple(logits.shape)}")
        height, width = logits.shape[-2:]
        scores = logits.reshape(-1).sigmoid()
        dists = dists.permute(1, 2, 0).reshape(-1, 4)
        valid = torch.nonzero(scores > cfg.score_thr).squeeze(1)
        scores = scores[valid]
        scores, order = scores.sort(descending=True)
        keep = valid[order[: cfg.nms_pre]]
        scores = scores[: cfg.nms_pre]
        points = level_priors(height, width, stride, logits.device)[keep]
        d = dists[keep]
        boxes = torch.cat([points - d[:, :2], points + d[:, 2:]], dim=1)
        # Clamp to the padded network input (mmdet's img_shape after Pad), not the image extent.
        size = float(cfg.input_size)
        boxes = boxes.clamp(min=0.0, max=size)
        all_boxes.append(boxes)
        all_scores.append(scores)
    boxes = torch.cat(all_boxes)
    scores = torch.cat(all_scores)
    # mmdet multiplies by float32(1 / scale) (reciprocal taken in Python double).
    w_scale, h_scale = meta.scale_factor
    inv = torch.tensor([1 / w_scale, 1 / h_scale] * 2, dtype=torch.float32, device=boxes.device)
    boxes = boxes * inv
    wh = boxes[:, 2:] - boxes[:, :2]
    big = (wh > cfg.min_bbox_size).all(dim=1)
    boxes, scores = boxes[big], scores[big]
    scores, order = scores.sort(descending=True)
    boxes = boxes[order]
    return boxes[: cfg.max_per_img], scores[: cfg.max_per_img]

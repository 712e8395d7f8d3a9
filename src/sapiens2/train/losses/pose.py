"""Pose heatmap losses: weighted keypoint MSE ×10 and its OHKM variant.

The MSE is ``KeypointMSELoss`` (``sapiens/pose/src/models/losses/heatmap_loss.py``) with the weight
of ``sapiens/pose/configs/keypoints308/shutterstock_goliath_3po/*.py``; it equals the official term
on ``tests/fixtures/official/losses.*``. OHKM (the configs' commented ``KeypointOHKMMSELoss``
alternative) is not fixture-tested.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sapiens2.train.losses.common import check_shape, get_tensor, to_float, weighted_sum

__all__ = ["PoseLoss", "PoseLossWeights", "keypoint_mse_loss", "keypoint_ohkm_mse_loss"]


def _per_keypoint(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``w_{b,k} · mean_{h,w} (pred - target)²`` as ``(B, K)``."""
    check_shape(pred, 4, "the predicted heatmaps", "pose", "(B, K, h, w)")
    check_shape(target, 4, "batch['heatmaps']", "pose", "(B, K, h, w)")
    if pred.shape != target.shape:
        raise ValueError(
            f"pose loss: predicted heatmaps {tuple(pred.shape)} and batch['heatmaps'] "
            f"{tuple(target.shape)} differ"
        )
    if weights.shape != pred.shape[:2]:
        raise ValueError(
            f"pose loss: batch['keypoint_weights'] must be (B, K) = {tuple(pred.shape[:2])}, "
            f"got {tuple(weights.shape)}"
        )
    pred = to_float(pred)
    sq = (pred - target.to(pred.dtype)) ** 2
    return weights.to(pred.dtype) * sq.mean(dim=(2, 3))


def keypoint_mse_loss(
    pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, loss_weight: float = 10.0
) -> torch.Tensor:
    """Official ``KeypointMSELoss``: ``loss_weight · mean_{b,k,h,w}(w_{b,k} · (pred - target)²)``.

    Args:
        pred: predicted heatmaps (B, K, h, w).
        target: UDP target heatmaps (B, K, h, w).
        weights: per-keypoint weights (B, K) (0 for unlabelled / out-of-crop keypoints).
        loss_weight: the official 10.

    Returns:
        Scalar loss.
    """
    return loss_weight * _per_keypoint(pred, target, weights).mean()


def keypoint_ohkm_mse_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    topk: int = 128,
    loss_weight: float = 10.0,
) -> torch.Tensor:
    """Online hard keypoint mining: per sample, the mean of the ``topk`` largest per-keypoint losses
    ``w_{b,k} · mean_{h,w}(pred - target)²``, then the mean over the batch, times ``loss_weight``.

    Args:
        pred, target: heatmaps (B, K, h, w).
        weights: (B, K).
        topk: hardest keypoints kept per sample (official commented alternative: 128); <= K.
        loss_weight: multiplier.

    Returns:
        Scalar loss.
    """
    per_kpt = _per_keypoint(pred, target, weights)
    k = per_kpt.shape[1]
    if not 0 < topk <= k:
        raise ValueError(
            f"pose loss: OHKM topk must be in [1, {k}] (the keypoint count), got {topk}"
        )
    hardest = per_kpt.topk(topk, dim=1).values
    return loss_weight * hardest.mean(dim=1).mean()


@dataclass(frozen=True)
class PoseLossWeights:
    """Weights of the pose loss (official: MSE ×10, no OHKM).

    Attributes:
        mse: weight of the keypoint MSE (term ``"mse"``), or of the OHKM loss when ``ohkm_topk``
            is set (term ``"ohkm"``).
        ohkm_topk: None for the plain weighted MSE, else OHKM with this many keypoints per sample.
    """

    mse: float = 10.0
    ohkm_topk: int | None = None

    def __post_init__(self) -> None:
        if self.ohkm_topk is not None and self.ohkm_topk <= 0:
            raise ValueError(f"ohkm_topk must be positive, got {self.ohkm_topk}")


class PoseLoss(nn.Module):
    """Pose training loss. ``forward(pred (B, K, h, w), batch)`` reads ``batch["heatmaps"]``
    ``(B, K, h, w)`` and ``batch["keypoint_weights"]`` ``(B, K)`` and returns ``{"mse" or "ohkm":
    weighted term, "loss": total}``."""

    def __init__(self, weights: PoseLossWeights | None = None) -> None:
        super().__init__()
        self.weights = weights or PoseLossWeights()

    def forward(self, pred: torch.Tensor, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        w = self.weights
        target = get_tensor(batch, "heatmaps", "pose").to(pred.device)
        kw = get_tensor(batch, "keypoint_weights", "pose").to(pred.device)
        terms: dict[str, torch.Tensor] = {}
        if w.mse != 0:
            if w.ohkm_topk is None:
                terms["mse"] = keypoint_mse_loss(pred, target, kw, w.mse)
            else:
                terms["ohkm"] = keypoint_ohkm_mse_loss(pred, target, kw, w.ohkm_topk, w.mse)
        return weighted_sum(terms)

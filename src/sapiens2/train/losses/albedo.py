"""Albedo losses: L1 ×2 + gradient ×2 + chromaticity L1 ×1.

The terms of ``AlbedoGradL1Loss`` / ``AlbedoChromaticityL1Loss``
(``sapiens/dense/src/models/losses/albedo_loss.py``) and ``L1Loss`` (``l1_loss.py``) with the
weights of ``sapiens/dense/configs/albedo/render_people/*.py``; each term equals the official code's
on ``tests/fixtures/official/losses.*`` (``tests/train/test_losses_official.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sapiens2.train.losses.common import (
    as_mask,
    check_dense_pair,
    dense_l1_loss,
    forward_diff_sq,
    get_tensor,
    masked_sum_per_pixel,
    weighted_sum,
    zero_outside,
)

__all__ = [
    "AlbedoLoss",
    "AlbedoLossWeights",
    "albedo_chromaticity_loss",
    "albedo_grad_loss",
    "chromaticity",
]


def albedo_grad_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Official ``AlbedoGradL1Loss``: ``0.5 · (x term + y term)`` of
    :func:`~sapiens2.train.losses.common.forward_diff_sq`
    (squared errors of forward differences summed over channels, averaged over valid differences).

    Args:
        pred, target: (B, 3, H, W). mask: (B, 1, H, W) bool.

    Returns:
        Scalar.
    """
    mse_x, mse_y = forward_diff_sq(pred, target, mask)
    return 0.5 * (mse_x + mse_y)


def chromaticity(rgb: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``rgb / (r + g + b + eps)`` for ``rgb (B, 3, H, W)``."""
    return rgb / (rgb.sum(dim=1, keepdim=True) + eps)


def albedo_chromaticity_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Official ``AlbedoChromaticityL1Loss``: pred clamped to [0, 1]; L1 between chromaticities,
    summed over channels, averaged over valid pixels.

    Args:
        pred: (B, 3, H, W). target: (B, 3, H, W) in [0, 1]. mask: (B, 1, H, W) bool.

    Returns:
        Scalar.
    """
    diff = (chromaticity(pred.clamp(0, 1)) - chromaticity(target)).abs()
    return masked_sum_per_pixel(diff, mask)


@dataclass(frozen=True)
class AlbedoLossWeights:
    """Weights of the albedo loss (official: L1 ×2, gradient ×2, chromaticity ×1)."""

    l1: float = 2.0
    grad: float = 2.0
    chroma: float = 1.0


class AlbedoLoss(nn.Module):
    """Albedo training loss. ``forward(pred (B, 3, h, w), batch)`` reads ``batch["albedo"]``
    ``(B, 3, H, W)`` in [0, 1] and ``batch["mask"]``; the prediction is resized to the target size
    if needed. Returns ``{"l1", "grad", "chroma", "loss"}`` (weighted; zero-weight terms skipped)."""

    def __init__(self, weights: AlbedoLossWeights | None = None) -> None:
        super().__init__()
        self.weights = weights or AlbedoLossWeights()

    def forward(self, pred: torch.Tensor, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        w = self.weights
        target = get_tensor(batch, "albedo", "albedo").to(pred.device)
        pred, target = check_dense_pair(pred, target, "albedo", "albedo")
        mask = as_mask(get_tensor(batch, "mask", "albedo"), target, "albedo")
        pred, target = zero_outside(pred, mask), zero_outside(target, mask)
        terms: dict[str, torch.Tensor] = {}
        if w.l1 != 0:
            terms["l1"] = w.l1 * dense_l1_loss(pred, target, mask)
        if w.grad != 0:
            terms["grad"] = w.grad * albedo_grad_loss(pred, target, mask)
        if w.chroma != 0:
            terms["chroma"] = w.chroma * albedo_chromaticity_loss(pred, target, mask)
        return weighted_sum(terms)

"""Surface-normal losses: cosine ×10 + L1 ×1 + gradient ×10, NaN/inf terms -> 0.

The terms of ``NormalCosineSimilarityLoss`` / ``NormalGradL1Loss``
(``sapiens/dense/src/models/losses/normal_loss.py``) and ``L1Loss`` (``l1_loss.py``) with the
weights of ``sapiens/dense/configs/normal/metasim_render_people/*.py``; each term equals the
official code's on ``tests/fixtures/official/losses.*`` (``tests/train/test_losses_official.py``).
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
    finite_or_zero,
    forward_diff_sq,
    get_tensor,
    masked_elem_mean,
    weighted_sum,
    zero_outside,
)

__all__ = [
    "NormalLoss",
    "NormalLossWeights",
    "normal_cosine_loss",
    "normal_grad_loss",
]


def normal_cosine_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Masked mean of ``1 - cos(pred, target)`` between L2-normalised vectors.

    Args:
        pred: (B, 3, H, W) normals (not unit). target: (B, 3, H, W). mask: (B, 1, H, W) bool.
        eps: normalisation epsilon (official 1e-6).

    Returns:
        Scalar: mean over valid pixels of the whole batch (0 with no valid pixel).
    """
    cos = (_unit(pred, eps) * _unit(target, eps)).sum(1, True)
    return masked_elem_mean(1 - cos, mask)


def _unit(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``torch.nn.functional.normalize(x, dim=1, eps=eps)`` written out: the same value
    (``sqrt(max(s, eps²)) == max(sqrt(s), eps)``), several times faster on CPU than
    ``linalg_vector_norm`` over dim 1; clamping before the root keeps the gradient at 0 finite."""
    return x / (x * x).sum(1, keepdim=True).clamp_min(eps * eps).sqrt()


def normal_grad_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Official ``NormalGradL1Loss`` (a squared error despite its name): the squared error of the x
    forward differences of pred vs target, summed over channels and averaged over the valid
    differences, plus the same in y; a difference needs both pixels valid.

    Args:
        pred, target: (B, C, H, W). mask: (B, 1, H, W) bool.

    Returns:
        Scalar (0 with no valid difference).
    """
    mse_x, mse_y = forward_diff_sq(pred, target, mask)
    return mse_x + mse_y


@dataclass(frozen=True)
class NormalLossWeights:
    """Weights of the normal loss (official: cosine ×10, L1 ×1, gradient ×10)."""

    cosine: float = 10.0
    l1: float = 1.0
    grad: float = 10.0


class NormalLoss(nn.Module):
    """Normal training loss. ``forward(pred (B, 3, h, w), batch)`` reads ``batch["normal"]``
    ``(B, 3, H, W)`` and ``batch["mask"]`` ``(B, H, W)`` / ``(B, 1, H, W)``; the prediction is
    bilinearly resized to the target size if needed. Returns ``{"cosine", "l1", "grad", "loss"}``
    (weighted terms, each replaced by 0 when NaN / inf; zero-weight terms skipped)."""

    def __init__(self, weights: NormalLossWeights | None = None) -> None:
        super().__init__()
        self.weights = weights or NormalLossWeights()

    def forward(self, pred: torch.Tensor, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        w = self.weights
        target = get_tensor(batch, "normal", "normal").to(pred.device)
        pred, target = check_dense_pair(pred, target, "normal", "normal")
        mask = as_mask(get_tensor(batch, "mask", "normal"), target, "normal")
        pred, target = zero_outside(pred, mask), zero_outside(target, mask)
        terms: dict[str, torch.Tensor] = {}
        if w.cosine != 0:
            terms["cosine"] = w.cosine * finite_or_zero(normal_cosine_loss(pred, target, mask))
        if w.l1 != 0:
            terms["l1"] = w.l1 * finite_or_zero(dense_l1_loss(pred, target, mask))
        if w.grad != 0:
            terms["grad"] = w.grad * finite_or_zero(normal_grad_loss(pred, target, mask))
        return weighted_sum(terms)

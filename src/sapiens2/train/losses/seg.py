"""Segmentation losses: class-weighted cross entropy + Dice, ignore label 255.

``CrossEntropyLoss`` / ``DiceLoss`` (``sapiens/dense/src/models/losses/seg_loss.py``) with the
settings of ``sapiens/dense/configs/seg/shutterstock_goliath/*.py``; both equal the official terms
on ``tests/fixtures/official/losses.*`` (a sample without foreground included).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sapiens2.data.metadata import seg29
from sapiens2.train.losses.common import check_shape, get_tensor, match_size, to_float, weighted_sum

__all__ = [
    "IGNORE_INDEX",
    "OFFICIAL_CLASS_WEIGHT",
    "SegLoss",
    "SegLossWeights",
    "dice_loss",
    "weighted_cross_entropy",
]

IGNORE_INDEX = 255
# The official CLASS_WEIGHT of the 29-class configs (metadata stores float32; round back).
OFFICIAL_CLASS_WEIGHT: tuple[float, ...] = tuple(round(float(w), 6) for w in seg29().class_weight)


def _check(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Validate shapes and label range; return float32 logits resized to the label size."""
    check_shape(logits, 4, "the logits", "seg", "(B, C, H, W)")
    check_shape(labels, 3, "the labels", "seg", "(B, H, W)")
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"seg loss: logits batch {logits.shape[0]} != labels batch {labels.shape[0]}"
        )
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"seg loss: labels must be an integer tensor, got {labels.dtype}")
    c = logits.shape[1]
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= c))
    if bool(bad.any()):
        found = sorted(set(labels[bad].unique().tolist()))[:8]
        raise ValueError(
            f"seg loss: labels {found} are outside 0..{c - 1} and not the ignore label {ignore_index}"
        )
    return match_size(to_float(logits), labels.shape[-2:])


def weighted_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    class_weight: torch.Tensor | None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Official CE: per-pixel ``-w[y] · log softmax(logits)[y]`` (0 at ignored pixels), averaged
    over **all** ``B·H·W`` pixels, ignored ones included (the official ``reduction="none"`` +
    ``.mean()``).

    Args:
        logits: (B, C, h, w); bilinearly resized to the label size when it differs.
        labels: (B, H, W) integer, ``ignore_index`` = ignored.
        class_weight: (C,) or None.

    Returns:
        Scalar loss.
    """
    logits = _check(logits, labels, ignore_index)
    if class_weight is not None:
        if class_weight.shape != (logits.shape[1],):
            raise ValueError(
                f"seg loss: class weights of shape {tuple(class_weight.shape)} for "
                f"{logits.shape[1]} classes"
            )
        class_weight = class_weight.to(device=logits.device, dtype=logits.dtype)
    per_pixel = F.cross_entropy(
        logits, labels.long(), weight=class_weight, ignore_index=ignore_index, reduction="none"
    )
    return per_pixel.mean()


def dice_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    eps: float = 1e-3,
) -> torch.Tensor:
    """Official Dice (softmax, background excluded), one value per sample averaged over the batch.

    Per sample: ``1 - mean_c (2·Σ p_c g_c + eps) / (Σ p_c² + Σ g_c² + eps)`` over the non-background
    classes ``c >= 1`` present in the valid ground truth, sums over valid pixels only. A sample with
    no such class contributes 0 (it still counts in the batch mean).

    Args:
        logits: (B, C, h, w); resized to the label size when it differs.
        labels: (B, H, W) integer, ``ignore_index`` = ignored.
        eps: smoothing (official 1e-3).

    Returns:
        Scalar loss.
    """
    logits = _check(logits, labels, ignore_index)
    b, c = logits.shape[:2]
    valid = (labels != ignore_index)[:, None]  # (B, 1, H, W)
    prob = torch.where(valid, logits.softmax(dim=1), torch.zeros_like(logits))
    lab = torch.where(valid, labels.long()[:, None], 0)  # (B, 1, H, W)
    # Σ p_c g_c = sum of p at the pixels labelled c; Σ g_c² = pixel count of c (no one-hot needed)
    p_at_label = prob.gather(1, lab).flatten(1)
    inter = prob.new_zeros(b, c).scatter_add_(1, lab.flatten(1), p_at_label)[:, 1:]
    count = prob.new_zeros(b, c).scatter_add_(1, lab.flatten(1), valid.flatten(1).to(prob.dtype))
    count = count[:, 1:]  # (B, C-1)
    denom = (prob**2).sum(dim=(2, 3))[:, 1:] + count
    dice = (2 * inter + eps) / (denom + eps)
    present = count > 0
    n_present = present.sum(dim=1)
    mean_dice = torch.where(present, dice, torch.zeros_like(dice)).sum(dim=1) / n_present.clamp(
        min=1
    )
    per_sample = torch.where(n_present > 0, 1 - mean_dice, torch.zeros_like(mean_dice))
    return per_sample.mean()


@dataclass(frozen=True)
class SegLossWeights:
    """Weights of the seg loss (official: CE ×1 + Dice ×1, the official 29 class weights).

    Attributes:
        ce: weight of the class-weighted cross entropy (term ``"ce"``).
        dice: weight of the Dice loss (term ``"dice"``).
        class_weight: per-class CE weights (length = number of classes), or None for uniform.
        ignore_index: label value excluded from both terms.
    """

    ce: float = 1.0
    dice: float = 1.0
    class_weight: tuple[float, ...] | None = OFFICIAL_CLASS_WEIGHT
    ignore_index: int = IGNORE_INDEX


class SegLoss(nn.Module):
    """Segmentation training loss. ``forward(logits (B, C, h, w), batch)`` reads ``batch["seg"]``
    ``(B, H, W)`` int64 (255 ignored) and returns ``{"ce", "dice", "loss"}`` (terms weighted; a
    term whose weight is 0 is skipped)."""

    label_key = "seg"

    def __init__(self, weights: SegLossWeights | None = None) -> None:
        super().__init__()
        self.weights = weights or SegLossWeights()
        cw = self.weights.class_weight
        self.register_buffer(
            "class_weight",
            torch.tensor(cw, dtype=torch.float32) if cw is not None else None,
            persistent=False,
        )

    def forward(self, logits: torch.Tensor, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        w = self.weights
        labels = get_tensor(batch, self.label_key, "seg").to(logits.device)
        terms: dict[str, torch.Tensor] = {}
        if w.ce != 0:
            terms["ce"] = w.ce * weighted_cross_entropy(
                logits, labels, self.class_weight, w.ignore_index
            )
        if w.dice != 0:
            terms["dice"] = w.dice * dice_loss(logits, labels, w.ignore_index)
        return weighted_sum(terms)

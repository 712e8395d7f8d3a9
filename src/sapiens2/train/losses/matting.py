"""Matting loss: alpha L1 + pre-multiplied foreground L1 + Laplacian pyramid L1 on alpha, and an
optional composition L1.

Our choice: no official matting training code was released (the hub checkpoints
``facebook/sapiens2-matting-*`` come without a loss). The terms are the usual ones of the matting
literature (Deep Image Matting's alpha and composition losses, the Laplacian loss of later
methods). The composition term needs the background behind the person, which our datasets do not
hold (the synthetic and folder datasets store the image, the alpha and the pre-multiplied
foreground), so it is off by default and the foreground L1 on the pre-multiplied colour takes its
place: where the ground truth is ``I = F_p + (1 − α) B``, a prediction with the right ``α`` and
``F_p`` composites to the right image. See docs/training.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sapiens2.train.losses.common import check_dense_pair, check_shape, get_tensor, weighted_sum

__all__ = [
    "LAPLACIAN_LEVELS",
    "MattingLoss",
    "MattingLossWeights",
    "composition_l1_loss",
    "laplacian_loss",
    "laplacian_pyramid",
]

LAPLACIAN_LEVELS = 5


def _gaussian_blur5(x: torch.Tensor) -> torch.Tensor:
    """Depthwise 5x5 binomial Gaussian (``[1, 4, 6, 4, 1] / 16`` in x and y) of ``x (B, C, H, W)``,
    borders replicated."""
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16
    c = x.shape[1]
    k = (k1[:, None] * k1[None, :]).expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k, groups=c)


def laplacian_pyramid(x: torch.Tensor, levels: int = LAPLACIAN_LEVELS) -> list[torch.Tensor]:
    """The band-pass levels of a Laplacian pyramid, finest first.

    With ``x_0 = x`` and ``x_{i+1} = blur5(x_i)[::2, ::2]`` (every other pixel of the 5x5
    Gaussian blur), band ``i`` is ``x_i − up(x_{i+1})``, ``up`` a bilinear resize back to the size
    of ``x_i`` (half-pixel centres). The coarsest ``x_levels`` is not returned, so a constant
    image has all-zero bands. Any size works (odd sizes round up).

    Args:
        x: (B, C, H, W).
        levels: number of bands.

    Returns:
        ``levels`` tensors, band i of shape (B, C, ⌈H / 2^i⌉, ⌈W / 2^i⌉).
    """
    bands = []
    current = x
    for _ in range(levels):
        down = _gaussian_blur5(current)[..., ::2, ::2]
        up = F.interpolate(down, size=current.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(current - up)
        current = down
    return bands


def laplacian_loss(
    pred: torch.Tensor, target: torch.Tensor, levels: int = LAPLACIAN_LEVELS
) -> torch.Tensor:
    """``Σ_i 2^i · mean |L_i(pred) − L_i(target)|`` over the bands of :func:`laplacian_pyramid`
    (coarser bands weigh more: they hold fewer pixels).

    Args:
        pred, target: (B, C, H, W).
        levels: number of bands.

    Returns:
        Scalar.
    """
    total = pred.new_zeros(())
    for i, (a, b) in enumerate(
        zip(laplacian_pyramid(pred, levels), laplacian_pyramid(target, levels), strict=True)
    ):
        total = total + (2**i) * (a - b).abs().mean()
    return total


def composition_l1_loss(
    fg: torch.Tensor,
    alpha: torch.Tensor,
    fg_target: torch.Tensor,
    alpha_target: torch.Tensor,
    background: torch.Tensor,
) -> torch.Tensor:
    """Mean L1 between the two composites ``F_p + (1 − α) B`` over the background ``B``.

    Args:
        fg, fg_target: (B, 3, H, W) pre-multiplied foregrounds. alpha, alpha_target: (B, 1, H, W).
        background: (B, 3, H, W).

    Returns:
        Scalar (mean over pixels and channels).
    """
    pred = fg + (1 - alpha) * background
    target = fg_target + (1 - alpha_target) * background
    return (pred - target).abs().mean()


@dataclass(frozen=True)
class MattingLossWeights:
    """Weights of the matting loss terms (our choice; a weight of 0 skips its term).

    Attributes:
        alpha: mean L1 of the alpha.
        foreground: mean L1 of the pre-multiplied foreground (over pixels and channels).
        laplacian: :func:`laplacian_loss` of the alpha (5 bands, band i weighted 2^i).
        composition: :func:`composition_l1_loss`; needs ``batch["background"]``.
    """

    alpha: float = 1.0
    foreground: float = 1.0
    laplacian: float = 1.0
    composition: float = 0.0


class MattingLoss(nn.Module):
    """Matting training loss (our choice, see the module docstring).

    ``forward(pred (B, 4, h, w), batch)``: ``pred`` is the matting head's output in [0, 1]
    (pre-multiplied RGB foreground, then alpha); ``batch["alpha"]`` (B, 1, H, W) and
    ``batch["foreground"]`` (B, 3, H, W) (pre-multiplied) in [0, 1], and, for the composition
    term, ``batch["background"]`` (B, 3, H, W) in [0, 1]. The prediction is bilinearly resized
    to the target size if needed. Returns ``{"alpha", "foreground", "laplacian",
    "composition", "loss"}`` (weighted; zero-weight terms skipped).
    """

    def __init__(self, weights: MattingLossWeights | None = None) -> None:
        super().__init__()
        self.weights = weights or MattingLossWeights()

    def forward(self, pred: torch.Tensor, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        w = self.weights
        check_shape(pred, 4, "the prediction", "matting", "(B, 4, H, W)")
        if pred.shape[1] != 4:
            raise ValueError(
                f"matting loss: the prediction must have 4 channels (foreground RGB, alpha), "
                f"got shape {tuple(pred.shape)}"
            )
        alpha_t = get_tensor(batch, "alpha", "matting").to(pred.device)
        fg_t = get_tensor(batch, "foreground", "matting").to(pred.device)
        alpha, alpha_t = check_dense_pair(pred[:, 3:], alpha_t, "matting", "alpha")
        fg, fg_t = check_dense_pair(pred[:, :3], fg_t, "matting", "foreground")
        terms: dict[str, torch.Tensor] = {}
        if w.alpha != 0:
            terms["alpha"] = w.alpha * (alpha - alpha_t).abs().mean()
        if w.foreground != 0:
            terms["foreground"] = w.foreground * (fg - fg_t).abs().mean()
        if w.laplacian != 0:
            terms["laplacian"] = w.laplacian * laplacian_loss(alpha, alpha_t)
        if w.composition != 0:
            if "background" not in batch:
                raise KeyError(
                    f"matting loss: the composition term (weight {w.composition}) needs "
                    "batch['background'] (B, 3, H, W); set MattingLossWeights(composition=0) "
                    "for data without backgrounds"
                )
            bg = get_tensor(batch, "background", "matting").to(pred.device, fg_t.dtype)
            if bg.shape != fg_t.shape:
                raise ValueError(
                    f"matting loss: batch['background'] {tuple(bg.shape)} does not match "
                    f"batch['foreground'] {tuple(fg_t.shape)}"
                )
            terms["composition"] = w.composition * composition_l1_loss(fg, alpha, fg_t, alpha_t, bg)
        return weighted_sum(terms)

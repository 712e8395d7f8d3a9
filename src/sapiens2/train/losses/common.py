"""Shared pieces of the task losses: batch access, masks and masked reductions.

All reductions use ``torch.where`` (never ``x * mask``) so that values at masked-out pixels, even
NaN or inf, neither reach the loss nor its gradient. An empty mask gives a loss of exactly 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F


def get_tensor(batch: Mapping[str, Any], key: str, task: str) -> torch.Tensor:
    """``batch[key]`` as a tensor, with a clear error naming the key when it is missing."""
    if key not in batch:
        raise KeyError(
            f"{task} loss: the batch has no {key!r} (keys: {', '.join(map(str, batch))})"
        )
    value = batch[key]
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{task} loss: batch[{key!r}] must be a tensor, got {type(value).__name__}")
    return value


def to_float(x: torch.Tensor) -> torch.Tensor:
    """Losses are computed in float32 at least: half / bfloat16 (autocast) inputs are upcast,
    float64 stays float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def check_shape(t: torch.Tensor, ndim: int, name: str, task: str, what: str) -> None:
    if t.ndim != ndim:
        raise ValueError(f"{task} loss: {name} must be {what}, got shape {tuple(t.shape)}")


def as_mask(mask: torch.Tensor, like: torch.Tensor, task: str) -> torch.Tensor:
    """A ``(B, H, W)`` or ``(B, 1, H, W)`` mask (bool, or numeric with > 0.5 = valid) as a
    ``(B, 1, H, W)`` bool tensor matching ``like`` ``(B, C, H, W)``."""
    if mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(
            f"{task} loss: mask must be (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}"
        )
    if mask.shape[0] != like.shape[0] or mask.shape[-2:] != like.shape[-2:]:
        raise ValueError(
            f"{task} loss: mask {tuple(mask.shape)} does not match the target {tuple(like.shape)}"
        )
    if mask.dtype != torch.bool:
        mask = mask > 0.5
    return mask.to(like.device)


def match_size(pred: torch.Tensor, hw: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinearly resize ``pred (B, C, h, w)`` to ``hw`` (no-op when the size already matches)."""
    if tuple(pred.shape[-2:]) == tuple(hw):
        return pred
    return F.interpolate(pred, size=tuple(hw), mode="bilinear", align_corners=False)


def check_dense_pair(
    pred: torch.Tensor, target: torch.Tensor, task: str, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a ``(B, C, h, w)`` prediction against its ``(B, C, H, W)`` target.

    Returns ``(pred, target)`` in a common float dtype (float32 at least), the prediction
    bilinearly resized to the target size when it differs.
    """
    check_shape(target, 4, f"batch[{name!r}]", task, "(B, C, H, W)")
    check_shape(pred, 4, "the prediction", task, "(B, C, H, W)")
    if pred.shape[:2] != target.shape[:2]:
        raise ValueError(
            f"{task} loss: prediction {tuple(pred.shape)} and batch[{name!r}] "
            f"{tuple(target.shape)} differ in batch or channels"
        )
    dtype = torch.promote_types(to_float(pred).dtype, to_float(target).dtype)
    return match_size(pred.to(dtype), target.shape[-2:]), target.to(device=pred.device, dtype=dtype)


def zero_outside(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` with masked-out pixels set to 0, so that no value there (even NaN) reaches a loss or
    sends a gradient back; ``x (B, C, H, W)``, ``mask (B, 1, H, W)`` bool."""
    return torch.where(mask, x, torch.zeros_like(x))


def safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` where ``den > 0``, else 0 (den is a count)."""
    den = den.to(num.dtype)
    return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))


def masked_sum_per_pixel(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``Σ_{valid b,c,h,w} x / #valid (b,h,w)``: channels summed, averaged over valid pixels of the
    whole batch. ``x (B, C, H, W)``, ``mask (B, 1, H, W)`` bool. Returns a scalar."""
    total = torch.where(mask, x, torch.zeros_like(x)).sum()
    return safe_div(total, mask.sum())


def dense_l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Dense L1 as ``L1Loss`` (``sapiens/dense/src/models/losses/l1_loss.py``):
    ``Σ_{channels, valid pixels} |pred - target| / #valid pixels``.

    Args:
        pred, target: (B, C, H, W). mask: (B, 1, H, W) bool.

    Returns:
        Scalar (0 with no valid pixel).
    """
    return masked_sum_per_pixel((pred - target).abs(), mask)


def masked_elem_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x (B, C, H, W)`` over valid pixels and all channels (whole batch); scalar."""
    total = torch.where(mask, x, torch.zeros_like(x)).sum()
    return safe_div(total, mask.sum() * x.shape[1])


def forward_diff_sq(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared error of forward differences in x and in y, summed over channels, averaged over the
    valid differences of the whole batch.

    A difference ``a[..., i+1] - a[..., i]`` is valid only if both pixels are valid. Each value is
    ``Σ_{channels, valid differences} (Δpred - Δtarget)² / #valid differences`` (the 1-channel mask
    counts a pixel pair once, not once per channel), as ``NormalGradL1Loss`` and
    ``AlbedoGradL1Loss`` in ``sapiens/dense/src/models/losses/`` reduce it.

    Args:
        pred, target: (B, C, H, W). mask: (B, 1, H, W) bool.

    Returns:
        ``(x_term, y_term)`` scalars (0 with no valid difference).
    """
    dpx = pred[..., :, 1:] - pred[..., :, :-1]
    dgx = target[..., :, 1:] - target[..., :, :-1]
    mx = mask[..., :, 1:] & mask[..., :, :-1]
    dpy = pred[..., 1:, :] - pred[..., :-1, :]
    dgy = target[..., 1:, :] - target[..., :-1, :]
    my = mask[..., 1:, :] & mask[..., :-1, :]
    return masked_sum_per_pixel((dpx - dgx) ** 2, mx), masked_sum_per_pixel((dpy - dgy) ** 2, my)


def finite_or_zero(loss: torch.Tensor) -> torch.Tensor:
    """Replace a NaN / inf loss by 0 (the ``torch.nan_to_num`` of the normal losses in
    ``sapiens/dense/src/models/losses/normal_loss.py`` and ``l1_loss.py``)."""
    return torch.where(torch.isfinite(loss), loss, torch.zeros_like(loss))


def weighted_sum(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add ``"loss"`` = the sum of the (already weighted) terms."""
    if not terms:
        raise ValueError("every loss weight is 0: nothing to optimise")
    values = list(terms.values())
    total = values[0]
    for v in values[1:]:
        total = total + v
    return {**terms, "loss": total}

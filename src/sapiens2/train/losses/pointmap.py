"""Pointmap losses (spec §3.7).

The model predicts a canonical pointmap ``s · (X, Y, Z)`` (``s = 768 / fx``) and the scale ``s``.
The official set: L1 ×2 and multiscale L1 ×1 on depth-normalised maps, SiLog ×1 on depth,
intrinsics consistency ×1, shift-invariant L1 ×1, normals-from-pointmap ×2 and scale L1 ×4.
"Depth-normalised" means divided by the ground truth's mean canonical depth over valid pixels
(per sample) and clamped to at most 4.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sapiens2.train.losses.common import (
    as_mask,
    check_dense_pair,
    dense_l1_loss,
    get_tensor,
    masked_elem_mean,
    safe_div,
    to_float,
    weighted_sum,
    zero_outside,
)

__all__ = [
    "PointmapLoss",
    "PointmapLossWeights",
    "depth_normalize",
    "gt_mean_depth",
    "intrinsics_consistency_loss",
    "multiscale_l1_loss",
    "pointmap_normal_loss",
    "pointmap_normals",
    "scale_l1_loss",
    "shift_invariant_l1_loss",
    "silog_loss",
]


def gt_mean_depth(gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean ground-truth Z over valid pixels per sample, ``(B, 1, 1, 1)`` (1 with no valid pixel).

    Args:
        gt: (B, 3, H, W) pointmap. mask: (B, 1, H, W) bool.
    """
    z = torch.where(mask, gt[:, 2:3], torch.zeros_like(gt[:, 2:3]))
    n = mask.sum(dim=(1, 2, 3), keepdim=True)
    mean = z.sum(dim=(1, 2, 3), keepdim=True) / n.clamp(min=1)
    return torch.where(n > 0, mean, torch.ones_like(mean))


def depth_normalize(
    points: torch.Tensor, mean_depth: torch.Tensor, clamp_max: float = 4.0
) -> torch.Tensor:
    """``(points / mean_depth).clamp(max=clamp_max)``; points (B, 3, H, W), mean_depth (B, 1, 1, 1)."""
    return (points / mean_depth).clamp(max=clamp_max)


def multiscale_l1_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    scales: Sequence[float] = (2.0,),
) -> torch.Tensor:
    """Official ``MultiscaleL1Loss``: maps bilinearly resized by each factor (mask nearest), dense
    L1 at that size; the mean over ``scales`` (official: one factor, ×2). Both maps are set to 0
    outside the mask before resizing, so masked-out values cannot leak into valid pixels.

    Args:
        pred, target: (B, C, H, W). mask: (B, 1, H, W) bool. scales: resize factors.

    Returns:
        Scalar.
    """
    if not scales:
        raise ValueError("multiscale L1: at least one scale is needed")
    pred, target = zero_outside(pred, mask), zero_outside(target, mask)
    total = pred.new_zeros(())
    for f in scales:
        if f == 1:
            p, t, m = pred, target, mask
        else:
            p = F.interpolate(pred, scale_factor=f, mode="bilinear", align_corners=False)
            t = F.interpolate(target, scale_factor=f, mode="bilinear", align_corners=False)
            m = F.interpolate(mask.float(), scale_factor=f, mode="nearest") > 0.5
        total = total + dense_l1_loss(p, t, m)
    return total / len(scales)


def silog_loss(
    pred_depth: torch.Tensor,
    gt_depth: torch.Tensor,
    mask: torch.Tensor,
    variance_focus: float = 0.5,
    min_depth: float = 1e-4,
) -> torch.Tensor:
    """Scale-invariant log loss, per sample ``sqrt(mean(d²) - λ·mean(d)²)`` with
    ``d = log(gt) - log(pred)`` (both clamped to >= ``min_depth``), averaged over the batch.

    Valid pixels: ``mask & gt > -100 & gt finite``; a sample without any contributes 0. With
    ``λ = 1`` the loss is invariant to a global scale of ``pred``; with the official ``λ = 0.5``
    it equals the standard deviation of ``d`` when ``mean(d) = 0``.

    Args:
        pred_depth, gt_depth: (B, 1, H, W). mask: (B, 1, H, W) bool.
        variance_focus: λ (official 0.5).
        min_depth: clamp before the log.

    Returns:
        Scalar.
    """
    valid = mask & (gt_depth > -100) & torch.isfinite(gt_depth)
    one = torch.ones_like(gt_depth)
    gt_depth, pred_depth = torch.where(valid, gt_depth, one), torch.where(valid, pred_depth, one)
    d = torch.log(gt_depth.clamp(min=min_depth)) - torch.log(pred_depth.clamp(min=min_depth))
    n = valid.sum(dim=(1, 2, 3)).to(d.dtype)
    m1 = d.sum(dim=(1, 2, 3)) / n.clamp(min=1)
    m2 = (d**2).sum(dim=(1, 2, 3)) / n.clamp(min=1)
    var = m2 - variance_focus * m1**2
    ok = (n > 0) & (var > 0)
    per_sample = torch.where(
        ok, torch.sqrt(torch.where(ok, var, torch.ones_like(var))), torch.zeros_like(var)
    )
    return per_sample.mean()


def intrinsics_consistency_loss(
    pred: torch.Tensor, K: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``|X̂ - (u - cx)·Ẑ/fx| + |Ŷ - (v - cy)·Ẑ/fy|`` averaged over valid pixels.

    Holds for the metric and the canonical pointmap alike (both are ``Z``-proportional rays).

    Args:
        pred: (B, 3, H, W) predicted pointmap. K: (B, 3, 3) intrinsics of this H×W frame
            (before the canonical rescaling). mask: (B, 1, H, W) bool.

    Returns:
        Scalar.
    """
    b, _, h, w = pred.shape
    if K.shape != (b, 3, 3):
        raise ValueError(f"pointmap loss: batch['K'] must be (B, 3, 3), got {tuple(K.shape)}")
    K = K.to(device=pred.device, dtype=pred.dtype)
    fx, fy = K[:, 0, 0].view(b, 1, 1, 1), K[:, 1, 1].view(b, 1, 1, 1)
    cx, cy = K[:, 0, 2].view(b, 1, 1, 1), K[:, 1, 2].view(b, 1, 1, 1)
    u = torch.arange(w, device=pred.device, dtype=pred.dtype).view(1, 1, 1, w)
    v = torch.arange(h, device=pred.device, dtype=pred.dtype).view(1, 1, h, 1)
    x, y, z = pred[:, 0:1], pred[:, 1:2], pred[:, 2:3]
    err = (x - (u - cx) * z / fx).abs() + (y - (v - cy) * z / fy).abs()
    return masked_elem_mean(err, mask)


def shift_invariant_l1_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Dense L1 after subtracting each map's per-sample centroid over valid pixels.

    Args:
        pred, target: (B, 3, H, W). mask: (B, 1, H, W) bool.

    Returns:
        Scalar; unchanged when a per-sample constant vector is added to ``pred`` or ``target``.
    """

    def centred(x: torch.Tensor) -> torch.Tensor:
        s = torch.where(mask, x, torch.zeros_like(x)).sum(dim=(2, 3), keepdim=True)
        return x - safe_div(s, mask.sum(dim=(2, 3), keepdim=True))

    return dense_l1_loss(centred(pred), centred(target), mask)


def _pad_right_down(x: torch.Tensor) -> torch.Tensor:
    """Reflect padding by one pixel at the right and bottom (written with slices, whose backward is
    deterministic on CUDA unlike ``F.pad(mode="reflect")``)."""
    x = torch.cat([x, x[..., :, -2:-1]], dim=-1)
    return torch.cat([x, x[..., -2:-1, :]], dim=-2)


def pointmap_normals(
    points: torch.Tensor, factor: float = 100.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normals of a pointmap from ``cross(right - centre, down - centre) · factor`` (reflect padding
    at the right / bottom border), L2-normalised.

    Args:
        points: (B, 3, H, W), H, W >= 2.
        factor: scale applied before normalising (official 100).

    Returns:
        ``(normals (B, 3, H, W), norm (B, 1, H, W))``: unit normals and the pre-normalisation length.
    """
    p = _pad_right_down(points)
    h, w = points.shape[-2:]
    right = p[..., :h, 1 : w + 1] - points
    down = p[..., 1 : h + 1, :w] - points
    n = torch.cross(right, down, dim=1) * factor
    norm = n.norm(dim=1, keepdim=True)
    return n / norm.clamp(min=1e-12), norm


def pointmap_normal_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    gt_scale: torch.Tensor,
    mask: torch.Tensor,
    l1_weight: float = 1.0,
    min_length: float = 1e-8,
) -> torch.Tensor:
    """Official ``PointmapNormalLoss``: both pointmaps divided by the GT scale, normals from each
    (:func:`pointmap_normals`); ``mean(1 - cos) + l1_weight · mean|n̂ - n|`` over pixels whose GT
    normal is valid: the pixel and its right and lower neighbours valid and the GT cross product
    (times 100) longer than ``min_length``. The L1 mean runs over pixels and channels.

    Args:
        pred, target: (B, 3, H, W) canonical pointmaps. gt_scale: (B, 1). mask: (B, 1, H, W) bool.
        l1_weight: weight of the L1 part (official 1.0).
        min_length: degenerate-normal threshold.

    Returns:
        Scalar.
    """
    s = gt_scale.view(-1, 1, 1, 1).to(pred.dtype)
    n_pred, _ = pointmap_normals(pred / s)
    n_gt, gt_len = pointmap_normals(target / s)
    mf = _pad_right_down(mask.float())
    h, w = mask.shape[-2:]
    valid = (
        mask
        & (mf[..., :h, 1 : w + 1] > 0.5)
        & (mf[..., 1 : h + 1, :w] > 0.5)
        & (gt_len > min_length)
    )
    cos = (n_pred * n_gt).sum(dim=1, keepdim=True)
    return masked_elem_mean(1 - cos, valid) + l1_weight * masked_elem_mean(
        (n_pred - n_gt).abs(), valid
    )


def scale_l1_loss(pred_scale: torch.Tensor, gt_scale: torch.Tensor) -> torch.Tensor:
    """``mean_b |ŝ_b - s_b|`` for ``(B, 1)`` scales."""
    return (pred_scale - gt_scale).abs().mean()


@dataclass(frozen=True)
class PointmapLossWeights:
    """Weights of the pointmap loss (the official values as defaults).

    Attributes:
        l1: dense L1 on depth-normalised maps (term ``"l1"``).
        multiscale_l1: L1 at ``multiscale_factors`` (``"multiscale_l1"``).
        silog: SiLog on depth (``"silog"``).
        intrinsics: intrinsics consistency (``"intrinsics"``).
        shift_l1: shift-invariant L1 on depth-normalised maps (``"shift_l1"``).
        normal: normals-from-pointmap loss (``"normal"``).
        scale: L1 on the scale (``"scale"``).
        clamp_max: upper clamp of the depth-normalised maps.
        multiscale_factors: resize factors of the multiscale L1.
        silog_variance_focus: λ of SiLog.
        normal_l1_weight: weight of the L1 part of the normal loss.
    """

    l1: float = 2.0
    multiscale_l1: float = 1.0
    silog: float = 1.0
    intrinsics: float = 1.0
    shift_l1: float = 1.0
    normal: float = 2.0
    scale: float = 4.0
    clamp_max: float = 4.0
    multiscale_factors: tuple[float, ...] = (2.0,)
    silog_variance_focus: float = 0.5
    normal_l1_weight: float = 1.0


def _as_b1(x: torch.Tensor, b: int, name: str) -> torch.Tensor:
    if x.shape not in ((b,), (b, 1)):
        raise ValueError(f"pointmap loss: {name} must be (B, 1) with B={b}, got {tuple(x.shape)}")
    return to_float(x).reshape(b, 1)


class PointmapLoss(nn.Module):
    """Pointmap training loss. ``forward((canonical (B, 3, h, w), scale (B, 1)), batch)`` reads
    ``batch["pointmap"]`` (B, 3, H, W) canonical GT, ``batch["mask"]``, ``batch["scale"]`` (B, 1)
    GT ``s`` and ``batch["K"]`` (B, 3, 3) intrinsics of the input frame. Returns ``{"l1",
    "multiscale_l1", "silog", "intrinsics", "shift_l1", "normal", "scale", "loss"}`` (weighted;
    zero-weight terms skipped)."""

    def __init__(self, weights: PointmapLossWeights | None = None) -> None:
        super().__init__()
        self.weights = weights or PointmapLossWeights()

    def forward(
        self, pred: tuple[torch.Tensor, torch.Tensor], batch: Mapping[str, Any]
    ) -> dict[str, torch.Tensor]:
        if not isinstance(pred, tuple | list) or len(pred) != 2:
            raise TypeError(
                "pointmap loss: pred must be the tuple (canonical (B, 3, H, W), scale (B, 1))"
            )
        points, pred_scale = pred
        w = self.weights
        dev = points.device
        gt = get_tensor(batch, "pointmap", "pointmap").to(dev)
        points, gt = check_dense_pair(points, gt, "pointmap", "pointmap")
        if gt.shape[1] != 3:
            raise ValueError(
                f"pointmap loss: batch['pointmap'] must have 3 channels, got {gt.shape[1]}"
            )
        b = gt.shape[0]
        mask = as_mask(get_tensor(batch, "mask", "pointmap"), gt, "pointmap")
        points, gt = zero_outside(points, mask), zero_outside(gt, mask)
        gt_scale = _as_b1(get_tensor(batch, "scale", "pointmap").to(dev), b, "batch['scale']")
        pred_scale = _as_b1(pred_scale, b, "the predicted scale").to(points.dtype)
        gt_scale = gt_scale.to(points.dtype)

        terms: dict[str, torch.Tensor] = {}
        if w.l1 or w.multiscale_l1 or w.shift_l1:
            mean_d = gt_mean_depth(gt, mask)
            pn = depth_normalize(points, mean_d, w.clamp_max)
            gn = depth_normalize(gt, mean_d, w.clamp_max)
            if w.l1:
                terms["l1"] = w.l1 * dense_l1_loss(pn, gn, mask)
            if w.multiscale_l1:
                terms["multiscale_l1"] = w.multiscale_l1 * multiscale_l1_loss(
                    pn, gn, mask, w.multiscale_factors
                )
        if w.silog:
            terms["silog"] = w.silog * silog_loss(
                points[:, 2:3], gt[:, 2:3], mask, w.silog_variance_focus
            )
        if w.intrinsics:
            K = get_tensor(batch, "K", "pointmap")
            terms["intrinsics"] = w.intrinsics * intrinsics_consistency_loss(points, K, mask)
        if w.shift_l1:
            terms["shift_l1"] = w.shift_l1 * shift_invariant_l1_loss(pn, gn, mask)
        if w.normal:
            terms["normal"] = w.normal * pointmap_normal_loss(
                points, gt, gt_scale, mask, w.normal_l1_weight
            )
        if w.scale:
            terms["scale"] = w.scale * scale_l1_loss(pred_scale, gt_scale)
        return weighted_sum(terms)

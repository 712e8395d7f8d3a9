"""Pointmap losses.

The model predicts a canonical pointmap ``s · (X, Y, Z)`` (``s = 768 / fx``) and the scale ``s``.
The terms and weights of ``sapiens/dense/configs/pointmap/render_people/*.py``, combined as
``PointmapHead.loss`` (``sapiens/dense/src/models/heads/pointmap_head.py``) does: L1 ×2 and
multiscale L1 ×1 on depth-normalised maps (divided by the ground truth's mean canonical depth over
valid pixels, per sample), SiLog ×1 on depth, intrinsics consistency ×1, shift-invariant L1 ×1 on
the depth-normalised maps, normals-from-pointmap ×2 and scale L1 ×4. The weighted L1, multiscale
L1 and shift-invariant L1 terms are clamped at 4 (``torch.clamp(loss, max=4)``: no gradient above).
By default every term equals the official code's on ``tests/fixtures/official/losses.*``
(``tests/train/test_losses_official.py``); ``PointmapLossWeights.multiscale_zero_outside`` and
``normal_drop_boundary`` are our deviations, off by default (docs/training.md).
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


def multiscale_l1_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    scales: Sequence[float] = (2.0,),
    zero_outside_mask: bool = False,
) -> torch.Tensor:
    """``MultiscaleL1Loss`` (``sapiens/dense/src/models/losses/l1_loss.py``): both maps bilinearly
    resized by each factor (mask nearest), dense L1 at that size; the mean over ``scales`` (the
    configs: one factor, ×2).

    The official code resizes the raw prediction, so near the mask border the valid upsampled
    pixels mix in predicted values from outside the mask. ``zero_outside_mask=True`` (our
    deviation) sets both maps to 0 outside the mask first, so nothing from there leaks in.

    Args:
        pred, target: (B, C, H, W). mask: (B, 1, H, W) bool. scales: resize factors.
        zero_outside_mask: zero the maps outside the mask before resizing.

    Returns:
        Scalar.
    """
    if not scales:
        raise ValueError("multiscale L1: at least one scale is needed")
    if zero_outside_mask:
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
    points: torch.Tensor, amplification: float = 100.0, min_length: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normals of a pointmap as ``PointmapNormalLoss.compute_normals``
    (``sapiens/dense/src/models/losses/pointmap_loss.py``): ``cross(a·(right - centre),
    a·(down - centre))`` with reflect padding at the right / bottom border, divided by its length
    clamped to at least ``min_length``.

    Args:
        points: (B, 3, H, W), H, W >= 2.
        amplification: ``a``, applied to both difference vectors (official 100).
        min_length: the length below which a normal is degenerate (official 1e-6).

    Returns:
        ``(normals (B, 3, H, W), length (B, 1, H, W))``: the normalised cross products (unit where
        ``length > min_length``) and their length before normalising.
    """
    p = _pad_right_down(points)
    h, w = points.shape[-2:]
    right = (p[..., :h, 1 : w + 1] - points) * amplification
    down = (p[..., 1 : h + 1, :w] - points) * amplification
    n = torch.cross(right, down, dim=1)
    length = n.norm(dim=1, keepdim=True)
    return n / length.clamp(min=min_length), length


def pointmap_normal_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    gt_scale: torch.Tensor,
    mask: torch.Tensor,
    l1_weight: float = 1.0,
    min_length: float = 1e-6,
    drop_boundary: bool = False,
) -> torch.Tensor:
    """Official ``PointmapNormalLoss``: both pointmaps divided by the GT scale, normals from each
    (:func:`pointmap_normals`); per pixel ``(1 - clamp(cos, -1, 1)) + l1_weight · mean_c |n̂ - n|``,
    averaged over the pixels where the GT normal is valid (the pixel in the mask, GT normal longer
    than ``min_length``). A predicted normal that is degenerate or outside the mask counts as 0.

    The official normal of a valid pixel on the mask border is built from a neighbour outside the
    mask (GT 0 there, the prediction's raw value), so it is not a surface normal.
    ``drop_boundary=True`` (our deviation) also requires the right and lower neighbours to be valid.

    Args:
        pred, target: (B, 3, H, W) canonical pointmaps. gt_scale: (B, 1). mask: (B, 1, H, W) bool.
        l1_weight: weight of the L1 part (official 1.0).
        min_length: degenerate-normal threshold (official 1e-6).
        drop_boundary: skip pixels whose right or lower neighbour is outside the mask.

    Returns:
        Scalar (0 with no valid pixel).
    """
    s = gt_scale.view(-1, 1, 1, 1).to(pred.dtype)
    if drop_boundary:  # the kept pixels read no point outside the mask: keep those out entirely
        pred = zero_outside(pred, mask)
    n_pred, pred_len = pointmap_normals(pred / s, min_length=min_length)
    n_gt, gt_len = pointmap_normals(target / s, min_length=min_length)
    zero = torch.zeros_like(n_pred)
    n_pred = torch.where(mask & (pred_len > min_length), n_pred, zero)
    valid = mask & (gt_len > min_length)
    n_gt = torch.where(valid, n_gt, zero)
    if drop_boundary:
        mf = _pad_right_down(mask.float())
        h, w = mask.shape[-2:]
        valid = valid & (mf[..., :h, 1 : w + 1] > 0.5) & (mf[..., 1 : h + 1, :w] > 0.5)
    cos = (n_pred * n_gt).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)
    per_pixel = (1 - cos) + l1_weight * (n_pred - n_gt).abs().mean(dim=1, keepdim=True)
    return masked_elem_mean(per_pixel, valid)


def scale_l1_loss(pred_scale: torch.Tensor, gt_scale: torch.Tensor) -> torch.Tensor:
    """``mean_b |ŝ_b - s_b|`` for ``(B, 1)`` scales."""
    return (pred_scale - gt_scale).abs().mean()


@dataclass(frozen=True)
class PointmapLossWeights:
    """Weights and options of the pointmap loss (the official values as defaults).

    Attributes:
        l1: dense L1 on depth-normalised maps (term ``"l1"``).
        multiscale_l1: L1 at ``multiscale_factors`` (``"multiscale_l1"``).
        silog: SiLog on depth (``"silog"``).
        intrinsics: intrinsics consistency (``"intrinsics"``).
        shift_l1: shift-invariant L1 on depth-normalised maps (``"shift_l1"``).
        normal: normals-from-pointmap loss (``"normal"``).
        scale: L1 on the scale (``"scale"``).
        loss_clamp_max: upper clamp of the weighted ``"l1"``, ``"multiscale_l1"`` and
            ``"shift_l1"`` terms (official 4.0; no gradient above it); None for no clamp.
        multiscale_factors: resize factors of the multiscale L1.
        silog_variance_focus: λ of SiLog.
        normal_l1_weight: weight of the L1 part of the normal loss.
        multiscale_zero_outside: our deviation (off = official): zero the prediction outside the
            mask before the multiscale L1 resizes it.
        normal_drop_boundary: our deviation (off = official): the normal loss skips mask-border
            pixels whose right or lower neighbour is outside the mask.
    """

    l1: float = 2.0
    multiscale_l1: float = 1.0
    silog: float = 1.0
    intrinsics: float = 1.0
    shift_l1: float = 1.0
    normal: float = 2.0
    scale: float = 4.0
    loss_clamp_max: float | None = 4.0
    multiscale_factors: tuple[float, ...] = (2.0,)
    silog_variance_focus: float = 0.5
    normal_l1_weight: float = 1.0
    multiscale_zero_outside: bool = False
    normal_drop_boundary: bool = False

    def __post_init__(self) -> None:
        if self.loss_clamp_max is not None and not self.loss_clamp_max > 0:
            raise ValueError(f"loss_clamp_max must be positive or None, got {self.loss_clamp_max}")


def _as_b1(x: torch.Tensor, b: int, name: str) -> torch.Tensor:
    if x.shape not in ((b,), (b, 1)):
        raise ValueError(f"pointmap loss: {name} must be (B, 1) with B={b}, got {tuple(x.shape)}")
    return to_float(x).reshape(b, 1)


class PointmapLoss(nn.Module):
    """Pointmap training loss. ``forward((canonical (B, 3, h, w), scale (B, 1)), batch)`` reads
    ``batch["pointmap"]`` (B, 3, H, W) canonical GT, ``batch["mask"]``, ``batch["scale"]`` (B, 1)
    GT ``s`` and ``batch["K"]`` (B, 3, 3) intrinsics of the input frame. Returns ``{"l1",
    "multiscale_l1", "silog", "intrinsics", "shift_l1", "normal", "scale", "loss"}`` (weighted;
    zero-weight terms skipped).

    The GT is set to 0 outside the mask (as the official ``PointmapGenerateTarget`` writes it); the
    prediction is used as it is: only the multiscale L1 (bilinear resizing) and the normal loss
    (neighbour differences) read it outside the mask, as the official terms do.
    """

    def __init__(self, weights: PointmapLossWeights | None = None) -> None:
        super().__init__()
        self.weights = weights or PointmapLossWeights()

    def _clamp(self, term: torch.Tensor) -> torch.Tensor:
        cmax = self.weights.loss_clamp_max
        return term if cmax is None else term.clamp(max=cmax)

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
        gt = zero_outside(gt, mask)
        gt_scale = _as_b1(get_tensor(batch, "scale", "pointmap").to(dev), b, "batch['scale']")
        pred_scale = _as_b1(pred_scale, b, "the predicted scale").to(points.dtype)
        gt_scale = gt_scale.to(points.dtype)

        terms: dict[str, torch.Tensor] = {}
        if w.l1 or w.multiscale_l1 or w.shift_l1:
            mean_d = gt_mean_depth(gt, mask)
            pn, gn = points / mean_d, gt / mean_d
            if w.l1:
                terms["l1"] = self._clamp(w.l1 * dense_l1_loss(pn, gn, mask))
            if w.multiscale_l1:
                terms["multiscale_l1"] = self._clamp(
                    w.multiscale_l1
                    * multiscale_l1_loss(
                        pn, gn, mask, w.multiscale_factors, w.multiscale_zero_outside
                    )
                )
        if w.silog:
            terms["silog"] = w.silog * silog_loss(
                points[:, 2:3], gt[:, 2:3], mask, w.silog_variance_focus
            )
        if w.intrinsics:
            K = get_tensor(batch, "K", "pointmap")
            terms["intrinsics"] = w.intrinsics * intrinsics_consistency_loss(points, K, mask)
        if w.shift_l1:
            terms["shift_l1"] = self._clamp(w.shift_l1 * shift_invariant_l1_loss(pn, gn, mask))
        if w.normal:
            terms["normal"] = w.normal * pointmap_normal_loss(
                points,
                gt,
                gt_scale,
                mask,
                w.normal_l1_weight,
                drop_boundary=w.normal_drop_boundary,
            )
        if w.scale:
            terms["scale"] = w.scale * scale_l1_loss(pred_scale, gt_scale)
        return weighted_sum(terms)

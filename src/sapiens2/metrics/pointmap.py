"""Pointmap metrics (official ``PointmapEvaluator``,
``sapiens/dense/src/evaluators/pointmap_evaluator.py``) and the paper's scale-aligned variant
(the "per-method scale optimization" of the paper's pointmap results, Table 5)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sapiens2.metrics._dense import (
    angular_error_deg,
    batch_chw,
    batch_mask,
    check_pair,
    resize_to,
    threshold_key,
)
from sapiens2.metrics.base import SumMetric

DEFAULT_DISTANCE_THRESHOLDS = (0.05, 0.10, 0.20)
DEFAULT_NORMAL_THRESHOLDS = (5.0, 11.25, 22.5, 30.0)


def sobel5_kernels(dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5×5 Sobel derivative kernels of OpenCV (``ksize=5``) as cross-correlation weights.

    ``kx = outer([1, 4, 6, 4, 1], [-1, -2, 0, 2, 1])`` (d/dx, x = column), ``ky = kx.T``.
    """
    smooth = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=dtype, device=device)
    deriv = torch.tensor([-1.0, -2.0, 0.0, 2.0, 1.0], dtype=dtype, device=device)
    kx = torch.outer(smooth, deriv)
    return kx, kx.T.contiguous()


def pointmap_normals(points: torch.Tensor) -> torch.Tensor:
    """Unit surface normals of a pointmap from 5×5 Sobel derivatives.

    ``n = normalize(∂P/∂x × ∂P/∂y)`` (eps 1e-12). The derivatives are zero-padded at the image
    border: the spec of the official evaluator does not say how it pads, so the border rule is
    unverified (OpenCV's ``cv2.Sobel`` default would be reflect-101).

    Args:
        points: (B, 3, H, W) pointmap.

    Returns:
        (B, 3, H, W) unit normals (zero where the cross product vanishes).
    """
    kx, ky = sobel5_kernels(points.dtype, points.device)
    weight = torch.stack([kx, ky])[:, None]  # (2, 1, 5, 5)
    b, c, h, w = points.shape
    grads = F.conv2d(points.reshape(b * c, 1, h, w), weight, padding=2).reshape(b, c, 2, h, w)
    n = torch.cross(grads[:, :, 0], grads[:, :, 1], dim=1)
    return F.normalize(n, dim=1, eps=1e-12)


def full_window_mask(valid: torch.Tensor, size: int = 5) -> torch.Tensor:
    """(B, H, W) bool -> pixels whose whole ``size``×``size`` window is valid and inside the image."""
    invalid = (~valid).double()[:, None]
    pad = size // 2
    invalid = F.pad(invalid, (pad, pad, pad, pad), value=1.0)
    return F.max_pool2d(invalid, size, stride=1)[:, 0] == 0


def least_squares_scale(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample scale ``s = argmin Σ_valid |s·p − g|² = Σ p·g / Σ p·p`` (1 where Σ p·p = 0).

    Args:
        pred: (B, 3, H, W). gt: (B, 3, H, W). mask: (B, H, W) bool.

    Returns:
        (B,) float64 scales.
    """
    m = mask[:, None].double()
    num = (pred.double() * gt.double() * m).flatten(1).sum(1)
    den = (pred.double() ** 2 * m).flatten(1).sum(1)
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), torch.ones_like(den))


class PointmapMetric(SumMetric):
    """Errors of predicted canonical pointmaps against canonical ground truth over valid pixels.

    With ``d = |p − g|`` (Euclidean, per pixel) pooled over all valid pixels of the dataset:
    ``l2_mean`` = mean d, ``rmse`` = sqrt(mean d²), ``x_mae`` / ``y_mae`` / ``z_mae`` = mean
    absolute per-axis difference, ``within_0.05`` / ``within_0.1`` / ``within_0.2`` = fraction
    (0–1) of pixels with d < t (canonical units; the official names say "cm").
    ``depth_abs_rel`` = mean ``|ẑ − z| / z`` over valid pixels with ``z > 0`` (the relative depth
    error, AbsRel, of the depth literature; not in the official evaluator). Canonical and metric
    depths differ by the same factor ``s = 768 / fx`` for prediction and ground truth, so it is
    the relative error of the metric depth when the true focal length is used.

    Normals (official): both full pointmaps (the target 0 outside the mask, the prediction as
    predicted) → 5×5 Sobel ∂/∂x, ∂/∂y → normalised cross product; errors over every valid pixel:
    ``normal_mean``, ``normal_rmse`` (degrees), ``normal_within_5`` ... ``normal_within_30``
    (fractions 0–1, as official); ``num_normal_pixels`` = the pixels scored.

    Deviation, off by default (``normal_full_window=True``): score only the valid pixels whose
    whole 5×5 window is valid and inside the image. Why: a window that reaches past the mask mixes
    the target's zeros (the camera centre) and the unsupervised prediction outside the mask into
    both normals, so near the mask border the official error measures the background as much as
    the surface (likewise within 2 pixels of the image border, where the window reads padding).

    Scale-aligned variant (``scale_aligned=True``, the paper's "per-method scale optimization",
    Table 5):
    per sample the prediction is multiplied by the least-squares scale
    ``s = Σ p·g / Σ p·p`` over its valid pixels (scale only, no shift), then the distance metrics
    are recomputed as ``aligned_l2_mean``, ``aligned_rmse``, ``aligned_x_mae``, ...,
    ``aligned_within_*``; ``aligned_scale_mean`` is the mean of the per-sample scales. Normal
    directions do not change under a positive scale, so there are no aligned normal metrics.

    The prediction is bilinearly resized to the target size if needed. State: pixel counts and
    float64 sums, reduced across ranks by summation.

    Args:
        distance_thresholds: thresholds for ``within_*``.
        normal_thresholds: angles (degrees) for ``normal_within_*``.
        scale_aligned: also compute the scale-aligned variant.
        normals: also compute the pointmap-normal metrics.
        normal_full_window: score the normals only where the whole 5×5 Sobel window is valid and
            inside the image (a deviation, see above); False = every valid pixel (official).
    """

    def __init__(
        self,
        distance_thresholds: Sequence[float] = DEFAULT_DISTANCE_THRESHOLDS,
        normal_thresholds: Sequence[float] = DEFAULT_NORMAL_THRESHOLDS,
        scale_aligned: bool = True,
        normals: bool = True,
        normal_full_window: bool = False,
    ) -> None:
        self.distance_thresholds = tuple(float(t) for t in distance_thresholds)
        self.normal_thresholds = tuple(float(t) for t in normal_thresholds)
        self.scale_aligned = scale_aligned
        self.normals = normals
        self.normal_full_window = normal_full_window
        super().__init__()

    def _distance_state(self) -> dict[str, np.ndarray]:
        return {
            "sum_d": np.zeros((), np.float64),
            "sum_d2": np.zeros((), np.float64),
            "sum_abs": np.zeros(3, np.float64),
            "within": np.zeros(len(self.distance_thresholds), np.int64),
            "sum_rel": np.zeros((), np.float64),
            "count_rel": np.zeros((), np.int64),
        }

    def _empty_state(self) -> dict[str, np.ndarray]:
        st = {"count": np.zeros((), np.int64), "num_samples": np.zeros((), np.int64)}
        st.update(self._distance_state())
        st.update({f"aligned_{k}": v for k, v in self._distance_state().items()})
        st["aligned_sum_scale"] = np.zeros((), np.float64)
        st.update(
            {
                "normal_count": np.zeros((), np.int64),
                "normal_sum": np.zeros((), np.float64),
                "normal_sum_sq": np.zeros((), np.float64),
                "normal_within": np.zeros(len(self.normal_thresholds), np.int64),
            }
        )
        return st

    def update(self, pred, target, mask=None) -> None:
        """Add a batch.

        Args:
            pred: predicted canonical pointmaps (B, 3, h, w) or (3, h, w) (the predicted scale is
                not used, as official).
            target: canonical ground-truth pointmaps (B, 3, H, W) or (3, H, W).
            mask: valid pixels (B, H, W) or (H, W), nonzero = valid; None = all pixels. Pixels
                whose target is not finite are never valid.
        """
        self._touch()
        p = batch_chw(pred, "pred")
        g = batch_chw(target, "target").to(p.device).double()
        check_pair(p, g)
        p = resize_to(p.double(), tuple(g.shape[-2:]))
        m = batch_mask(mask, g) & torch.isfinite(g).all(1)
        g = torch.where(m[:, None], g, torch.zeros_like(g))
        st = self._local
        st["count"] += int(m.sum())
        st["num_samples"] += int(p.shape[0])
        self._add_distances(p, g, m, "")
        if self.scale_aligned:
            s = least_squares_scale(p, g, m)
            st["aligned_sum_scale"] += float(s.sum())
            self._add_distances(p * s[:, None, None, None], g, m, "aligned_")
        if self.normals:
            nm = full_window_mask(m) if self.normal_full_window else m
            theta = angular_error_deg(pointmap_normals(p), pointmap_normals(g), dim=1)[nm]
            st["normal_count"] += int(theta.numel())
            st["normal_sum"] += float(theta.sum())
            st["normal_sum_sq"] += float((theta * theta).sum())
            for i, t in enumerate(self.normal_thresholds):
                st["normal_within"][i] += int((theta < t).sum())

    def _add_distances(
        self, p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, prefix: str
    ) -> None:
        diff = (p - g).permute(0, 2, 3, 1)[m]  # (N, 3)
        d = torch.linalg.vector_norm(diff, dim=1)
        st = self._local
        st[prefix + "sum_d"] += float(d.sum())
        st[prefix + "sum_d2"] += float((d * d).sum())
        st[prefix + "sum_abs"] += diff.abs().sum(0).cpu().numpy()
        for i, t in enumerate(self.distance_thresholds):
            st[prefix + "within"][i] += int((d < t).sum())
        z = g.permute(0, 2, 3, 1)[m][:, 2]
        positive = z > 0
        st[prefix + "sum_rel"] += float((diff[:, 2].abs()[positive] / z[positive]).sum())
        st[prefix + "count_rel"] += int(positive.sum())

    def _compute(self, state: dict[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        n = int(state["count"])
        prefixes = ("", "aligned_") if self.scale_aligned else ("",)
        for prefix in prefixes:
            if n == 0:
                vals = dict.fromkeys(
                    ["l2_mean", "rmse", "x_mae", "y_mae", "z_mae", "depth_abs_rel"], float("nan")
                )
                vals.update(
                    {threshold_key("within_", t): float("nan") for t in self.distance_thresholds}
                )
            else:
                sa = state[prefix + "sum_abs"]
                vals = {
                    "l2_mean": float(state[prefix + "sum_d"]) / n,
                    "rmse": float(np.sqrt(float(state[prefix + "sum_d2"]) / n)),
                    "x_mae": float(sa[0]) / n,
                    "y_mae": float(sa[1]) / n,
                    "z_mae": float(sa[2]) / n,
                }
                for i, t in enumerate(self.distance_thresholds):
                    vals[threshold_key("within_", t)] = int(state[prefix + "within"][i]) / n
            nr = int(state[prefix + "count_rel"])
            vals["depth_abs_rel"] = float(state[prefix + "sum_rel"]) / nr if nr else float("nan")
            out.update({prefix + k: v for k, v in vals.items()})
        if self.scale_aligned:
            ns = int(state["num_samples"])
            out["aligned_scale_mean"] = (
                float(state["aligned_sum_scale"]) / ns if ns else float("nan")
            )
        if self.normals:
            nn_ = int(state["normal_count"])
            out["normal_mean"] = float(state["normal_sum"]) / nn_ if nn_ else float("nan")
            out["normal_rmse"] = (
                float(np.sqrt(float(state["normal_sum_sq"]) / nn_)) if nn_ else float("nan")
            )
            for i, t in enumerate(self.normal_thresholds):
                out[threshold_key("normal_within_", t)] = (
                    int(state["normal_within"][i]) / nn_ if nn_ else float("nan")
                )
            out["num_normal_pixels"] = nn_
        out["num_pixels"] = n
        out["num_samples"] = int(state["num_samples"])
        return out

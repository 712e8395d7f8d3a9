"""Input handling shared by the dense metrics: numpy/torch inputs, batching, resizing, angles."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def as_tensor(x, name: str) -> torch.Tensor:
    """A torch tensor view of a numpy array or tensor (no copy when possible)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


def batch_chw(x, name: str, channels: int | None = 3) -> torch.Tensor:
    """(C, H, W) or (B, C, H, W) -> (B, C, H, W), checking the channel count."""
    t = as_tensor(x, name)
    shape = tuple(t.shape)
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or (channels is not None and t.shape[1] != channels):
        want = (
            f"({channels}, H, W) or (B, {channels}, H, W)"
            if channels
            else "(C, H, W) or (B, C, H, W)"
        )
        raise ValueError(f"{name} has shape {shape}, expected {want} (channels first)")
    return t


def batch_hw(x, name: str) -> torch.Tensor:
    """(H, W) or (B, H, W) -> (B, H, W)."""
    t = as_tensor(x, name)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected (H, W) or (B, H, W)")
    return t


def batch_mask(mask, like: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """Validity mask (H, W) / (B, H, W) / (B, 1, H, W), nonzero = valid -> bool (B, H, W) on like's device."""
    if mask is None:
        return torch.ones((like.shape[0], *like.shape[-2:]), dtype=torch.bool, device=like.device)
    m = as_tensor(mask, name)
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    m = batch_hw(m, name).to(like.device) != 0
    if m.shape[0] != like.shape[0] or m.shape[-2:] != like.shape[-2:]:
        raise ValueError(
            f"{name} has shape {tuple(m.shape)}, expected batch {like.shape[0]} and size {tuple(like.shape[-2:])}"
        )
    return m


def resize_to(pred: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of (B, C, h, w) to ``size`` if it differs (official)."""
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    return F.interpolate(pred, size=tuple(size), mode="bilinear", align_corners=False)


def check_pair(
    pred: torch.Tensor, gt: torch.Tensor, pred_name: str = "pred", gt_name: str = "target"
) -> None:
    if pred.shape[0] != gt.shape[0]:
        raise ValueError(
            f"{pred_name} has batch {pred.shape[0]} but {gt_name} has batch {gt.shape[0]}"
        )


def angular_error_deg(
    pred: torch.Tensor, gt: torch.Tensor, dim: int = 1, eps: float = 1e-6
) -> torch.Tensor:
    """Angle in degrees between vectors after L2 normalisation (``x / max(|x|, eps)``, official).

    Args:
        pred: (..., 3, ...) vectors. gt: same shape.
        dim: the vector dimension.
        eps: normalisation floor.

    Returns:
        Angles in [0, 180], the shape of the inputs without ``dim``, float64.
    """
    p = F.normalize(pred.double(), dim=dim, eps=eps)
    g = F.normalize(gt.double(), dim=dim, eps=eps)
    cos = (p * g).sum(dim).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos))


def threshold_key(prefix: str, t: float) -> str:
    """``within_5``, ``within_11.25``, ``within_0.05`` ... (shortest exact decimal)."""
    return f"{prefix}{t:g}"


def histogram_median(hist: np.ndarray, bin_width: float) -> float:
    """Median of values binned as ``floor(v / bin_width)`` (non-negative values).

    Like ``np.median`` (mean of the two middle order statistics for an even count), each order
    statistic estimated by spreading the values of its bin evenly inside the bin: the k-th of the
    c values in bin b is placed at ``(b + (j + 0.5) / c) · bin_width``, j its rank in the bin. The
    true order statistic lies in the same bin, so the error is below one bin width. NaN if empty.
    """
    total = int(hist.sum())
    if total == 0:
        return math.nan
    cdf = np.cumsum(hist)

    def order_statistic(k: int) -> float:
        b = int(np.searchsorted(cdf, k + 1, side="left"))
        before = int(cdf[b - 1]) if b > 0 else 0
        return (b + (k - before + 0.5) / int(hist[b])) * bin_width

    return float((order_statistic((total - 1) // 2) + order_statistic(total // 2)) / 2)

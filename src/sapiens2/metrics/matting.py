"""Matting metrics on the alpha matte: SAD, MSE, gradient and connectivity errors.

The four errors of the alpha matting benchmark (Rhemann et al., CVPR 2009) as the Deep Image
Matting evaluation code computes them (Xu et al., CVPR 2017: ``compute_sad_loss.m``,
``compute_mse_loss.m``, ``compute_gradient_loss.m``, ``compute_connectivity_error.m``), on
alphas in [0, 1], over the unknown region of a trimap (value 128) or over a given region (default:
the whole image). SAD, gradient and connectivity are sums over the region divided by 1000, as
reported in the literature; MSE is a mean. Exact definitions: docs/metrics.md.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from sapiens2.metrics._dense import as_tensor, batch_hw, batch_mask, resize_to
from sapiens2.metrics.base import SumMetric

__all__ = [
    "CONN_STEP",
    "CONN_THETA",
    "GRAD_SIGMA",
    "TRIMAP_UNKNOWN",
    "MattingMetric",
    "connectivity_phi",
    "gaussian_gradient_kernel",
    "gradient_magnitude",
    "matting_errors",
]

GRAD_SIGMA = 1.4
CONN_STEP = 0.1
CONN_THETA = 0.15
TRIMAP_UNKNOWN = 128
_TRIMAP_VALUES = (0, TRIMAP_UNKNOWN, 255)


def gaussian_gradient_kernel(sigma: float = GRAD_SIGMA, epsilon: float = 1e-2) -> np.ndarray:
    """The x-derivative-of-Gaussian filter of the benchmark's ``gaussgradient``.

    ``h[i, j] = G(i) · G'(j)`` for offsets ``i`` (rows), ``j`` (columns) in ``-r..r`` with
    ``G(x) = exp(-x²/2σ²) / (σ√(2π))``, ``G'(x) = -x G(x) / σ²`` and
    ``r = ceil(σ √(-2 ln(√(2π) σ ε)))`` (r = 4 for σ = 1.4), scaled to unit L2 norm. The
    y-derivative filter is its transpose.

    Returns:
        (2r+1, 2r+1) float64.
    """
    r = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * epsilon)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    h = g[:, None] * (-x * g / sigma**2)[None, :]
    return h / np.sqrt((h**2).sum())


def gradient_magnitude(alpha: torch.Tensor, sigma: float = GRAD_SIGMA) -> torch.Tensor:
    """``sqrt(gx² + gy²)`` of ``alpha (B, H, W)`` filtered with :func:`gaussian_gradient_kernel`
    and its transpose, borders replicated. Returns (B, H, W) in ``alpha``'s dtype."""
    hx = torch.from_numpy(gaussian_gradient_kernel(sigma)).to(alpha)
    r = hx.shape[0] // 2
    x = F.pad(alpha[:, None], (r, r, r, r), mode="replicate")
    g = F.conv2d(x, torch.stack([hx, hx.T])[:, None])
    return torch.sqrt(g[:, 0] ** 2 + g[:, 1] ** 2)


def _largest_component(binary: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a (H, W) bool map (the first found in row-major
    order on a tie); all False when the map is empty."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(
        binary.astype(np.uint8), connectivity=4, ltype=cv2.CV_32S
    )
    if n <= 1:
        return np.zeros_like(binary)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def connectivity_phi(
    pred: np.ndarray, target: np.ndarray, step: float = CONN_STEP, theta: float = CONN_THETA
) -> tuple[np.ndarray, np.ndarray]:
    """The connectivity degrees ``φ`` of the connectivity error, for two (H, W) alphas in [0, 1].

    For ``t_k = k·step`` (k = 1 .. 1/step), Ω_k is the largest 4-connected component of
    ``pred ≥ t_k and target ≥ t_k``. A pixel's level ``l`` is ``t_{k-1}`` for the first k with the
    pixel outside Ω_k (1 if it is in every Ω_k). With ``d = α − l``,
    ``φ(α) = 1 − d·[d ≥ theta]``.

    Returns:
        ``(φ(pred), φ(target))``, (H, W) float64 each.
    """
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(target, dtype=np.float64)
    level = np.full(p.shape, -1.0)
    for k in range(1, round(1 / step) + 1):
        t = k * step
        omega = _largest_component((p >= t) & (g >= t))
        level[(level == -1) & ~omega] = (k - 1) * step
    level[level == -1] = 1.0

    def phi(a: np.ndarray) -> np.ndarray:
        d = a - level
        return 1 - d * (d >= theta)

    return phi(p), phi(g)


def matting_errors(
    pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-sample errors of alphas in [0, 1].

    Args:
        pred: (B, H, W) float64 predicted alpha.
        target: (B, H, W) float64 ground-truth alpha.
        region: (B, H, W) bool, the pixels evaluated.

    Returns:
        ``sad``, ``grad``, ``conn`` (sums over the region / 1000), ``mse`` (mean over the region,
        NaN when it is empty) and ``pixels`` (region size), each (B,) float64.
    """
    m = region.to(torch.float64)
    n = m.flatten(1).sum(1)
    diff = pred - target
    sad = (diff.abs() * m).flatten(1).sum(1) / 1000
    sq = (diff * diff * m).flatten(1).sum(1)
    mse = torch.where(n > 0, sq / n.clamp(min=1), torch.full_like(sq, math.nan))
    grad_err = (gradient_magnitude(pred) - gradient_magnitude(target)) ** 2
    grad = (grad_err * m).flatten(1).sum(1) / 1000
    conn = torch.zeros_like(sad)
    p_np, g_np, r_np = pred.cpu().numpy(), target.cpu().numpy(), region.cpu().numpy()
    for b in range(pred.shape[0]):
        phi_p, phi_g = connectivity_phi(p_np[b], g_np[b])
        conn[b] = float(np.abs(phi_p - phi_g)[r_np[b]].sum()) / 1000
    return {"sad": sad, "mse": mse, "grad": grad, "conn": conn, "pixels": n}


def _as_alpha(x, name: str) -> torch.Tensor:
    """(H, W), (B, H, W) or (B, 1, H, W); float in [0, 1] or uint8 (/255) -> (B, H, W) float64."""
    t = as_tensor(x, name)
    if t.ndim == 4:
        if t.shape[1] != 1:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected one alpha channel")
        t = t[:, 0]
    t = batch_hw(t, name)
    if t.dtype == torch.uint8:
        return t.double() / 255
    if not t.is_floating_point():
        raise TypeError(f"{name} must be float in [0, 1] or uint8, got {t.dtype}")
    t = t.double()
    if t.numel() and not (torch.isfinite(t).all() and t.min() >= 0 and t.max() <= 1):
        raise ValueError(
            f"{name} must hold alphas in [0, 1] (uint8 is divided by 255), got values in "
            f"[{t.min().item():.4g}, {t.max().item():.4g}]"
        )
    return t


def _trimap_region(trimap, like: torch.Tensor) -> torch.Tensor:
    t = as_tensor(trimap, "trimap")
    if t.ndim == 4 and t.shape[1] == 1:
        t = t[:, 0]
    t = batch_hw(t, "trimap").to(like.device)
    if t.shape[0] != like.shape[0] or t.shape[-2:] != like.shape[-2:]:
        raise ValueError(
            f"trimap has shape {tuple(t.shape)}, expected batch {like.shape[0]} and size "
            f"{tuple(like.shape[-2:])}"
        )
    bad = ~torch.isin(t, torch.tensor(_TRIMAP_VALUES, dtype=t.dtype, device=t.device))
    if bad.any():
        vals = sorted({float(v) for v in t[bad].unique()[:10].tolist()})
        raise ValueError(f"trimap values must be 0, 128 or 255 (128 = unknown), got {vals}")
    return t == TRIMAP_UNKNOWN


class MattingMetric(SumMetric):
    """SAD, MSE, gradient and connectivity errors of predicted alpha mattes.

    Each error is computed per sample over its region (the trimap's unknown pixels, a given
    mask, or the whole image) and averaged over samples:

    * ``sad`` = mean of ``Σ|α − α*| / 1000``;
    * ``mse`` = mean of ``Σ(α − α*)² / #region`` (samples with an empty region excluded);
    * ``grad`` = mean of ``Σ(|∇α| − |∇α*|)² / 1000``, ∇ the σ = 1.4 Gaussian-derivative
      filters of :func:`gaussian_gradient_kernel`;
    * ``conn`` = mean of ``Σ|φ(α) − φ(α*)| / 1000`` (:func:`connectivity_phi`, step 0.1, θ 0.15).

    Also ``num_samples``, ``mse_samples`` and ``num_pixels`` (region pixels). The prediction is
    bilinearly resized to the target size if needed. State: float64 sums and int64 counts,
    reduced across ranks by summation.
    """

    def _empty_state(self) -> dict[str, np.ndarray]:
        f = {k: np.zeros((), np.float64) for k in ("sum_sad", "sum_mse", "sum_grad", "sum_conn")}
        i = {k: np.zeros((), np.int64) for k in ("num_samples", "mse_samples", "num_pixels")}
        return {**f, **i}

    def update(self, pred, target, trimap=None, mask=None) -> None:
        """Add a batch.

        Args:
            pred: predicted alpha (B, 1, h, w), (B, h, w) or (h, w); float in [0, 1] or uint8.
            target: ground-truth alpha (B, 1, H, W), (B, H, W) or (H, W); float in [0, 1] or uint8.
            trimap: (B, H, W) or (H, W) with values 0 / 128 / 255: evaluate where it is 128.
            mask: (B, H, W) or (H, W), nonzero = evaluate (instead of a trimap).
            Neither: the whole image.
        """
        self._touch()
        if trimap is not None and mask is not None:
            raise ValueError("give a trimap or a mask, not both")
        g = _as_alpha(target, "target")
        p = _as_alpha(pred, "pred").to(g.device)
        if p.shape[0] != g.shape[0]:
            raise ValueError(f"pred has batch {p.shape[0]} but target has batch {g.shape[0]}")
        p = resize_to(p[:, None], tuple(g.shape[-2:]))[:, 0]
        region = _trimap_region(trimap, g) if trimap is not None else batch_mask(mask, g)
        e = matting_errors(p, g, region)
        st = self._local
        st["num_samples"] += g.shape[0]
        st["num_pixels"] += int(e["pixels"].sum())
        for key in ("sad", "grad", "conn"):
            st[f"sum_{key}"] += float(e[key].sum())
        has = e["pixels"] > 0
        st["sum_mse"] += float(e["mse"][has].sum())
        st["mse_samples"] += int(has.sum())

    def _compute(self, state: dict[str, np.ndarray]) -> dict[str, Any]:
        n = int(state["num_samples"])
        nm = int(state["mse_samples"])
        nan = float("nan")
        return {
            "sad": float(state["sum_sad"]) / n if n else nan,
            "mse": float(state["sum_mse"]) / nm if nm else nan,
            "grad": float(state["sum_grad"]) / n if n else nan,
            "conn": float(state["sum_conn"]) / n if n else nan,
            "num_samples": n,
            "mse_samples": nm,
            "num_pixels": int(state["num_pixels"]),
        }

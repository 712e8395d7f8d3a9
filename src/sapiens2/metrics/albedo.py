"""Albedo metrics over masked pixels (official ``AlbedoEvaluator``,
``sapiens/dense/src/evaluators/albedo_evaluator.py``), including masked SSIM."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sapiens2.metrics._dense import batch_chw, batch_mask, check_pair, resize_to
from sapiens2.metrics.base import SumMetric

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
PSNR_MAX_DB = 120.0


def gaussian_kernel1d(
    size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype=torch.float64, device=None
) -> torch.Tensor:
    """Normalised 1-D Gaussian ``exp(-x²/2σ²)`` on ``x = -(size//2) .. size//2``."""
    x = torch.arange(size, dtype=dtype, device=device) - (size // 2)
    k = torch.exp(-(x * x) / (2 * sigma * sigma))
    return k / k.sum()


def _blur(x: torch.Tensor, k1d: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of (N, 1, H, W) with zero padding (outside the image = no data)."""
    r = k1d.numel() // 2
    x = F.conv2d(x, k1d.view(1, 1, 1, -1), padding=(0, r))
    return F.conv2d(x, k1d.view(1, 1, -1, 1), padding=(r, 0))


def masked_ssim_map(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, data_range: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked SSIM map: local statistics weighted by the Gaussian-blurred mask.

    With ``G`` an 11×11 Gaussian (σ 1.5, zero padding) and ``w = G*m``:
    ``μx = G*(m·x)/w``, ``σx² = G*(m·x²)/w − μx²``, ``σxy = G*(m·x·y)/w − μx·μy`` and
    ``SSIM = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))``,
    ``C1 = (0.01·R)²``, ``C2 = (0.03·R)²``, averaged over channels. A window counts where w > 0.5.
    With a full mask and away from the image border (5 pixels) this is exactly scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` map.

    Args:
        pred: (B, C, H, W). target: (B, C, H, W). mask: (B, H, W) bool.
        data_range: R, scalar or (B,) tensor.

    Returns:
        ``(ssim, valid)``: (B, H, W) float64 channel-averaged SSIM map and (B, H, W) bool windows.
    """
    x = pred.double()
    y = target.double()
    b, c, h, w = x.shape
    k = gaussian_kernel1d(dtype=torch.float64, device=x.device)
    m = mask[:, None].double()
    wm = _blur(m, k)  # (B, 1, H, W)
    valid = wm[:, 0] > 0.5
    wsafe = torch.where(wm > 1e-12, wm, torch.ones_like(wm))

    def local_mean(z: torch.Tensor) -> torch.Tensor:
        return _blur((z * m).reshape(b * c, 1, h, w), k).reshape(b, c, h, w) / wsafe

    mx, my = local_mean(x), local_mean(y)
    vx = local_mean(x * x) - mx * mx
    vy = local_mean(y * y) - my * my
    cxy = local_mean(x * y) - mx * my
    r = torch.as_tensor(data_range, dtype=torch.float64, device=x.device).reshape(-1, 1, 1, 1)
    c1 = (0.01 * r) ** 2
    c2 = (0.03 * r) ** 2
    ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return ssim.mean(1), valid


def masked_ssim(pred, target, mask=None, data_range: float | None = None) -> torch.Tensor:
    """Per-sample masked SSIM: mean of ``masked_ssim_map`` over valid windows (NaN if none).

    Args:
        pred: (B, C, H, W) or (C, H, W). target: same. mask: (B, H, W) / (H, W) or None (all valid).
        data_range: R; None = 255 if the target max > 1.5 else 1 (per sample, official rule).

    Returns:
        (B,) float64.
    """
    p = batch_chw(pred, "pred", channels=None)
    g = batch_chw(target, "target", channels=p.shape[1]).to(p.device)
    check_pair(p, g)
    m = batch_mask(mask, g)
    r = _data_range(g, data_range)
    ssim, valid = masked_ssim_map(p, g, m, r)
    num = (ssim * valid).flatten(1).sum(1)
    cnt = valid.flatten(1).sum(1)
    return torch.where(cnt > 0, num / cnt.clamp(min=1), torch.full_like(num, math.nan))


def _data_range(g: torch.Tensor, data_range: float | None) -> torch.Tensor:
    if data_range is not None:
        return torch.full((g.shape[0],), float(data_range), dtype=torch.float64, device=g.device)
    gmax = g.flatten(1).amax(1).double()
    return torch.where(gmax > 1.5, torch.full_like(gmax, 255.0), torch.ones_like(gmax))


class AlbedoMetric(SumMetric):
    """Albedo errors over masked pixels; errors are in units of the data range R (values / R).

    R is ``data_range`` if given, else per sample 255 if the target max > 1.5 else 1 (official), so
    uint8 and [0, 1] inputs give the same numbers. The prediction is bilinearly resized to the
    target size if needed. With ``e`` = (pred − target) / R per channel:

    * ``mae`` = mean over valid pixels of the channel-mean |e|; ``rmse`` = sqrt(mean channel-mean
      e²) — both pooled over all valid pixels of the dataset;
    * ``psnr`` = mean over samples of ``10·log10(1 / MSE_sample)`` (dB; a sample with MSE 0 counts
      as 120 dB);
    * ``ssim`` = mean over samples of the masked SSIM (``masked_ssim_map``; windows with blurred
      mask > 0.5);
    * ``grad_l1`` = mean channel-mean |∇pred − ∇target| over forward differences (x and y pooled)
      whose two pixels are both valid.

    ``num_samples`` counts samples with at least one valid pixel (others contribute nothing;
    ``num_empty`` counts them). State: float64 sums and counts, reduced across ranks by summation.

    Args:
        data_range: fixed R, or None for the per-sample rule.
    """

    def __init__(self, data_range: float | None = None) -> None:
        self.data_range = data_range
        super().__init__()

    def _empty_state(self) -> dict[str, np.ndarray]:
        f = {
            k: np.zeros((), np.float64)
            for k in ("sum_abs", "sum_sq", "sum_grad", "sum_psnr", "sum_ssim")
        }
        i = {
            k: np.zeros((), np.int64)
            for k in ("count", "grad_count", "num_samples", "ssim_samples", "num_empty")
        }
        return {**f, **i}

    def update(self, pred, target, mask=None) -> None:
        """Add a batch.

        Args:
            pred: predicted albedo (B, 3, h, w) or (3, h, w), same scale as the target.
            target: ground-truth albedo (B, 3, H, W) or (3, H, W), [0, 1] or [0, 255].
            mask: valid pixels (B, H, W) or (H, W), nonzero = valid; None = all pixels.
        """
        self._touch()
        p = batch_chw(pred, "pred")
        g = batch_chw(target, "target").to(p.device).double()
        check_pair(p, g)
        p = resize_to(p.double(), tuple(g.shape[-2:]))
        m = batch_mask(mask, g)
        r = _data_range(g, self.data_range)
        rr = r.view(-1, 1, 1, 1)
        e = (p - g) / rr
        mf = m.double()
        abs_px = e.abs().mean(1)  # (B, H, W)
        sq_px = (e * e).mean(1)
        n_px = mf.flatten(1).sum(1)
        st = self._local
        st["count"] += int(n_px.sum())
        st["sum_abs"] += float((abs_px * mf).sum())
        st["sum_sq"] += float((sq_px * mf).sum())
        has = n_px > 0
        st["num_samples"] += int(has.sum())
        st["num_empty"] += int((~has).sum())
        mse = (sq_px * mf).flatten(1).sum(1) / n_px.clamp(min=1)
        psnr = 10 * torch.log10(1.0 / mse.clamp(min=10 ** (-PSNR_MAX_DB / 10)))
        st["sum_psnr"] += float(psnr[has].sum())
        # gradients: forward differences where both pixels are valid
        pn, gn = p / rr, g / rr
        for dim in (3, 2):
            n = p.shape[dim] - 1
            dp = pn.narrow(dim, 1, n) - pn.narrow(dim, 0, n)
            dg = gn.narrow(dim, 1, n) - gn.narrow(dim, 0, n)
            mv = m.narrow(dim - 1, 1, n) & m.narrow(dim - 1, 0, n)
            st["sum_grad"] += float(((dp - dg).abs().mean(1) * mv).sum())
            st["grad_count"] += int(mv.sum())
        ssim, valid = masked_ssim_map(p, g, m, r)
        cnt = valid.flatten(1).sum(1)
        ok = cnt > 0
        st["sum_ssim"] += float(((ssim * valid).flatten(1).sum(1)[ok] / cnt[ok]).sum())
        st["ssim_samples"] += int(ok.sum())

    def _compute(self, state: dict[str, np.ndarray]) -> dict[str, Any]:
        n = int(state["count"])
        ns = int(state["num_samples"])
        ng = int(state["grad_count"])
        nss = int(state["ssim_samples"])
        nan = float("nan")
        return {
            "mae": float(state["sum_abs"]) / n if n else nan,
            "rmse": float(np.sqrt(float(state["sum_sq"]) / n)) if n else nan,
            "psnr": float(state["sum_psnr"]) / ns if ns else nan,
            "ssim": float(state["sum_ssim"]) / nss if nss else nan,
            "grad_l1": float(state["sum_grad"]) / ng if ng else nan,
            "num_pixels": n,
            "num_samples": ns,
            "num_empty": int(state["num_empty"]),
        }

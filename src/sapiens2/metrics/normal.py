"""Surface-normal angular-error metrics over valid pixels (official ``NormalEvaluator``,
``sapiens/dense/src/evaluators/normal_evaluator.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sapiens2.metrics._dense import (
    angular_error_deg,
    batch_chw,
    batch_mask,
    check_pair,
    histogram_median,
    resize_to,
    threshold_key,
)
from sapiens2.metrics.base import SumMetric

DEFAULT_THRESHOLDS = (5.0, 11.25, 22.5, 30.0)


class NormalMetric(SumMetric):
    """Angular error between predicted and ground-truth normals, pooled over all valid pixels.

    Per pixel: both vectors L2-normalised (``x / max(|x|, 1e-6)``), ``θ = acos(clamp(p·g, -1, 1))``
    in degrees; the prediction is first bilinearly resized to the target size if needed (official).
    ``compute()`` returns (degrees / percent):

    * ``mean`` = mean θ, ``rmse`` = sqrt(mean θ²), ``median`` (see below);
    * ``within_5``, ``within_11.25``, ``within_22.5``, ``within_30`` = % of pixels with θ < t;
    * ``num_pixels``; ``num_empty`` = samples that had no valid pixel (they contribute nothing).

    Median: in one process (no ``sync()`` across more than one rank) and with ``exact_median=True``
    it is the exact median of all per-pixel errors (``np.median``; errors are stored as float32, 4
    bytes per valid pixel, so the result is exact up to float32 rounding, ~1e-5°). After ``sync()``
    over several ranks, or with ``exact_median=False``, it comes from a histogram of
    ``floor(θ / bin_width)`` (default 0.001°, 180 000 int64 bins summed exactly across ranks), the
    values of a bin taken as evenly spread inside it (``histogram_median``): the error is below one
    bin width. (The official
    evaluator reports the centre of a 0.5° bin instead.)

    Args:
        thresholds: angles (degrees) for the ``within_*`` percentages.
        exact_median: keep per-pixel errors for the exact single-process median.
        bin_width: histogram bin width in degrees.
    """

    def __init__(
        self,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        exact_median: bool = True,
        bin_width: float = 0.001,
    ) -> None:
        self.thresholds = tuple(float(t) for t in thresholds)
        self.exact_median = exact_median
        self.bin_width = float(bin_width)
        self.num_bins = int(np.ceil(180.0 / self.bin_width))
        super().__init__()

    def _empty_state(self) -> dict[str, np.ndarray]:
        self._values: list[np.ndarray] = []
        return {
            "count": np.zeros((), dtype=np.int64),
            "sum": np.zeros((), dtype=np.float64),
            "sum_sq": np.zeros((), dtype=np.float64),
            "within": np.zeros(len(self.thresholds), dtype=np.int64),
            "hist": np.zeros(self.num_bins, dtype=np.int64),
            "num_empty": np.zeros((), dtype=np.int64),
        }

    def update(self, pred, target, mask=None) -> None:
        """Add a batch.

        Args:
            pred: predicted normals (B, 3, h, w) or (3, h, w), any length (normalised here).
            target: ground-truth normals (B, 3, H, W) or (3, H, W). (Dataset ``.npy`` files are
                (H, W, 3): pass ``arr.transpose(2, 0, 1)``.)
            mask: valid pixels (B, H, W) or (H, W), nonzero = valid; None = all pixels.
        """
        self._touch()
        p = batch_chw(pred, "pred")
        g = batch_chw(target, "target").to(p.device)
        check_pair(p, g)
        p = resize_to(p.double(), tuple(g.shape[-2:]))
        m = batch_mask(mask, g)
        theta = angular_error_deg(p, g, dim=1)  # (B, H, W)
        self._local["num_empty"] += int((m.flatten(1).sum(1) == 0).sum())
        self.add_errors(theta[m])

    def add_errors(self, theta: torch.Tensor) -> None:
        """Add already computed per-pixel angular errors (1-D, degrees)."""
        self._touch()
        theta = theta.double().reshape(-1)
        st = self._local
        st["count"] += int(theta.numel())
        st["sum"] += float(theta.sum())
        st["sum_sq"] += float((theta * theta).sum())
        for i, t in enumerate(self.thresholds):
            st["within"][i] += int((theta < t).sum())
        idx = torch.clamp((theta / self.bin_width).floor().long(), 0, self.num_bins - 1)
        st["hist"] += torch.bincount(idx, minlength=self.num_bins).cpu().numpy().astype(np.int64)
        if self.exact_median:
            self._values.append(theta.float().cpu().numpy())

    def _compute(self, state: dict[str, np.ndarray]) -> dict[str, Any]:
        n = int(state["count"])
        out: dict[str, Any] = {}
        if n == 0:
            out.update(mean=float("nan"), median=float("nan"), rmse=float("nan"))
            out.update({threshold_key("within_", t): float("nan") for t in self.thresholds})
        else:
            out["mean"] = float(state["sum"]) / n
            if self.exact_median and self._global_world_size == 1:
                out["median"] = float(np.median(np.concatenate(self._values).astype(np.float64)))
            else:
                out["median"] = histogram_median(state["hist"], self.bin_width)
            out["rmse"] = float(np.sqrt(float(state["sum_sq"]) / n))
            for i, t in enumerate(self.thresholds):
                out[threshold_key("within_", t)] = 100.0 * int(state["within"][i]) / n
        out["num_pixels"] = n
        out["num_empty"] = int(state["num_empty"])
        return out

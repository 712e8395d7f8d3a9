"""Semantic segmentation metrics from an accumulated confusion matrix (official ``SegEvaluator``,
``sapiens/dense/src/evaluators/seg_evaluator.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sapiens2.metrics._dense import as_tensor, batch_hw, resize_to
from sapiens2.metrics.base import SumMetric


class SegmentationMetric(SumMetric):
    """aAcc, mIoU, mAcc and per-class IoU / Acc from a dataset-wide confusion matrix.

    Pixels whose target is ``ignore_index`` are dropped. With ``I_c`` = pixels of class c predicted
    as c, ``L_c`` = target pixels of class c, ``P_c`` = pixels predicted as c (on non-ignored
    pixels), ``U_c = L_c + P_c - I_c``:

    * ``aAcc = ΣI / ΣL``, ``IoU_c = I_c / U_c``, ``Acc_c = I_c / L_c``;
    * 0/0 classes (absent from target and prediction) become ``nan_to_num`` (0.0, as the official
      configs set it) *before* averaging; with ``nan_to_num=None`` they are skipped (nan-mean);
    * ``mIoU`` / ``mAcc`` are the means over classes. All results are percentages (× 100).

    State: the (C, C) int64 confusion matrix ``[target, prediction]``; cross-process sums are exact.

    Args:
        num_classes: number of classes C (29 for the body-part layout).
        class_names: optional C names for the per-class table (default "0", "1", ...).
        ignore_index: target label that is not evaluated (255).
        nan_to_num: value for 0/0 per-class scores, or None to leave them NaN and skip them.
    """

    def __init__(
        self,
        num_classes: int = 29,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        nan_to_num: float | None = 0.0,
    ) -> None:
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = (
            tuple(class_names)
            if class_names is not None
            else tuple(str(i) for i in range(num_classes))
        )
        self.ignore_index = ignore_index
        self.nan_to_num = nan_to_num
        super().__init__()

    def _empty_state(self) -> dict[str, np.ndarray]:
        return {"confusion": np.zeros((self.num_classes, self.num_classes), dtype=np.int64)}

    def update(self, pred, target) -> None:
        """Add a batch.

        Args:
            pred: class logits / scores (B, C, h, w) or (C, h, w), floating (bilinearly resized to
                the target size, align_corners=False, then argmax over C, as official); or label
                maps (B, H, W) / (H, W), integer.
            target: ground-truth labels (B, H, W) or (H, W), integer in [0, C) or ``ignore_index``.
        """
        self._touch()
        tgt = batch_hw(target, "target")
        if tgt.dtype.is_floating_point or tgt.dtype == torch.bool:
            raise ValueError(f"target must hold integer labels, got dtype {tgt.dtype}")
        p = as_tensor(pred, "pred")
        if p.dtype.is_floating_point:
            if p.ndim == 3:
                p = p[None]
            if p.ndim != 4 or p.shape[1] != self.num_classes:
                raise ValueError(
                    f"pred logits have shape {tuple(p.shape)}, expected (B, {self.num_classes}, h, w) or ({self.num_classes}, h, w)"
                )
            p = resize_to(p, tuple(tgt.shape[-2:])).argmax(1)
        else:
            p = batch_hw(p, "pred label map")
        if p.shape != tgt.shape:
            raise ValueError(
                f"pred labels have shape {tuple(p.shape)} but target has shape {tuple(tgt.shape)}"
            )
        tgt = tgt.to(p.device).long()
        p = p.long()
        valid = tgt != self.ignore_index
        t_valid = tgt[valid]
        p_valid = p[valid]
        c = self.num_classes
        for name, v in (("target", t_valid), ("pred", p_valid)):
            if v.numel() and (int(v.min()) < 0 or int(v.max()) >= c):
                bad = int(v.min()) if int(v.min()) < 0 else int(v.max())
                raise ValueError(
                    f"{name} label {bad} is outside [0, {c}) (and is not ignore_index {self.ignore_index})"
                )
        counts = torch.bincount(t_valid * c + p_valid, minlength=c * c).reshape(c, c)
        self._local["confusion"] += counts.cpu().numpy().astype(np.int64)

    @property
    def confusion(self) -> np.ndarray:
        """(C, C) int64 confusion matrix, rows = target, columns = prediction."""
        return self.state["confusion"]

    def _compute(self, state: dict[str, np.ndarray]) -> dict[str, Any]:
        cm = state["confusion"].astype(np.float64)
        inter = np.diag(cm)
        label = cm.sum(1)
        predicted = cm.sum(0)
        union = label + predicted - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / union
            acc = inter / label
            a_acc = inter.sum() / label.sum() if label.sum() > 0 else np.nan
        if self.nan_to_num is not None:
            iou = np.nan_to_num(iou, nan=self.nan_to_num)
            acc = np.nan_to_num(acc, nan=self.nan_to_num)
            m_iou, m_acc = float(np.mean(iou)), float(np.mean(acc))
        else:
            m_iou = float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")
            m_acc = float(np.nanmean(acc)) if np.any(~np.isnan(acc)) else float("nan")
        return {
            "aAcc": float(a_acc) * 100,
            "mIoU": m_iou * 100,
            "mAcc": m_acc * 100,
            "per_class": {
                name: {"IoU": float(iou[i]) * 100, "Acc": float(acc[i]) * 100}
                for i, name in enumerate(self.class_names)
            },
            "num_pixels": int(label.sum()),
        }

    def table(self, result: dict[str, Any] | None = None) -> str:
        """Markdown per-class table (IoU, Acc in %) of ``result`` (default ``compute()``)."""
        result = result if result is not None else self.compute()
        lines = ["| class | IoU | Acc |", "|---|---|---|"]
        for name, row in result["per_class"].items():
            lines.append(f"| {name} | {row['IoU']:.2f} | {row['Acc']:.2f} |")
        lines.append(f"| **mean** | {result['mIoU']:.2f} | {result['mAcc']:.2f} |")
        return "\n".join(lines)

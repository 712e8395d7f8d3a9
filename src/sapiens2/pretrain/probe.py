"""Frozen-backbone dense probing (paper §6.1): train a light head on frozen features, report the metric.

The paper selects pretraining checkpoints, and made its design decisions, by dense probing. Here the
backbone runs once over the probe's train and val images (deterministic resize / top-down crop, no
augmentation) and its final feature maps ``(D, H/16, W/16)`` are cached; a light head (BatchNorm +
1x1 convolution, optionally one hidden 1x1 layer) is then trained on the cached features:

* ``seg``: 29-class logits upsampled (bilinear) to a quarter of the input size, cross-entropy
  against nearest-resized labels (255 ignored); evaluated at the labels' full size: mIoU (and
  aAcc, mAcc) from :class:`sapiens2.metrics.SegmentationMetric`, plus the person-vs-background IoU
  ``fgIoU`` (the 28 body-part classes merged; a denser signal for weak probes).
* ``pose``: 308 heatmaps upsampled to ``input / 4``, keypoint-weighted MSE against UDP targets on
  ground-truth boxes; decoded with DARK-UDP and scored with the official 308-keypoint evaluator
  (:func:`sapiens2.metrics.keypoints308.evaluate_keypoints308`, keypoint AP), plus PCK@0.1 of the
  box size (a denser signal for weak probes).

The probe's own choices (head, input size, steps, lr) are fields of :class:`ProbeConfig`; the paper
does not publish its probing decoder.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sapiens2.data import transforms as T
from sapiens2.data.datasets import PoseDataset, SegDataset, default_transforms
from sapiens2.inference.heatmap import decode_udp
from sapiens2.inference.topdown import keypoints_to_image
from sapiens2.metrics.keypoints308 import evaluate_keypoints308
from sapiens2.metrics.segmentation import SegmentationMetric
from sapiens2.models import Sapiens2
from sapiens2.models.heads.pose import init_heatmap_layer

__all__ = ["ProbeConfig", "ProbeHead", "extract_features", "run_probe"]

logger = logging.getLogger(__name__)

PROBE_TASKS = ("seg", "pose")


@dataclass(frozen=True)
class ProbeConfig:
    """Probe settings.

    Args:
        task: ``"seg"`` or ``"pose"``.
        input_size: network input (H, W) (multiple of the backbone stride).
        steps: head training steps on the cached features.
        batch_size, lr, weight_decay: AdamW on the head.
        hidden: 0 for a linear head, else the width of one hidden 1x1 layer (GELU).
        class_balanced: seg only: weight the cross-entropy by ``freq**-0.5`` of each class in the
            train labels (normalised to mean 1), so that a weak probe does not settle on predicting
            background everywhere (small people at stride 16 are otherwise never predicted).
        max_train, max_val: use at most this many train / val items (0 = all).
        seed: head init and batch order.
    """

    task: str = "seg"
    input_size: tuple[int, int] = (256, 192)
    steps: int = 400
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hidden: int = 0
    class_balanced: bool = True
    max_train: int = 0
    max_val: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in PROBE_TASKS:
            raise ValueError(f"probe task must be one of {PROBE_TASKS}, got {self.task!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("probe steps and batch_size must be >= 1")


class ProbeHead(nn.Module):
    """BatchNorm over the frozen features, then a 1x1 convolution (or a small 1x1 MLP).

    ``near_zero``: the output layer starts at ~0 (normal, std 0.001, zero bias), as heatmap heads
    do; PyTorch's default init would start every heatmap pixel at ~0.1-1 of noise, above the
    loss of an all-zero prediction, and a short probe spends its steps removing it.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 0, near_zero: bool = False) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_dim)
        if hidden:
            self.proj = nn.Sequential(
                nn.Conv2d(in_dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, out_dim, 1)
            )
        else:
            self.proj = nn.Conv2d(in_dim, out_dim, 1)
        if near_zero:
            init_heatmap_layer(self.proj[-1] if hidden else self.proj)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``(B, D, h, w)`` -> ``(B, out_dim, h, w)``."""
        return self.proj(self.norm(feats))


@torch.no_grad()
def extract_features(
    backbone: Sapiens2, dataset, limit: int = 0, batch_size: int = 8
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Frozen features ``(N, D, h, w)`` of the dataset's images, with the other item fields."""
    backbone.eval()
    dev = next(backbone.parameters()).device
    n = len(dataset) if not limit else min(limit, len(dataset))
    feats, items = [], []
    for start in range(0, n, batch_size):
        batch = [dataset[i] for i in range(start, min(n, start + batch_size))]
        x = torch.stack([b.pop("image") for b in batch]).to(dev)
        feats.append(backbone(x).float().cpu())
        items += batch
    return torch.cat(feats), items


def _train_head(head: ProbeHead, feats: torch.Tensor, loss_fn, cfg: ProbeConfig) -> list[float]:
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    head.train()
    losses = []
    n = feats.shape[0]
    for step in range(cfg.steps):
        idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen)
        for g in opt.param_groups:  # cosine decay
            g["lr"] = cfg.lr * 0.5 * (1 + np.cos(np.pi * step / cfg.steps))
        loss = loss_fn(head(feats[idx]), idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    head.eval()
    return losses


def _probe_seg(backbone: Sapiens2, data: str | Path, cfg: ProbeConfig) -> dict[str, Any]:
    hw = tuple(cfg.input_size)
    # train on labels resized with the image (nearest); evaluate on the original labels
    train = SegDataset(data, "train", train=False, input_hw=hw, transforms=[T.Resize(hw)])
    val = SegDataset(
        data, "val", train=False, input_hw=hw, transforms=default_transforms("seg", False, hw)
    )
    ftr, itr = extract_features(backbone, train, cfg.max_train)
    labels = torch.stack([it["seg"] for it in itr])  # (N, H, W)
    # the head trains against labels at a quarter of the input size (nearest), which is ample for
    # 16-pixel features and 16x cheaper; evaluation uses the full-resolution labels
    h4, w4 = hw[0] // 4, hw[1] // 4
    labels = F.interpolate(labels[:, None].float(), size=(h4, w4), mode="nearest")[:, 0].long()
    head = ProbeHead(ftr.shape[1], 29, cfg.hidden)
    weight = None
    if cfg.class_balanced:
        counts = torch.bincount(labels[labels != 255].flatten(), minlength=29).float()
        weight = torch.where(counts > 0, counts.clamp_min(1.0) ** -0.5, torch.zeros(()))
        weight = weight / weight[counts > 0].mean()

    def loss_fn(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(logits, size=(h4, w4), mode="bilinear", align_corners=False)
        return F.cross_entropy(up, labels[idx], weight=weight, ignore_index=255)

    losses = _train_head(head, ftr, loss_fn, cfg)
    fva, iva = extract_features(backbone, val, cfg.max_val)
    metric = SegmentationMetric(29)
    inter = union = 0
    with torch.no_grad():
        for f, it in zip(fva, iva, strict=True):
            logits = head(f[None])
            metric.update(logits, it["seg"][None])
            y = it["seg"]
            pred = F.interpolate(logits, size=y.shape, mode="bilinear", align_corners=False)
            fg_pred, fg_true, valid = pred[0].argmax(0) != 0, (y != 0) & (y != 255), y != 255
            inter += int((fg_pred & fg_true & valid).sum())
            union += int(((fg_pred | fg_true) & valid).sum())
    res = metric.compute()
    return {
        "mIoU": float(res["mIoU"]),
        "fgIoU": 100.0 * inter / max(union, 1),
        "mAcc": float(res["mAcc"]),
        "aAcc": float(res["aAcc"]),
        "train_loss_end": float(np.mean(losses[-20:])),
        "num_train": len(itr),
        "num_val": len(iva),
    }


def _probe_pose(backbone: Sapiens2, data: str | Path, cfg: ProbeConfig) -> dict[str, Any]:
    hw = tuple(cfg.input_size)
    train = PoseDataset(data, "train", train=False, input_hw=hw, out_of_range="drop")
    val = PoseDataset(data, "val", train=False, input_hw=hw, out_of_range="drop")
    ftr, itr = extract_features(backbone, train, cfg.max_train)
    targets = torch.stack([it["heatmaps"] for it in itr])  # (N, K, H/4, W/4)
    weights = torch.stack([it["keypoint_weights"] for it in itr])  # (N, K)
    k = targets.shape[1]
    head = ProbeHead(ftr.shape[1], k, cfg.hidden, near_zero=True)
    hm_hw = targets.shape[-2:]

    def loss_fn(out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(out, size=hm_hw, mode="bilinear", align_corners=False)
        w = weights[idx][..., None, None]
        return ((up - targets[idx]) ** 2 * w).mean() * 1000.0  # scaled as the official MSE loss

    losses = _train_head(head, ftr, loss_fn, cfg)
    fva, iva = extract_features(backbone, val, cfg.max_val)
    preds = []
    hits = total = 0
    with torch.no_grad():
        for start in range(0, len(iva), 32):
            f = fva[start : start + 32]
            hm = F.interpolate(head(f), size=hm_hw, mode="bilinear", align_corners=False)
            kp, scores = decode_udp(hm.numpy(), (hw[1], hw[0]))
            its = iva[start : start + 32]
            centers = np.stack([it["center"].numpy() for it in its])
            scales = np.stack([it["scale"].numpy() for it in its])
            img_kp = keypoints_to_image(kp, centers, scales, hw)
            for j, it in enumerate(its):
                preds.append(
                    {
                        "image_id": it["image_id"],
                        "keypoints": img_kp[j],
                        "keypoint_scores": scores[j],
                    }
                )
                gt = it["gt_keypoints"].numpy()
                lab = gt[:, 2] > 0
                box = it["bbox"].numpy()
                size = max(box[2] - box[0], box[3] - box[1], 1.0)
                d = np.linalg.norm(img_kp[j][lab] - gt[lab, :2], axis=1)
                hits += int((d < 0.1 * size).sum())
                total += int(lab.sum())
    gt_json = _pose_gt(data, "val")
    res = evaluate_keypoints308(gt_json, preds)
    return {
        "AP": float(res["AP"]),
        "AR": float(res["AR"]),
        "PCK@0.1": hits / max(total, 1),
        "train_loss_end": float(np.mean(losses[-20:])),
        "num_train": len(itr),
        "num_val": len(iva),
    }


def _pose_gt(data: str | Path, split: str) -> dict:
    path = Path(data) / split / "pose.json"
    if not path.is_file():
        raise FileNotFoundError(f"pose probe: {path} not found (a dataset folder is required)")
    return json.loads(path.read_text())


def run_probe(backbone: Sapiens2, data: str | Path, cfg: ProbeConfig) -> dict[str, Any]:
    """Trains a probe head on ``data``'s train split and evaluates it on its val split.

    Args:
        backbone: the frozen backbone (not modified).
        data: a dataset root with ``train/`` and ``val/`` (docs/formats.md).
        cfg: probe settings.

    Returns:
        The metrics (seg: ``mIoU``, ``fgIoU``, ``mAcc``, ``aAcc`` in %; pose: ``AP``, ``AR`` fractions and
        ``PCK@0.1``) plus ``train_loss_end``, ``num_train``, ``num_val`` and the config.
    """
    s = backbone.cfg.stride
    if cfg.input_size[0] % s or cfg.input_size[1] % s:
        raise ValueError(f"probe input_size {cfg.input_size} must be a multiple of {s}")
    torch.manual_seed(cfg.seed)
    was_training = backbone.training
    req = [p.requires_grad for p in backbone.parameters()]
    backbone.requires_grad_(False)
    try:
        res = (
            _probe_seg(backbone, data, cfg)
            if cfg.task == "seg"
            else _probe_pose(backbone, data, cfg)
        )
    finally:
        for p, r in zip(backbone.parameters(), req, strict=True):
            p.requires_grad_(r)
        backbone.train(was_training)
    res["config"] = asdict(cfg)
    return res

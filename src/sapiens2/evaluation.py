"""Evaluating a task model on a dataset: what differs between the five tasks (dataset, metric,
prediction, picture) in one small adapter class each, and :func:`evaluate`, which runs a model over
a split in one process or sharded across ``torch.distributed`` ranks.

Used by ``sapiens2 eval`` and by the trainer's periodic validation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sapiens2.data import datasets as D
from sapiens2.data.metadata import keypoints308, seg29
from sapiens2.metrics.albedo import AlbedoMetric
from sapiens2.metrics.keypoints308 import Keypoints308Metric
from sapiens2.metrics.normal import NormalMetric
from sapiens2.metrics.pointmap import PointmapMetric
from sapiens2.metrics.segmentation import SegmentationMetric

IMAGE_MEAN = torch.tensor(D.IMAGE_MEAN).view(3, 1, 1)
IMAGE_STD = torch.tensor(D.IMAGE_STD).view(3, 1, 1)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def denormalize(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) normalised -> (H, W, 3) uint8 RGB."""
    x = image.detach().float().cpu() * IMAGE_STD + IMAGE_MEAN
    return x.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()


def resize_like(pred: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) predictions to ``hw`` (a 2K head on 4K inputs, etc.)."""
    if tuple(pred.shape[-2:]) == tuple(hw):
        return pred
    return F.interpolate(pred.float(), size=hw, mode="bilinear", align_corners=False)


class TaskAdapter:
    task = ""
    dataset_cls: type = D.SegDataset
    primary_metric = ""
    higher_is_better = True

    def dataset(self, data, split: str, train: bool, input_size, seed: int, augment: bool = True):
        """``train`` selects the training behaviour (dropping unusable samples); ``augment`` the
        official training augmentations (else the deterministic eval pipeline)."""
        hw = tuple(input_size)
        transforms = None if (augment or not train) else D.default_transforms(self.task, False, hw)
        return self.dataset_cls(
            data, split, train=train, input_hw=hw, seed=seed, transforms=transforms
        )

    def predict(self, model: nn.Module, image: torch.Tensor):
        """The raw model output for a normalised batch (pose adds the flip test)."""
        return model(image)

    def metric(self, data, split: str):
        raise NotImplementedError

    def update_metric(self, metric, pred, batch: dict[str, Any]) -> None:
        raise NotImplementedError

    def picture(self, batch: dict[str, Any], pred, i: int) -> list[np.ndarray]:
        """Panels for sample ``i``: input, target, prediction (RGB uint8, input size)."""
        raise NotImplementedError


class SegAdapter(TaskAdapter):
    task, dataset_cls, primary_metric = "seg", D.SegDataset, "mIoU"

    def metric(self, data, split):
        return SegmentationMetric(seg29().num_classes, seg29().names)

    def update_metric(self, metric, pred, batch):
        targets = batch["seg"]
        targets = list(targets) if isinstance(targets, torch.Tensor) else targets
        for logits, target in zip(pred, targets, strict=True):
            metric.update(resize_like(logits[None], target.shape[-2:]).argmax(1), target[None])

    def picture(self, batch, pred, i):
        from sapiens2.viz.seg import seg_to_rgb

        image = denormalize(batch["image"][i])
        target = batch["seg"][i].cpu().numpy()
        labels = resize_like(pred[i : i + 1], image.shape[:2]).argmax(1)[0].cpu().numpy()
        return [image, _fit(seg_to_rgb(target), image), seg_to_rgb(labels)]


class NormalAdapter(TaskAdapter):
    task, dataset_cls, primary_metric, higher_is_better = "normal", D.NormalDataset, "mean", False

    def metric(self, data, split):
        return NormalMetric()

    def update_metric(self, metric, pred, batch):
        metric.update(resize_like(pred, batch["normal"].shape[-2:]), batch["normal"], batch["mask"])

    def picture(self, batch, pred, i):
        from sapiens2.viz.dense import normals_to_rgb

        image = denormalize(batch["image"][i])
        mask = batch["mask"][i].cpu().numpy()
        gt = batch["normal"][i].permute(1, 2, 0).cpu().numpy()
        p = F.normalize(resize_like(pred[i : i + 1], image.shape[:2])[0].float(), dim=0)
        return [image, normals_to_rgb(gt, mask), normals_to_rgb(p.permute(1, 2, 0).cpu().numpy())]


class PointmapAdapter(TaskAdapter):
    task, dataset_cls, primary_metric, higher_is_better = (
        "pointmap",
        D.PointmapDataset,
        "l2_mean",
        False,
    )

    def metric(self, data, split):
        return PointmapMetric()

    def update_metric(self, metric, pred, batch):
        metric.update(
            resize_like(pred[0], batch["pointmap"].shape[-2:]), batch["pointmap"], batch["mask"]
        )

    def picture(self, batch, pred, i):
        from sapiens2.viz.dense import depth_to_rgb

        image = denormalize(batch["image"][i])
        mask = batch["mask"][i].cpu().numpy()
        gt = batch["pointmap"][i, 2].cpu().numpy()
        p = resize_like(pred[0][i : i + 1], image.shape[:2])[0, 2].float().cpu().numpy()
        return [image, depth_to_rgb(gt, mask), depth_to_rgb(p, mask)]


class AlbedoAdapter(TaskAdapter):
    task, dataset_cls, primary_metric, higher_is_better = "albedo", D.AlbedoDataset, "mae", False

    def metric(self, data, split):
        return AlbedoMetric(data_range=1.0)

    def update_metric(self, metric, pred, batch):
        metric.update(
            resize_like(pred, batch["albedo"].shape[-2:]).clamp(0, 1),
            batch["albedo"],
            batch["mask"],
        )

    def picture(self, batch, pred, i):
        from sapiens2.viz.dense import albedo_to_rgb

        image = denormalize(batch["image"][i])
        mask = batch["mask"][i].cpu().numpy()
        gt = batch["albedo"][i].permute(1, 2, 0).cpu().numpy()
        p = resize_like(pred[i : i + 1], image.shape[:2])[0].clamp(0, 1).permute(1, 2, 0).float()
        return [image, albedo_to_rgb(gt, mask), albedo_to_rgb(p.cpu().numpy())]


class PoseAdapter(TaskAdapter):
    task, dataset_cls, primary_metric = "pose", D.PoseDataset, "AP"

    def dataset(self, data, split: str, train: bool, input_size, seed: int, augment: bool = True):
        """UDP targets with the adapter's sigma, by default 6 at the official 1024-pixel-high input
        (256-high heatmaps) scaled with the heatmap size (1.5 for 256x192 inputs)."""
        hw = tuple(input_size)
        transforms = None if (augment or not train) else D.default_transforms(self.task, False, hw)
        return D.PoseDataset(
            data, split, train=train, input_hw=hw, seed=seed, transforms=transforms,
            sigma=self.sigma or 6.0 * hw[0] / 1024,
        )  # fmt: skip

    def __init__(self, flip_test: bool = True, sigma: float = 0.0) -> None:
        self.flip_test = flip_test
        self.sigma = sigma  # heatmap Gaussian sigma in heatmap pixels; 0 = the official, scaled

    def metric(self, data, split):
        gt = json.loads((Path(data) / split / "pose.json").read_text())
        return Keypoints308Metric(gt, pck=True)

    def predict(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """Heatmaps, averaged with the flipped input's when flip testing (as ``sapiens/pose/src/runners/pose_runner.py`` with ``val_cfg.flip_test``)."""
        from sapiens2.inference.heatmap import flip_back_heatmaps

        heat = model(image)
        if self.flip_test:
            flipped = flip_back_heatmaps(model(image.flip(-1)), keypoints308().flip_indices)
            heat = (heat + flipped) / 2
        return heat

    def update_metric(self, metric, pred, batch):
        from sapiens2.inference.heatmap import decode_udp
        from sapiens2.inference.topdown import keypoints_to_image

        h, w = batch["image"].shape[-2:]
        kp, scores = decode_udp(pred.float().cpu().numpy(), (w, h))
        kp = keypoints_to_image(
            kp, batch["center"].cpu().numpy(), batch["scale"].cpu().numpy(), (h, w)
        )
        metric.update(
            [
                {
                    "image_id": batch["image_id"][i],
                    "id": batch["ann_id"][i],
                    "keypoints": kp[i],
                    "keypoint_scores": scores[i],
                }
                for i in range(len(kp))
            ]
        )

    def picture(self, batch, pred, i):
        from sapiens2.inference.heatmap import decode_udp
        from sapiens2.viz.pose import draw_pose

        image = denormalize(batch["image"][i])
        h, w = image.shape[:2]
        vis = batch["keypoint_weights"][i].cpu().numpy()
        gt = draw_pose(
            image, batch["keypoints"][i].cpu().numpy(), vis.astype(np.float32), kpt_thr=0.5
        )
        kp, scores = decode_udp(pred[i : i + 1].float().cpu().numpy(), (w, h))
        return [image, gt, draw_pose(image, kp[0], scores[0], kpt_thr=0.3)]


def _fit(panel: np.ndarray, like: np.ndarray) -> np.ndarray:
    import cv2

    h, w = like.shape[:2]
    if panel.shape[:2] == (h, w):
        return panel
    return cv2.resize(panel, (w, h), interpolation=cv2.INTER_NEAREST)


def adapter_for(task: str, *, flip_test: bool = True, pose_sigma: float = 0.0) -> TaskAdapter:
    adapters = {
        "seg": SegAdapter,
        "normal": NormalAdapter,
        "pointmap": PointmapAdapter,
        "albedo": AlbedoAdapter,
    }
    if task == "pose":
        return PoseAdapter(flip_test, pose_sigma)
    if task not in adapters:
        raise ValueError(f"unknown task {task!r}")
    return adapters[task]()


class _Padded(Dataset):
    """One rank's share of an eval dataset, padded to ``length`` with items marked as pads (every
    rank must run the same number of forwards, e.g. under FSDP)."""

    def __init__(self, dataset: Dataset, indices: list[int], length: int) -> None:
        self.dataset, self.indices, self.length = dataset, indices, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        pad = i >= len(self.indices)
        j = self.indices[i % len(self.indices)] if self.indices else 0
        return {**self.dataset[j], "pad": pad}


def _select(batch: dict[str, Any], keep: list[int]) -> dict[str, Any]:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v[keep]
        elif isinstance(v, list):
            out[k] = [v[i] for i in keep]
        else:
            out[k] = v
    return out


def _as_float(pred):
    return tuple(p.float() for p in pred) if isinstance(pred, tuple) else pred.float()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: str,
    data,
    *,
    split: str = "val",
    input_size: tuple[int, int] = (1024, 768),
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    flip_test: bool = True,
    max_samples: int = 0,
    autocast=None,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Task metrics of ``model`` on a dataset split (``docs/formats.md``; folders or shards).

    Args:
        model: a task model (or a wrapper around one, e.g. FSDP/DDP) in any mode; it is put in
            eval mode for the run and its previous mode restored.
        task: ``"pose" | "seg" | "normal" | "pointmap" | "albedo"``.
        data: dataset root or shards.
        input_size: network input (H, W) of the eval pipeline.
        max_samples: evaluate only the first N samples (0 = all).
        autocast: a context manager for mixed precision (None = none).
        rank, world_size: shard the split across ranks; metrics are reduced over all ranks.

    Returns:
        The metric dict of the task (``mIoU``..., normal angle errors, pointmap distances, albedo
        errors, or the 308-keypoint AP table).
    """
    import contextlib

    adapter = adapter_for(task, flip_test=flip_test)
    ds = adapter.dataset(data, split, False, input_size, 0)
    n = len(ds) if not max_samples else min(len(ds), max_samples)
    mine = list(range(rank, n, world_size))
    loader = DataLoader(
        _Padded(ds, mine, -(-n // world_size)),
        batch_size=batch_size,
        collate_fn=D.collate,
        num_workers=num_workers,
    )
    metric = adapter.metric(data, split)
    was_training = model.training
    model.eval()
    device = torch.device(device)
    ctx = autocast if autocast is not None else contextlib.nullcontext()
    batches = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc=f"eval {task}", unit="batch")
    try:
        for batch in batches:
            batch = to_device(batch, device)
            with ctx:
                pred = adapter.predict(model, batch["image"])
            keep = [i for i, p in enumerate(batch["pad"]) if not p]
            if keep:
                pred = _as_float(pred)
                pred = tuple(p[keep] for p in pred) if isinstance(pred, tuple) else pred[keep]
                adapter.update_metric(metric, pred, _select(batch, keep))
    finally:
        model.train(was_training)
    metric.sync()
    return metric.compute()

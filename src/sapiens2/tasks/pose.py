"""308-keypoint top-down pose: the heatmap head with ``conv_pose``, person boxes and crops, UDP
decoding with the flip test, the predictions/COCO JSON files, keypoint AP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sapiens2.data import datasets as D
from sapiens2.data.metadata import keypoints308
from sapiens2.inference.outputs import PoseOutputs
from sapiens2.inference.results import PoseResult
from sapiens2.inference.runners import PoseRunner
from sapiens2.metrics.keypoints308 import Keypoints308Metric
from sapiens2.models.configs import ArchConfig
from sapiens2.models.heads import PoseHeadConfig, PoseHeatmapHead
from sapiens2.models.task import HeadSpec
from sapiens2.tasks.base import (
    RecipeDefaults,
    SizeHyper,
    TaskAdapter,
    TaskSpec,
    denormalize,
)
from sapiens2.train.losses.pose import PoseLoss, PoseLossWeights


def head_widths(arch: ArchConfig) -> PoseHeadConfig:
    """``sapiens/pose/src/models/heads/pose_heatmap_head.py`` with the released configs."""
    if arch.size == "tiny":
        return PoseHeadConfig((32, 16), (4, 4), (16, 16, 8))
    if arch.size == "1b":
        return PoseHeadConfig((1536, 1024), (4, 4), (768, 512, 256))
    return PoseHeadConfig()


class PoseAdapter(TaskAdapter):
    task, dataset_cls, primary_metric = "pose", D.PoseDataset, "AP"

    def dataset(self, data, split: str, train: bool, input_size, seed: int, augment: bool = True):
        """UDP targets with the adapter's sigma, by default 6 at the official 1024-pixel-high input
        (256-high heatmaps) scaled with the heatmap size (1.5 for 256x192 inputs)."""
        hw = tuple(input_size)
        transforms = (
            None if (augment or not train) else self.dataset_cls.default_pipeline(False, hw)
        )
        return D.PoseDataset(
            data, split, train=train, input_hw=hw, seed=seed, transforms=transforms,
            sigma=self.sigma or 6.0 * hw[0] / 1024,
        )  # fmt: skip

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


def recipe_loss(recipe) -> PoseLoss:
    """The official weighted MSE, or online hard keypoint mining with ``pose_ohkm_topk``."""
    if recipe.pose_ohkm_topk < 0:
        raise ValueError(f"pose_ohkm_topk must be >= 0, got {recipe.pose_ohkm_topk}")
    if recipe.pose_ohkm_topk:
        return PoseLoss(PoseLossWeights(ohkm_topk=recipe.pose_ohkm_topk))
    return PoseLoss()


SPEC = TaskSpec(
    name="pose",
    summary="308-keypoint pose estimation",
    head=HeadSpec(
        "conv_pose",
        PoseHeadConfig,
        PoseHeatmapHead,
        head_widths,
        grows_at_4k=False,
        pipeline_tag="keypoint-detection",
    ),
    runner=PoseRunner(),
    result=PoseResult,
    outputs=PoseOutputs,
    adapter=PoseAdapter,
    dataset=D.PoseDataset,
    loss_cls=PoseLoss,
    loss_weights=PoseLossWeights,
    make_loss=recipe_loss,
    export_outputs=("heatmaps",),
    recipe=RecipeDefaults(
        sizes={
            "0.4b": SizeHyper("fsdp2", "bf16", 10_000, 5e-4, 0.80, 2.0, 6),
            "0.8b": SizeHyper("fsdp2", "bf16", 10_000, 5e-4, 0.85, 4.0, 12),
            "1b": SizeHyper("fsdp2", "bf16", 20_000, 5e-4, 0.90, 4.0, 7),
            "5b": SizeHyper("fsdp2", "bf16", 20_000, 1e-4, 0.94, 4.0, 2),
        },
        tiny={
            # wider Gaussians than the scaled official 1.5: more positive pixels per keypoint, a
            # stronger signal for a 1 M-parameter model in a few hundred steps
            "pose_sigma": 3.0,
            # the official tiny pose head mixes its 308 heatmaps from 8 channels; at 32 a tiny
            # model can fit 32 training images to AP 0.45 (0.03 with 8) in the same 400 steps
            "head_width": 32,
            # the 32 hardest keypoints per sample: under the plain MSE a small model learns the
            # 200+ face and hand keypoints, which share their features, and leaves the 17 body
            # keypoints near zero for hundreds of steps
            "pose_ohkm_topk": 32,
        },
    ),
)

"""29-class body-part segmentation: the deconv head with ``conv_seg``, the stretched input, label
PNGs, mIoU."""

from __future__ import annotations

import torch

from sapiens2.data import datasets as D
from sapiens2.data.metadata import seg29
from sapiens2.inference.outputs import SegOutputs
from sapiens2.inference.results import SegResult
from sapiens2.inference.runners import SegRunner
from sapiens2.metrics.segmentation import SegmentationMetric
from sapiens2.models.configs import ArchConfig
from sapiens2.models.heads import SegHead, SegHeadConfig
from sapiens2.models.task import HeadSpec
from sapiens2.tasks.base import (
    RecipeDefaults,
    SizeHyper,
    TaskAdapter,
    TaskSpec,
    denormalize,
    fit_panel,
    resize_like,
)
from sapiens2.train.losses.seg import SegLoss, SegLossWeights


def head_widths(arch: ArchConfig) -> SegHeadConfig:
    """``sapiens/dense/src/models/heads/seg_head.py`` with the released configs (one width for
    every size); the tiny arch gets tiny widths."""
    if arch.size == "tiny":
        return SegHeadConfig((32, 16, 16, 8), (4, 4, 4, 4), (8, 8))
    return SegHeadConfig()


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
        return [image, fit_panel(seg_to_rgb(target), image), seg_to_rgb(labels)]


SPEC = TaskSpec(
    name="seg",
    summary="29-class body-part segmentation",
    head=HeadSpec(
        "conv_seg", SegHeadConfig, SegHead, head_widths, pipeline_tag="image-segmentation"
    ),
    runner=SegRunner(),
    result=SegResult,
    outputs=SegOutputs,
    adapter=SegAdapter,
    dataset=D.SegDataset,
    loss_cls=SegLoss,
    loss_weights=SegLossWeights,
    export_outputs=("logits",),
    recipe=RecipeDefaults(
        sizes={
            "0.4b": SizeHyper("ddp", "bf16", 20_000, 5e-4, 0.80, 2.0, 12),
            "0.8b": SizeHyper("ddp", "fp32", 30_000, 5e-4, 0.85, 4.0, 5),
            "1b": SizeHyper("fsdp2", "bf16", 20_000, 5e-4, 0.90, 4.0, 8),
            "5b": SizeHyper("fsdp2", "bf16", 50_000, 5e-4, 0.94, 4.0, 2),
        },
        # seg's fresh full-resolution head learns slowly: on simple scenes 300 steps reach
        # mIoU 9.2 at lr 1e-2, 8.2 at 2e-2 and 6.6 at 2e-3
        tiny={"lr": 1e-2},
    ),
)

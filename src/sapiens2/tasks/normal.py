"""Surface normals: the pixel-shuffle head with ``conv_normal`` (InstanceNorm), letterboxed
input, ``.npy`` and PNG normals, angular errors."""

from __future__ import annotations

import torch.nn.functional as F

from sapiens2.data import datasets as D
from sapiens2.inference import postprocess
from sapiens2.inference.outputs import NormalOutputs
from sapiens2.inference.results import NormalResult
from sapiens2.inference.runners import MapRunner
from sapiens2.metrics.normal import NormalMetric
from sapiens2.models.configs import ArchConfig
from sapiens2.models.heads import DenseHeadConfig, NormalHead
from sapiens2.models.task import HeadSpec
from sapiens2.tasks._dense import WIDE_UPSAMPLE, tiny_dense
from sapiens2.tasks.base import (
    RecipeDefaults,
    SizeHyper,
    TaskAdapter,
    TaskSpec,
    denormalize,
    resize_like,
)
from sapiens2.train.losses.normal import NormalLoss, NormalLossWeights


def head_widths(arch: ArchConfig) -> DenseHeadConfig:
    """``sapiens/dense/src/models/heads/normal_head.py`` with the released configs."""
    if arch.size == "tiny":
        return tiny_dense()
    if arch.size == "5b":
        return DenseHeadConfig(WIDE_UPSAMPLE, conv_channels=(128, 64, 32))
    return DenseHeadConfig()


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


SPEC = TaskSpec(
    name="normal",
    summary="surface normal estimation",
    head=HeadSpec("conv_normal", DenseHeadConfig, NormalHead, head_widths),
    runner=MapRunner(postprocess.normal_map_tensor, NormalResult),
    result=NormalResult,
    outputs=NormalOutputs,
    adapter=NormalAdapter,
    dataset=D.NormalDataset,
    loss_cls=NormalLoss,
    loss_weights=NormalLossWeights,
    export_outputs=("normals",),
    recipe=RecipeDefaults(
        sizes={
            "0.4b": SizeHyper("fsdp2", "bf16", 20_000, 5e-4, 0.80, 2.0, 20),
            "0.8b": SizeHyper("fsdp2", "bf16", 10_000, 5e-4, 0.85, 4.0, 12),
            "1b": SizeHyper("fsdp2", "bf16", 40_000, 5e-4, 0.90, 4.0, 7),
            "5b": SizeHyper("fsdp2", "bf16", 40_000, 1e-4, 0.94, 4.0, 3),
        }
    ),
)

"""Albedo: the pixel-shuffle head with ``conv_albedo`` (per-pixel RMSNorm), letterboxed input,
RGB PNGs, albedo errors."""

from __future__ import annotations

from sapiens2.data import datasets as D
from sapiens2.inference import postprocess
from sapiens2.inference.outputs import AlbedoOutputs
from sapiens2.inference.results import AlbedoResult
from sapiens2.inference.runners import MapRunner
from sapiens2.metrics.albedo import AlbedoMetric
from sapiens2.models.configs import ArchConfig
from sapiens2.models.heads import AlbedoHead, DenseHeadConfig
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
from sapiens2.train.losses.albedo import AlbedoLoss, AlbedoLossWeights


def head_widths(arch: ArchConfig) -> DenseHeadConfig:
    """``sapiens/dense/src/models/heads/albedo_head.py`` with the released configs."""
    if arch.size == "tiny":
        return tiny_dense()
    return DenseHeadConfig(WIDE_UPSAMPLE) if arch.size == "5b" else DenseHeadConfig()


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


SPEC = TaskSpec(
    name="albedo",
    summary="albedo (diffuse colour) estimation",
    head=HeadSpec("conv_albedo", DenseHeadConfig, AlbedoHead, head_widths),
    runner=MapRunner(postprocess.albedo_map_tensor, AlbedoResult),
    result=AlbedoResult,
    outputs=AlbedoOutputs,
    adapter=AlbedoAdapter,
    dataset=D.AlbedoDataset,
    loss_cls=AlbedoLoss,
    loss_weights=AlbedoLossWeights,
    export_outputs=("albedo",),
    recipe=RecipeDefaults(
        sizes={
            "0.4b": SizeHyper("fsdp2", "bf16", 20_000, 5e-4, 0.80, 2.0, 20),
            "0.8b": SizeHyper("fsdp2", "bf16", 20_000, 5e-4, 0.85, 4.0, 12),
            "1b": SizeHyper("fsdp2", "bf16", 40_000, 5e-4, 0.90, 4.0, 7),
            "5b": SizeHyper("fsdp2", "bf16", 40_000, 5e-4, 0.94, 4.0, 3),
        }
    ),
)

"""Metric pointmaps: the pixel-shuffle head with ``conv_pointmap`` and a scale branch (whose MLP
fixes the input size), letterboxed input, depth ``.npy``, PLY point clouds, point distances."""

from __future__ import annotations

from sapiens2.data import datasets as D
from sapiens2.inference.outputs import PointmapOutputs
from sapiens2.inference.results import PointmapResult
from sapiens2.inference.runners import PointmapRunner
from sapiens2.metrics.pointmap import PointmapMetric
from sapiens2.models.configs import ArchConfig
from sapiens2.models.heads import PointmapHead, PointmapHeadConfig
from sapiens2.models.task import HeadSpec
from sapiens2.tasks._dense import TINY_DENSE
from sapiens2.tasks.base import (
    RecipeDefaults,
    SizeHyper,
    TaskAdapter,
    TaskSpec,
    denormalize,
    resize_like,
)
from sapiens2.train.losses.pointmap import PointmapLoss, PointmapLossWeights


def head_widths(arch: ArchConfig) -> PointmapHeadConfig:
    """``sapiens/dense/src/models/heads/pointmap_head.py`` with the released configs; the token
    grid of the scale MLP is the arch's native input over its stride."""
    if arch.size == "tiny":
        # 512x384 inputs: a 32x24 token grid, or 8x6 on the 4K variant (two stride-2 convs)
        return PointmapHeadConfig(
            **TINY_DENSE,
            scale_conv_channels=(32, 16) if arch.use_tokenizer else (32, 16, 8),
            scale_hidden=(16, 8),
            token_grid=(8, 6) if arch.use_tokenizer else (32, 24),
        )
    grid = (arch.img_size[0] // arch.stride, arch.img_size[1] // arch.stride)
    if arch.size == "5b":
        return PointmapHeadConfig(
            upsample_channels=(1536, 768, 768, 768), conv_channels=(128, 64, 32), token_grid=grid
        )
    return PointmapHeadConfig(token_grid=grid)


class PointmapAdapter(TaskAdapter):
    task, dataset_cls, primary_metric, higher_is_better = (
        "pointmap",
        D.PointmapDataset,
        "l2_mean",
        False,
    )

    def metric(self, data, split):
        return PointmapMetric(normal_full_window=self.pointmap_normal_full_window)

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


def recipe_loss(recipe) -> PointmapLoss:
    """The official terms, with the deviations the recipe switches on (docs/training.md)."""
    return PointmapLoss(
        PointmapLossWeights(
            multiscale_zero_outside=recipe.pointmap_multiscale_zero_outside,
            normal_drop_boundary=recipe.pointmap_normal_drop_boundary,
        )
    )


SPEC = TaskSpec(
    name="pointmap",
    summary="pointmap (per-pixel 3-D point) estimation",
    head=HeadSpec("conv_pointmap", PointmapHeadConfig, PointmapHead, head_widths),
    runner=PointmapRunner(),
    result=PointmapResult,
    outputs=PointmapOutputs,
    adapter=PointmapAdapter,
    dataset=D.PointmapDataset,
    loss_cls=PointmapLoss,
    loss_weights=PointmapLossWeights,
    make_loss=recipe_loss,
    export_outputs=("points", "scale"),
    recipe=RecipeDefaults(
        sizes={
            "0.4b": SizeHyper("fsdp2", "fp32", 20_000, 5e-4, 0.80, 2.0, 8),
            "0.8b": SizeHyper("fsdp2", "fp32", 20_000, 5e-4, 0.85, 2.0, 6),
            "1b": SizeHyper("fsdp2", "fp32", 40_000, 5e-4, 0.90, 4.0, 3),
            "5b": SizeHyper("fsdp2", "fp32", 40_000, 1e-4, 0.94, 4.0, 1),
        },
        tiny={"input_size": (512, 384)},
    ),
)

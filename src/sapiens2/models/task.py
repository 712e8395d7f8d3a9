"""Task models: a Sapiens2 backbone plus a decode head, key-compatible with the official files."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from torch import nn

from sapiens2.models.backbone import Sapiens2
from sapiens2.models.configs import ArchConfig
from sapiens2.models.heads import (
    AlbedoHead,
    DenseHeadConfig,
    NormalHead,
    PointmapHead,
    PointmapHeadConfig,
    PoseHeadConfig,
    PoseHeatmapHead,
    SegHead,
    SegHeadConfig,
)

Task = Literal["pose", "seg", "normal", "pointmap", "albedo"]
TASKS: tuple[Task, ...] = ("pose", "seg", "normal", "pointmap", "albedo")
HeadConfig = PoseHeadConfig | SegHeadConfig | DenseHeadConfig | PointmapHeadConfig


def a_task(task: str) -> str:
    """``task`` with its indefinite article, for messages: ``"a seg"``, ``"an albedo"``."""
    return f"{'an' if task[:1].lower() in 'aeiou' else 'a'} {task}"


# Name of each head's final 1x1 convolution in the official checkpoints (identifies the task).
PREDICTOR_KEYS: dict[Task, str] = {
    "pose": "conv_pose",
    "seg": "conv_seg",
    "normal": "conv_normal",
    "pointmap": "conv_pointmap",
    "albedo": "conv_albedo",
}


def check_task(task: str) -> Task:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return task  # type: ignore[return-value]


def default_head_config(task: str, arch: ArchConfig) -> HeadConfig:
    """The official head widths for ``arch`` (``sapiens/pose/src/models/heads/pose_heatmap_head.py``
    and ``sapiens/dense/src/models/heads/*_head.py`` with the released configs); the tiny arch gets tiny widths.

    On a 4K backbone (64x48 tokens for a 4096x3072 input) the dense heads get one more x2 stage,
    so they predict at 2048x1536 (the paper's 2K output); pose keeps its heatmap head.
    """
    task = check_task(task)
    cfg = _base_head_config(task, arch)
    if not arch.use_tokenizer or task == "pose":
        return cfg
    if isinstance(cfg, SegHeadConfig):
        c = cfg.deconv_channels[-1]
        return replace(
            cfg, deconv_channels=(*cfg.deconv_channels, c), deconv_kernels=(*cfg.deconv_kernels, 4)
        )
    c = max(cfg.upsample_channels[-1] // 2, cfg.conv_channels[0] if cfg.conv_channels else 8)
    return replace(cfg, upsample_channels=(*cfg.upsample_channels, c))


def widen_head(cfg: HeadConfig, width: int) -> HeadConfig:
    """``cfg`` with ``width`` channels in every upsampling and convolution stage of the head's
    main branch (the same stages, kernels and outputs; a pointmap's scale branch is unchanged).

    The released heads are wide; the tiny arch's official head narrows to 8 channels before its
    last layer, which caps what a small model can learn: 308 heatmaps or 29 class scores as
    mixtures of 8 feature maps. Fine-tuning recipes use this to give small models a wider head.
    """
    if width < 1:
        raise ValueError(f"head width must be >= 1, got {width}")
    if isinstance(cfg, (PoseHeadConfig, SegHeadConfig)):
        return replace(
            cfg,
            deconv_channels=(width,) * len(cfg.deconv_channels),
            conv_channels=(width,) * len(cfg.conv_channels),
        )
    return replace(
        cfg,
        upsample_channels=(width,) * len(cfg.upsample_channels),
        conv_channels=(width,) * len(cfg.conv_channels),
    )


def _base_head_config(task: Task, arch: ArchConfig) -> HeadConfig:
    size = arch.name.removeprefix("sapiens2_").removesuffix("_4k")
    if size == "tiny":
        dense = {"upsample_channels": (32, 16, 16, 8), "conv_channels": (8, 8, 4)}
        return {
            "pose": PoseHeadConfig((32, 16), (4, 4), (16, 16, 8)),
            "seg": SegHeadConfig((32, 16, 16, 8), (4, 4, 4, 4), (8, 8)),
            "normal": DenseHeadConfig(**dense),
            "albedo": DenseHeadConfig(**dense),
            # 512x384 inputs: a 32x24 token grid, or 8x6 on the 4K variant (two stride-2 convs)
            "pointmap": PointmapHeadConfig(
                **dense,
                scale_conv_channels=(32, 16) if arch.use_tokenizer else (32, 16, 8),
                scale_hidden=(16, 8),
                token_grid=(8, 6) if arch.use_tokenizer else (32, 24),
            ),
        }[task]
    big = size == "5b"
    if task == "pose":
        if size == "1b":
            return PoseHeadConfig((1536, 1024), (4, 4), (768, 512, 256))
        return PoseHeadConfig()
    if task == "seg":
        return SegHeadConfig()
    if task == "normal":
        if big:
            return DenseHeadConfig((1536, 768, 512, 256), conv_channels=(128, 64, 32))
        return DenseHeadConfig()
    if task == "albedo":
        return DenseHeadConfig((1536, 768, 512, 256)) if big else DenseHeadConfig()
    grid = (arch.img_size[0] // arch.stride, arch.img_size[1] // arch.stride)
    if big:
        return PointmapHeadConfig(
            upsample_channels=(1536, 768, 768, 768), conv_channels=(128, 64, 32), token_grid=grid
        )
    return PointmapHeadConfig(token_grid=grid)


def build_head(
    task: str, in_channels: int, cfg: HeadConfig, *, device=None, dtype=None
) -> nn.Module:
    task = check_task(task)
    dd = {"device": device, "dtype": dtype}
    expected = {
        "pose": PoseHeadConfig,
        "seg": SegHeadConfig,
        "normal": DenseHeadConfig,
        "albedo": DenseHeadConfig,
        "pointmap": PointmapHeadConfig,
    }[task]
    if not isinstance(cfg, expected):
        raise TypeError(
            f"{a_task(task)} head needs a {expected.__name__}, got {type(cfg).__name__}"
        )
    if task == "pose":
        return PoseHeatmapHead(in_channels, cfg, **dd)
    if task == "seg":
        return SegHead(in_channels, cfg, **dd)
    if task == "normal":
        return NormalHead(in_channels, cfg, **dd)
    if task == "albedo":
        return AlbedoHead(in_channels, cfg, **dd)
    return PointmapHead(in_channels, cfg, **dd)


class TaskModel(nn.Module):
    """``decode_head(backbone(x))`` for one task.

    ``forward(x)`` on normalised images ``(B, 3, H, W)`` returns the official raw outputs: seg
    logits ``(B, C, H, W)``, normals ``(B, 3, H, W)`` (not unit), albedo ``(B, 3, H, W)``,
    pointmap ``(canonical (B, 3, H, W), scale (B, 1))``, pose heatmaps ``(B, K, H/4, W/4)``.
    """

    def __init__(self, backbone: Sapiens2, decode_head: nn.Module, task: str) -> None:
        super().__init__()
        self.task: Task = check_task(task)
        self.backbone = backbone
        self.decode_head = decode_head

    @property
    def arch(self) -> ArchConfig:
        return self.backbone.cfg

    @property
    def head_config(self) -> HeadConfig:
        return self.decode_head.cfg

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The (H, W) input this model requires, or None when any multiple of the stride works."""
        if self.task == "pointmap":
            gh, gw = self.decode_head.cfg.token_grid
            return gh * self.arch.stride, gw * self.arch.stride
        return None

    def forward(self, x: torch.Tensor):
        size = self.input_size
        if size is not None and x.ndim == 4 and tuple(x.shape[-2:]) != size:
            raise ValueError(
                f"this {self.task} model needs {size[0]}x{size[1]} inputs, got "
                f"{x.shape[-2]}x{x.shape[-1]}"
            )
        return self.decode_head(self.backbone(x))

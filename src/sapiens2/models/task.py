"""Task models: a Sapiens2 backbone plus a decode head, key-compatible with the official files.

Which heads exist is not written here: each task module (``sapiens2/tasks/<task>.py``) declares a
:class:`HeadSpec` (config class, module class, checkpoint predictor key, official widths per
size) and registers it with :func:`register_head` when ``sapiens2.tasks`` is imported (which
``import sapiens2`` does). This layer only looks heads up by task name; it never imports the task
modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from sapiens2.models.backbone import Sapiens2
from sapiens2.models.configs import ArchConfig
from sapiens2.models.heads import (
    DenseHeadConfig,
    PointmapHeadConfig,
    PoseHeadConfig,
    SegHeadConfig,
)

Task = str  # a registered task name (``sapiens2.tasks.task_names()``)
HeadConfig = PoseHeadConfig | SegHeadConfig | DenseHeadConfig | PointmapHeadConfig


@dataclass(frozen=True)
class HeadSpec:
    """What the model layer needs to know about one task's head.

    Attributes:
        predictor_key: the name of the head's final 1x1 convolution in the official checkpoints
            (``decode_head.<key>.weight``); it identifies the task of a checkpoint.
        config_cls: the head's config dataclass.
        module_cls: the head module, built as ``module_cls(in_channels, cfg, device=, dtype=)``.
        widths: the official head config for an arch (before the 4K growth below).
        grows_at_4k: on a 4K backbone the head gets one more x2 stage (the dense heads, which
            then predict at 2K); pose keeps its heatmap head.
        description: what a model with this head does, for model cards (the task's summary).
        pipeline_tag: the Hugging Face Hub pipeline tag of such a model, if one fits.
    """

    predictor_key: str
    config_cls: type
    module_cls: type[nn.Module]
    widths: Callable[[ArchConfig], HeadConfig]
    grows_at_4k: bool = True
    description: str = ""
    pipeline_tag: str | None = None


_HEADS: dict[str, HeadSpec] = {}


def register_head(task: str, spec: HeadSpec) -> None:
    """Make ``task``'s head known to :func:`build_head` and checkpoint detection (called by the
    task modules; registering a name twice with another spec is an error)."""
    old = _HEADS.get(task)
    if old is not None and old != spec:
        raise ValueError(f"a head is already registered for task {task!r}")
    if any(s.predictor_key == spec.predictor_key for t, s in _HEADS.items() if t != task):
        raise ValueError(f"predictor key {spec.predictor_key!r} is already used by another task")
    _HEADS[task] = spec


def head_tasks() -> tuple[str, ...]:
    """The task names with a registered head, in registration order."""
    return tuple(_HEADS)


def head_spec(task: str) -> HeadSpec:
    return _HEADS[check_task(task)]


def a_task(task: str) -> str:
    """``task`` with its indefinite article, for messages: ``"a seg"``, ``"an albedo"``."""
    return f"{'an' if task[:1].lower() in 'aeiou' else 'a'} {task}"


def check_task(task: str) -> Task:
    if task not in _HEADS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(_HEADS)}")
    return task


def __getattr__(name: str):
    # TASKS and PREDICTOR_KEYS are views of the registered heads (kept for existing imports)
    if name == "TASKS":
        return head_tasks()
    if name == "PREDICTOR_KEYS":
        return {t: s.predictor_key for t, s in _HEADS.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_head_config(task: str, arch: ArchConfig) -> HeadConfig:
    """The official head widths of ``task`` for ``arch`` (the task module's table; the tiny arch
    gets tiny widths).

    On a 4K backbone (64x48 tokens for a 4096x3072 input) the dense heads get one more x2 stage,
    so they predict at 2048x1536 (the paper's 2K output); pose keeps its heatmap head.
    """
    spec = head_spec(task)
    cfg = spec.widths(arch)
    if not arch.use_tokenizer or not spec.grows_at_4k:
        return cfg
    if isinstance(cfg, SegHeadConfig | PoseHeadConfig):
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


def build_head(
    task: str, in_channels: int, cfg: HeadConfig, *, device=None, dtype=None
) -> nn.Module:
    spec = head_spec(task)
    if not isinstance(cfg, spec.config_cls):
        raise TypeError(
            f"{a_task(task)} head needs a {spec.config_cls.__name__}, got {type(cfg).__name__}"
        )
    return spec.module_cls(in_channels, cfg, device=device, dtype=dtype)


class TaskModel(nn.Module):
    """``decode_head(backbone(x))`` for one task.

    ``forward(x)`` on normalised images ``(B, 3, H, W)`` returns the official raw outputs: seg
    logits ``(B, C, H, W)``, normals ``(B, 3, H, W)`` (not unit), albedo ``(B, 3, H, W)``,
    pointmap ``(canonical (B, 3, H, W), scale (B, 1))``, pose heatmaps ``(B, K, H/4, W/4)``,
    matting ``(B, 4, H, W)`` in [0, 1] (pre-multiplied foreground RGB, then alpha).
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
        """The (H, W) input this model requires (a head with a fixed token grid, the pointmap's
        scale MLP), or None when any multiple of the stride works."""
        grid = getattr(self.decode_head.cfg, "token_grid", None)
        if grid is not None:
            return grid[0] * self.arch.stride, grid[1] * self.arch.stride
        return None

    def forward(self, x: torch.Tensor):
        size = self.input_size
        if size is not None and x.ndim == 4 and tuple(x.shape[-2:]) != size:
            raise ValueError(
                f"this {self.task} model needs {size[0]}x{size[1]} inputs, got "
                f"{x.shape[-2]}x{x.shape[-1]}"
            )
        return self.decode_head(self.backbone(x))

"""Fine-tuning recipes: typed dataclasses named ``<task>-<size>`` that derive from one base.

Each task module declares its part (:class:`sapiens2.tasks.RecipeDefaults`): the hyper-parameters
of the official task configs (``sapiens/pose/configs/keypoints308/...``,
``sapiens/dense/configs/<task>/...``, batch sizes from the
``sapiens/{pose,dense}/scripts/<task>/train/sapiens2_<size>/node.sh`` launchers) per size, and what
its ``tiny`` recipe changes; the ``tiny`` size is our CPU-sized recipe for tests, demos and quick
experiments.
``Recipe.with_overrides({"max_steps": "100"})`` applies ``--set key=value`` strings, rejecting
unknown keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sapiens2.overrides import apply_overrides, require, require_finite
from sapiens2.tasks import get_task, task_names

SIZES = ("tiny", "0.1b", "0.4b", "0.8b", "1b", "1b-4k", "5b")


@dataclass(frozen=True)
class Recipe:
    name: str
    task: str
    arch: str
    # model input (H, W) and, for 4K recipes, the dense-head output stride is set by the head
    input_size: tuple[int, int] = (1024, 768)
    # optimisation (AdamW with layer-wise lr decay; warm-up then polynomial decay)
    lr: float = 5e-4
    layer_decay: float = 0.9
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    # AdamW's epsilon. The official 1e-8 is large next to the per-weight gradients of a small
    # model's heatmap loss (~1e-6 for the tiny pose model), where it damps the updates.
    adam_eps: float = 1e-8
    clip_grad: float = 4.0
    max_steps: int = 20_000
    warmup_steps: int = 500
    warmup_start_factor: float = 1e-3
    batch_size: int = 8  # per process, per micro-step
    grad_accum: int = 1  # micro-steps per optimiser step
    # engine
    strategy: str = "single"  # single | ddp | fsdp2 (the official configs use fsdp2 or ddp)
    precision: str = "bf16"  # bf16 (autocast / FSDP2 mixed precision) | fp32
    activation_checkpointing: bool = True
    compile: bool = False
    num_workers: int = 2
    seed: int = 0
    # bookkeeping
    log_every: int = 10
    val_every: int = 1000
    save_every: int = 1000  # 0: only at the end
    keep_checkpoints: int = 2  # the newest N checkpoints are kept (0: all)
    vis_every: int = 100
    val_max_batches: int = 0  # 0 = the whole validation split
    pose_flip_test: bool = True
    # pose heatmap sigma in heatmap pixels; 0 = the official 6 at 256x192 heatmaps, scaled with
    # the heatmap size (1.5 at 64x48)
    pose_sigma: float = 0.0
    # pose loss: 0 = the official weighted MSE over all keypoints; N = online hard keypoint mining
    # (the official configs' commented alternative, with 128), the N hardest keypoints per sample
    pose_ohkm_topk: int = 0
    # pointmap loss deviations from the official terms (docs/training.md), off = official:
    # zero the prediction outside the mask before the multiscale L1 upsamples it (no border leak)
    pointmap_multiscale_zero_outside: bool = False
    # the normals-from-pointmap term skips mask-border pixels (their official "normals" are built
    # from points outside the mask)
    pointmap_normal_drop_boundary: bool = False
    # pointmap validation metric deviation (docs/metrics.md), off = official: score the pointmap
    # normals only where the whole 5x5 Sobel window is inside the mask
    pointmap_normal_full_window: bool = False
    # channels of every head stage (0: the arch's official head; see models.task.widen_head)
    head_width: int = 0
    augment: bool = True  # the official training augmentations (off: the eval pipeline)
    official: bool = True  # hyper-parameters from the official config of this task/size

    def __post_init__(self) -> None:
        require_finite(self)
        names = task_names()
        require(self.task in names, "task", f"one of {', '.join(names)}", self.task)
        h, w = self.input_size
        require(h > 0 and w > 0, "input_size", "two positive sizes (H, W)", self.input_size)
        for key in ("lr", "adam_eps", "clip_grad"):
            require(getattr(self, key) > 0, key, "> 0", getattr(self, key))
        require(0 < self.layer_decay <= 1, "layer_decay", "in (0, 1]", self.layer_decay)
        require(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)
        require(all(0 <= b < 1 for b in self.betas), "betas", "two values in [0, 1)", self.betas)
        require(
            0 < self.warmup_start_factor <= 1,
            "warmup_start_factor",
            "in (0, 1]",
            self.warmup_start_factor,
        )
        for key in ("max_steps", "batch_size", "grad_accum", "log_every"):
            require(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))
        for key in ("warmup_steps", "num_workers", "val_every", "save_every", "keep_checkpoints",
                    "vis_every", "val_max_batches", "pose_sigma", "pose_ohkm_topk", "head_width"):  # fmt: skip
            require(getattr(self, key) >= 0, key, ">= 0", getattr(self, key))
        require(
            self.strategy in ("single", "ddp", "fsdp2"),
            "strategy",
            "single, ddp or fsdp2",
            self.strategy,
        )
        require(self.precision in ("bf16", "fp32"), "precision", "bf16 or fp32", self.precision)

    def with_overrides(self, overrides: dict[str, Any] | list[str]) -> Recipe:
        """A copy with fields set from ``{"key": value}`` or ``["key=value"]`` (strings parsed
        against the field type); unknown keys and wrong types are errors."""
        return apply_overrides(self, overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def base_recipe(task: str, size: str) -> Recipe:
    """The recipe ``<task>-<size>``.

    0.4B–5B carry the official numbers; 0.1B (no official task configs) borrows the 0.4B ones;
    1B-4K borrows the 1B ones with 4096x3072 inputs (the paper fine-tunes the 4K backbone for
    segmentation and normals); ``tiny`` is a CPU recipe at 256x192 (pointmap 512x384) for a few
    hundred steps: no augmentation, and for pose a 32-channel head, sigma-3 heatmaps and OHKM.
    """
    if task not in task_names():
        raise KeyError(f"unknown task {task!r}; expected one of {', '.join(task_names())}")
    if size not in SIZES:
        raise KeyError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    defaults = get_task(task).recipe
    arch = "sapiens2_" + size.replace("-", "_")
    name = f"{task}-{size}"
    if size == "tiny":
        tiny: dict[str, Any] = {
            "input_size": (256, 192),
            "lr": 2e-3,
            "layer_decay": 0.95,
            "weight_decay": 0.05,
            "clip_grad": 2.0,
            "max_steps": 300,
            "warmup_steps": 20,
            "batch_size": 8,
            "precision": "fp32",
            "activation_checkpointing": False,
            "num_workers": 0,
            "log_every": 10,
            "val_every": 100,
            "save_every": 100,
            "vis_every": 100,
            "official": False,
            # a few hundred steps are too few to pay for the official augmentations (rotation,
            # half body, dropout): on simple synthetic scenes pose-tiny reaches body PCK@0.1 0.97
            # and body AP 0.34 without them, 0.50 and 0.0001 with them (seg mIoU 6.6 vs 6.3)
            "augment": False,
        }
        return Recipe(name=name, task=task, arch=arch, **{**tiny, **defaults.tiny})
    src = {"0.1b": "0.4b", "1b-4k": "1b"}.get(size, size)
    hp = defaults.sizes[src]
    return Recipe(
        name=name,
        task=task,
        arch=arch,
        input_size=(4096, 3072) if size == "1b-4k" else defaults.input_size,
        lr=hp.lr,
        layer_decay=hp.layer_decay,
        clip_grad=hp.clip_grad,
        max_steps=hp.max_steps,
        batch_size=hp.batch_size,
        strategy=hp.strategy,
        precision=hp.precision,
        official=defaults.official and src == size,
    )


RECIPES: dict[str, Recipe] = {
    f"{task}-{size}": base_recipe(task, size) for task in task_names() for size in SIZES
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(
            f"unknown recipe {name!r}; recipes are <task>-<size> with task in {task_names()} and "
            f"size in {SIZES} (see `sapiens2 recipes`)"
        ) from None

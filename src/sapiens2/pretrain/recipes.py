"""Pretraining recipes: typed, frozen dataclasses named by arch (``tiny``, ``0.4b``, ..., ``1b-4k``).

The paper's 1B hyper-parameters (A.1.1) are the defaults of every size (the paper gives no others);
``tiny`` and ``tiny-4k`` are our CPU-sized recipes for tests, demos and quick studies.
``recipe.with_overrides(["optim.lr=3e-4", "max_steps=100"])`` applies ``--set key=value`` strings
(dotted keys reach the nested sections); unknown keys are an error listing the known ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sapiens2.overrides import apply_overrides, dotted_keys, require, require_finite
from sapiens2.pretrain.distill import DistillConfig
from sapiens2.pretrain.mae import MAEConfig
from sapiens2.pretrain.masking import MaskConfig
from sapiens2.pretrain.objective import LossWeights
from sapiens2.pretrain.views import ViewsConfig

__all__ = ["RECIPES", "OptimConfig", "PretrainRecipe", "get_recipe"]


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``min_lr``; global-norm clipping.

    Parameters without weight decay: norms, biases and the special tokens (class, storage, mask,
    window class and local position embeddings).
    """

    lr: float = 1e-4
    min_lr: float = 1e-7
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    warmup_steps: int = 1000
    clip_grad: float = 5.0

    def __post_init__(self) -> None:
        require_finite(self, "optim.")
        require(self.lr > 0, "optim.lr", "> 0", self.lr)
        require(self.min_lr >= 0, "optim.min_lr", ">= 0", self.min_lr)
        require(self.weight_decay >= 0, "optim.weight_decay", ">= 0", self.weight_decay)
        require(
            all(0 <= b < 1 for b in self.betas), "optim.betas", "two values in [0, 1)", self.betas
        )
        require(self.warmup_steps >= 0, "optim.warmup_steps", ">= 0", self.warmup_steps)
        require(self.clip_grad > 0, "optim.clip_grad", "> 0", self.clip_grad)


@dataclass(frozen=True)
class PretrainRecipe:
    """Everything a pretraining run needs besides the data and the output folder.

    ``batch_size`` is per process; the global batch is ``batch_size * world_size``.
    """

    name: str
    arch: str
    views: ViewsConfig = field(default_factory=ViewsConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    mae: MAEConfig = field(default_factory=MAEConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    optim: OptimConfig = field(default_factory=OptimConfig)
    max_steps: int = 500_000
    max_minutes: float = 0.0  # stop (checkpoint, export) after this wall time; 0 = no limit
    batch_size: int = 8
    strategy: str = "fsdp2"  # single | ddp | fsdp2
    precision: str = "bf16"  # bf16 | fp32
    activation_checkpointing: bool = True
    device: str = "auto"  # auto | cpu | cuda
    num_workers: int = 4
    seed: int = 0
    split: str = "train"
    log_every: int = 10
    save_every: int = 1000  # 0: only at the end
    keep_checkpoints: int = 2  # the newest N checkpoints are kept (0: all)

    def __post_init__(self) -> None:
        require_finite(self)
        require(
            self.strategy in ("single", "ddp", "fsdp2"),
            "strategy",
            "single, ddp or fsdp2",
            self.strategy,
        )
        require(self.precision in ("bf16", "fp32"), "precision", "bf16 or fp32", self.precision)
        require(self.device in ("auto", "cpu", "cuda"), "device", "auto, cpu or cuda", self.device)
        for key in ("max_steps", "batch_size", "log_every"):
            require(getattr(self, key) >= 1, key, ">= 1", getattr(self, key))
        for key in ("max_minutes", "num_workers", "save_every", "keep_checkpoints"):
            require(getattr(self, key) >= 0, key, ">= 0", getattr(self, key))
        if self.distill.patch_loss and (self.loss.mae == 0 or self.loss.distill == 0):
            raise ValueError(
                "distill.patch_loss needs both branches on (loss.mae > 0: it reads the MAE "
                "decoder's features; loss.distill > 0: it is part of the contrastive term)"
            )
        if self.loss.koleo > 0 and self.batch_size < 2 and self.distill.koleo_scope == "local":
            raise ValueError("KoLeo needs a per-process batch of at least 2 with koleo_scope=local")

    def with_overrides(self, items: list[str] | dict[str, Any]) -> PretrainRecipe:
        """A copy with ``key=value`` overrides (``"optim.lr=3e-4"``, ``"views.global_size=256,192"``)."""
        return apply_overrides(self, items)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def field_keys(self) -> list[str]:
        """Every settable dotted key."""
        return dotted_keys(self, "")


# --------------------------------------------------------------------------------------------------
# The table

_SIZES = ("0.1b", "0.4b", "0.8b", "1b", "5b")


def _paper(size: str) -> PretrainRecipe:
    return PretrainRecipe(name=size, arch="sapiens2_" + size)


def _paper_4k() -> PretrainRecipe:
    # 4096x3072 inputs; masking on the 64x48 pooled grid; 2K reconstruction target.
    return PretrainRecipe(
        name="1b-4k",
        arch="sapiens2_1b_4k",
        views=ViewsConfig(global_size=(4096, 3072), local_size=(1536, 1152)),
        mae=MAEConfig(target_scale=0.5),
        batch_size=1,
    )


def _tiny_common(name: str, arch: str, views: ViewsConfig, mae: MAEConfig) -> PretrainRecipe:
    return PretrainRecipe(
        name=name,
        arch=arch,
        views=views,
        mae=mae,
        distill=DistillConfig(
            num_prototypes=512,
            head_hidden=256,
            head_bottleneck=64,
            teacher_temp_warmup_steps=100,
            ema_momentum=0.992,
        ),
        optim=OptimConfig(lr=1e-3, min_lr=1e-6, warmup_steps=50),
        max_steps=2000,
        batch_size=16,
        strategy="single",
        precision="fp32",
        activation_checkpointing=False,
        device="cpu",
        num_workers=0,
        log_every=10,
        save_every=500,
    )


def _tiny() -> PretrainRecipe:
    return _tiny_common(
        "tiny",
        "sapiens2_tiny",
        ViewsConfig(global_size=(128, 96), local_size=(64, 48)),
        MAEConfig(decoder_depth=2, decoder_dim=128, decoder_heads=4),
    )


def _tiny_4k() -> PretrainRecipe:
    return _tiny_common(
        "tiny-4k",
        "sapiens2_tiny_4k",
        ViewsConfig(global_size=(512, 384), local_size=(256, 192)),
        MAEConfig(decoder_depth=2, decoder_dim=128, decoder_heads=4, target_scale=0.5),
    )


RECIPES: dict[str, Any] = {
    "tiny": _tiny,
    "tiny-4k": _tiny_4k,
    **{s: (lambda s=s: _paper(s)) for s in _SIZES},
    "1b-4k": _paper_4k,
}


def get_recipe(name: str, overrides: list[str] | dict[str, Any] | None = None) -> PretrainRecipe:
    """The recipe ``name`` (see :data:`RECIPES`) with ``--set`` overrides applied."""
    if name not in RECIPES:
        raise KeyError(f"unknown pretraining recipe {name!r}; known: {', '.join(RECIPES)}")
    recipe = RECIPES[name]()
    return recipe.with_overrides(overrides) if overrides else recipe

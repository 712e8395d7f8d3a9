"""The arch table: one frozen dataclass per Sapiens2 backbone, every architectural choice a field.

Parameter counts in the comments are the official code's counts (``Sapiens2.arch_zoo`` in
``sapiens/backbones/sapiens2.py``); tests check them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

import torch

RopeDtype = Literal["bf16", "fp32"]


@dataclass(frozen=True)
class ArchConfig:
    """A Sapiens2 backbone architecture.

    Attention schedule: the first ``full_attn_early`` and the last ``full_attn_late`` blocks use
    full multi-head attention; the blocks in between use grouped-query attention with
    ``num_kv_heads`` key/value heads (``None`` = all blocks full).
    """

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    ffn_dim: int
    num_kv_heads: int | None = None
    full_attn_early: int = 8
    full_attn_late: int = 8
    patch_size: int = 16
    in_channels: int = 3
    img_size: tuple[int, int] = (
        1024,
        768,
    )  # (H, W) of pretraining; any multiple of the patch works
    qk_norm: bool = True
    qkv_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    norm_eps: float = 1e-6
    with_cls_token: bool = True
    num_storage_tokens: int = 8
    layer_scale_init: float | None = 1e-4
    rope_base: float = 100.0
    rope_normalize_coords: Literal["separate", "max", "min"] = "separate"
    rope_dtype: RopeDtype = "bf16"
    final_norm: bool = True
    # The 4K hierarchical variant: a windowed tokenizer before the main blocks.
    use_tokenizer: bool = False
    tokenizer_depth: int = 2
    tokenizer_window: int = 4
    tokenizer_chunk_size: int = 1024

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"{self.name}: embed_dim {self.embed_dim} not divisible by heads")
        if self.embed_dim % (4 * self.num_heads):
            raise ValueError(f"{self.name}: RoPE needs embed_dim divisible by 4*num_heads")
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            raise ValueError(f"{self.name}: num_heads not divisible by num_kv_heads")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.with_cls_token) + self.num_storage_tokens

    @property
    def size(self) -> str:
        """The size in the table (``"tiny"``, ``"0.4b"``, ..., ``"5b"``; the 4K variant has its
        backbone's size); other archs give their name. Task modules key head widths on it."""
        return self.name.removeprefix("sapiens2_").removesuffix("_4k")

    @property
    def stride(self) -> int:
        """Input pixels per output token along each side (16, or 64 for the 4K variant)."""
        return self.patch_size * (self.tokenizer_window if self.use_tokenizer else 1)

    @property
    def torch_rope_dtype(self) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp32": torch.float32}[self.rope_dtype]

    def kv_heads(self, layer: int) -> int:
        """Key/value heads of block ``layer``."""
        if self.num_kv_heads is None:
            return self.num_heads
        if layer < self.full_attn_early or layer >= self.depth - self.full_attn_late:
            return self.num_heads
        return self.num_kv_heads

    def with_overrides(self, **overrides) -> ArchConfig:
        """A copy with some fields changed; unknown field names are an error."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown arch field(s) {unknown}; known: {sorted(known)}")
        return replace(self, **overrides)


ARCHS: dict[str, ArchConfig] = {}


def _register(cfg: ArchConfig) -> ArchConfig:
    if cfg.name in ARCHS:
        raise ValueError(f"duplicate arch name {cfg.name!r}")
    ARCHS[cfg.name] = cfg
    return cfg


# A tiny arch for tests and demos (the official golden fixtures use it): 1,240,192 parameters.
SAPIENS2_TINY = _register(
    ArchConfig(
        "sapiens2_tiny",
        embed_dim=64,
        depth=18,
        num_heads=4,
        ffn_dim=256,
        num_kv_heads=2,
        img_size=(256, 192),
    )
)
SAPIENS2_0_1B = _register(  # 113,993,472 params, all blocks full attention
    ArchConfig("sapiens2_0.1b", embed_dim=768, depth=12, num_heads=12, ffn_dim=3072)
)
SAPIENS2_0_4B = _register(  # 395,450,368
    ArchConfig(
        "sapiens2_0.4b", embed_dim=1024, depth=24, num_heads=16, ffn_dim=4096, num_kv_heads=8
    )
)
SAPIENS2_0_8B = _register(  # 814,283,520
    ArchConfig(
        "sapiens2_0.8b",
        embed_dim=1280,
        depth=32,
        num_heads=16,
        ffn_dim=5120,
        num_kv_heads=8,
        tokenizer_depth=3,
    )
)
SAPIENS2_1B = _register(  # 1,455,474,176
    ArchConfig(
        "sapiens2_1b",
        embed_dim=1536,
        depth=40,
        num_heads=24,
        ffn_dim=6144,
        num_kv_heads=12,
        tokenizer_depth=4,
    )
)
SAPIENS2_1B_4K = (
    _register(  # 1,606,588,928: 1B + a 4-block windowed tokenizer, trained at 4096x3072
        replace(SAPIENS2_1B, name="sapiens2_1b_4k", use_tokenizer=True, img_size=(4096, 3072))
    )
)
SAPIENS2_5B = _register(  # 5,066,902,976
    ArchConfig(
        "sapiens2_5b",
        embed_dim=2432,
        depth=56,
        num_heads=32,
        ffn_dim=9728,
        num_kv_heads=16,
        tokenizer_depth=6,
    )
)


SAPIENS2_TINY_4K = (
    _register(  # the tiny arch with the 4K windowed tokenizer (fixture tiny_backbone4k)
        replace(SAPIENS2_TINY, name="sapiens2_tiny_4k", use_tokenizer=True, img_size=(1024, 768))
    )
)


def get_arch(name: str) -> ArchConfig:
    """Looks an arch up by name (case-insensitive); the error lists the known names."""
    cfg = ARCHS.get(name.lower())
    if cfg is None:
        raise KeyError(f"unknown Sapiens2 arch {name!r}; known: {', '.join(ARCHS)}")
    return cfg


# The bundled demo models' backbone (tools/train_demo_models.py): 6 full-attention blocks of
# width 192 at 256x192 inputs, 3,707,712 parameters.
SAPIENS2_DEMO = _register(
    replace(
        SAPIENS2_TINY,
        name="sapiens2_demo",
        embed_dim=192,
        depth=6,
        num_heads=3,
        ffn_dim=768,
        num_kv_heads=None,
    )
)

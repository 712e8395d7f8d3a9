"""An eager "official-style" Sapiens2 backbone: the reference's computation order, for timing.

Written for the benchmark from the facts of the specification (official-sapiens2.md §1.5-1.6), not
from the official code. It does what the reference forward does, step by step:

- separate ``wq``/``wk``/``wv`` projections, heads split with ``view`` + ``permute``;
- ``torch.nn.RMSNorm`` for every norm (q/k norms on the permuted per-head tensors);
- grouped-query layers *materialise* the repeated kv heads with ``repeat_interleave`` before RoPE;
- RoPE tables and the rotation in bfloat16 as separate ops (cast, split off the prefix tokens,
  ``x * cos + rotate_half(x) * sin``, concatenate, cast back), applied to q and to the repeated k;
- ``scaled_dot_product_attention``; LayerScale as a multiply; SwiGLU ``w3(silu(a) * b)``.

Parameter names equal the official keys, so ``load_state_dict`` takes a Sapiens2 state dict.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _Gamma(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class _Rope(nn.Module):
    def __init__(self, head_dim: int, base: float) -> None:
        super().__init__()
        j = torch.arange(head_dim // 4, dtype=torch.bfloat16)
        self.register_buffer("periods", base ** (2 * j / (head_dim // 2)))

    def forward(self, hp: int, wp: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Everything in bf16, also when a .to(float32) turned the buffer into fp32.
        periods = self.periods.to(torch.bfloat16)
        dd = {"dtype": torch.bfloat16, "device": periods.device}
        ch = torch.arange(0.5, hp, **dd) / hp
        cw = torch.arange(0.5, wp, **dd) / wp
        coords = torch.stack(torch.meshgrid(ch, cw, indexing="ij"), dim=-1).flatten(0, 1)
        coords = 2.0 * coords - 1.0
        angles = 2 * math.pi * coords[:, :, None] / periods[None, None, :]
        angles = angles.flatten(1, 2).tile(2)
        return torch.sin(angles), torch.cos(angles)


def official_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """The official RoPE recipe as separate ops: cast, split the prefix, rotate, concatenate, cast."""
    dtype = x.dtype
    x = x.to(sin.dtype)
    prefix = x.shape[-2] - sin.shape[-2]
    head, body = x[..., :prefix, :], x[..., prefix:, :]
    x1, x2 = body.chunk(2, dim=-1)
    body = body * cos + torch.cat([-x2, x1], dim=-1) * sin
    return torch.cat([head, body], dim=-2).to(dtype)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, dim // heads
        self.wq = nn.Linear(dim, dim)
        self.wk = nn.Linear(dim, kv_heads * self.hd)
        self.wv = nn.Linear(dim, kv_heads * self.hd)
        self.q_norm = nn.RMSNorm(self.hd, eps=1e-6)
        self.k_norm = nn.RMSNorm(self.hd, eps=1e-6)
        self.proj = nn.Linear(dim, dim)
        self.gamma = _Gamma(dim)

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q = self.wq(x).view(b, n, self.heads, self.hd).permute(0, 2, 1, 3)
        k = self.wk(x).view(b, n, self.kv_heads, self.hd).permute(0, 2, 1, 3)
        v = self.wv(x).view(b, n, self.kv_heads, self.hd).permute(0, 2, 1, 3)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.kv_heads != self.heads:
            rep = self.heads // self.kv_heads
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        q, k = official_rope(q, sin, cos), official_rope(k, sin, cos)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.gamma(self.proj(out.transpose(1, 2).reshape(b, n, d)))


class _SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int, hidden: int) -> None:
        super().__init__()
        self.ln1 = nn.RMSNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads, kv_heads)
        self.ln2 = nn.RMSNorm(dim, eps=1e-6)
        self.ffn = _SwiGLU(dim, hidden)

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), sin, cos)
        return x + self.ffn(self.ln2(x))


class OfficialStyleSapiens2(nn.Module):
    """The plain (non-4K) Sapiens2 backbone, reference computation order; returns the full
    normalised token sequence ``(B, 9 + Hp*Wp, D)`` like ``Sapiens2.forward_features``."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        hidden: int,
        kv_heads: list[int],
        patch: int = 16,
        storage: int = 8,
        rope_base: float = 100.0,
    ) -> None:
        super().__init__()
        self.patch = patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.storage_tokens = nn.Parameter(torch.zeros(1, storage, dim))
        self.patch_embed = nn.Module()
        self.patch_embed.projection = nn.Conv2d(3, dim, patch, stride=patch)
        self.rope_embed = _Rope(dim // heads, rope_base)
        self.blocks = nn.ModuleList(_Block(dim, heads, kv, hidden) for kv in kv_heads)
        self.ln1 = nn.RMSNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.projection(x)
        hp, wp = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        b = x.shape[0]
        x = torch.cat(
            [self.cls_token.expand(b, -1, -1), self.storage_tokens.expand(b, -1, -1), x], 1
        )
        sin, cos = self.rope_embed(hp, wp)
        for blk in self.blocks:
            x = blk(x, sin, cos)
        return self.ln1(x)

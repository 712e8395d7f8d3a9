"""Grouped-query self-attention on ``scaled_dot_product_attention``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sapiens2.nn.norm import RMSNorm
from sapiens2.nn.precision import linear
from sapiens2.nn.rope import apply_rope

# `enable_gqa` arrived in PyTorch 2.5; older versions repeat the kv heads explicitly.
_SDPA_HAS_GQA = torch.__version__ >= "2.5"


def sdpa_gqa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0):
    """Attention where query head ``h`` reads kv head ``h // (num_heads / num_kv_heads)``.

    Shapes: q ``(B, H, N, hd)``, k/v ``(B, Hkv, N, hd)``. The kv heads are not materialised
    repeatedly when the installed PyTorch supports ``enable_gqa``.
    """
    group = q.shape[1] // k.shape[1]
    if group == 1:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    if _SDPA_HAS_GQA:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, enable_gqa=True)
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


class GroupedQueryAttention(nn.Module):
    """Multi-head attention with ``num_kv_heads`` key/value heads (``== num_heads`` for MHSA).

    Parameter names follow the official checkpoints: ``wq``, ``wk``, ``wv``, ``proj``, and
    ``q_norm``/``k_norm`` (RMSNorm over the head dimension, shared by all heads) when
    ``qk_norm`` is set.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        *,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = True,
        norm_eps: float = 1e-6,
        attn_drop: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        num_kv_heads = num_kv_heads or num_heads
        if dim % num_heads or num_heads % num_kv_heads:
            raise ValueError(
                f"dim {dim} must split into {num_heads} heads, and heads into {num_kv_heads} kv heads"
            )
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop
        dd = {"device": device, "dtype": dtype}
        kv_dim = num_kv_heads * self.head_dim
        self.wq = nn.Linear(dim, dim, bias=qkv_bias, **dd)
        self.wk = nn.Linear(dim, kv_dim, bias=qkv_bias, **dd)
        self.wv = nn.Linear(dim, kv_dim, bias=qkv_bias, **dd)
        if qk_norm:
            self.q_norm = RMSNorm(self.head_dim, norm_eps, **dd)
            self.k_norm = RMSNorm(self.head_dim, norm_eps, **dd)
        else:
            self.q_norm = self.k_norm = None
        self.proj = nn.Linear(dim, dim, bias=proj_bias, **dd)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """x ``(B, N, D)``; rope ``(sin, cos)`` for the last ``HW`` tokens or None."""
        b, n, _ = x.shape
        q = linear(self.wq, x).view(b, n, self.num_heads, self.head_dim)
        k = linear(self.wk, x).view(b, n, self.num_kv_heads, self.head_dim)
        v = linear(self.wv, x).view(b, n, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:  # per head; cheaper before the transpose
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, N, hd)
        if v.device.type == "cpu":  # CPU attention reads head-major rows faster (q, k: see RoPE)
            v = v.contiguous()
        if rope is not None:
            q, k = apply_rope(q, k, *rope)
        out = sdpa_gqa(q, k, v, self.attn_drop if self.training else 0.0)  # (B, H, N, hd)
        return linear(self.proj, out.transpose(1, 2).reshape(b, n, -1))

"""The pre-norm transformer block of Sapiens2 (attention with LayerScale, SwiGLU FFN)."""

from __future__ import annotations

import torch
from torch import nn

from sapiens2.nn.attention import GroupedQueryAttention
from sapiens2.nn.ffn import SwiGLU
from sapiens2.nn.layer_scale import LayerScale
from sapiens2.nn.norm import RMSNorm
from sapiens2.nn.precision import compute_dtype


class TransformerBlock(nn.Module):
    """``x += gamma(attn(ln1(x)))``; ``x += ffn(ln2(x))``.

    As in the official model, LayerScale (``attn.gamma``) sits on the attention branch only; the
    FFN branch has none. ``layer_scale_init=None`` drops it (the 4K tokenizer blocks).

    The block runs in :func:`~sapiens2.nn.precision.compute_dtype` of its parameters (float32
    for bf16/fp16 weights on a CPU without bf16/fp16 units) and returns its input's dtype.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        *,
        num_kv_heads: int | None = None,
        qk_norm: bool = True,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        layer_scale_init: float | None = 1e-4,
        norm_eps: float = 1e-6,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.ln1 = RMSNorm(dim, norm_eps, **dd)
        self.attn = GroupedQueryAttention(
            dim,
            num_heads,
            num_kv_heads,
            qkv_bias=qkv_bias,
            proj_bias=proj_bias,
            qk_norm=qk_norm,
            norm_eps=norm_eps,
            **dd,
        )
        # Registered under attn.gamma to match the official key ``attn.gamma.weight``.
        if layer_scale_init is not None:
            self.attn.gamma = LayerScale(dim, layer_scale_init, **dd)
        else:
            self.attn.gamma = None
        self.ln2 = RMSNorm(dim, norm_eps, **dd)
        self.ffn = SwiGLU(dim, ffn_dim, bias=ffn_bias, **dd)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        out_dtype = x.dtype
        x = x.to(compute_dtype(self.ln1.weight.dtype, x.device))
        y = self.attn(self.ln1(x), rope)
        if self.attn.gamma is not None:
            y = self.attn.gamma(y)
        x = x + y
        return (x + self.ffn(self.ln2(x))).to(out_dtype)

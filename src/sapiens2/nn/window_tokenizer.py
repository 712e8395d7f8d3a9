"""The windowed tokenizer of the 4K model: local attention in non-overlapping windows.

Each ``window x window`` group of patch tokens is summarised into one token: a shared class token
``w_cls`` is prepended, a learned position embedding ``local_pos_embed`` (class + window positions)
is added, a few full-attention blocks run inside the window (no RoPE), and the class token's output
replaces the window. A 4096x3072 image thus becomes the same 64x48 token grid as a 1024x768 one.
Windows are processed in chunks of ``chunk_size`` so memory stays linear in the image area.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from sapiens2.nn.block import TransformerBlock


class WindowTokenizer(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        depth: int,
        *,
        window: int = 4,
        chunk_size: int = 1024,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.window = window
        self.chunk_size = chunk_size
        self.grad_checkpointing = False
        self.local_pos_embed = nn.Parameter(torch.empty(1, 1 + window * window, dim, **dd))
        self.w_cls = nn.Parameter(torch.empty(1, 1, dim, **dd))
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim,
                num_heads,
                ffn_dim,
                qk_norm=False,
                qkv_bias=qkv_bias,
                layer_scale_init=None,
                norm_eps=norm_eps,
                **dd,
            )
            for _ in range(depth)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.local_pos_embed, std=0.02)
        nn.init.trunc_normal_(self.w_cls, std=0.02)

    def _summarise(self, windows: torch.Tensor) -> torch.Tensor:
        # windows (n, w*w, D) -> (n, D)
        x = torch.cat([self.w_cls.expand(windows.shape[0], -1, -1), windows], dim=1)
        x = x + self.local_pos_embed
        for blk in self.blocks:
            x = blk(x)
        return x[:, 0]

    def forward(
        self, tokens: torch.Tensor, grid: tuple[int, int]
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """tokens ``(B, H*W, D)`` on grid ``(H, W)`` -> ``(B, H/w * W/w, D)`` on ``(H/w, W/w)``."""
        b, _, d = tokens.shape
        h, w = grid
        s = self.window
        if h % s or w % s:
            raise ValueError(f"token grid {h}x{w} is not divisible by the window size {s}")
        x = tokens.view(b, h // s, s, w // s, s, d).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b * (h // s) * (w // s), s * s, d)  # window-major, row-major inside
        outs = []
        for chunk in x.split(self.chunk_size):
            if self.grad_checkpointing and torch.is_grad_enabled():
                outs.append(checkpoint(self._summarise, chunk, use_reentrant=False))
            else:
                outs.append(self._summarise(chunk))
        out = torch.cat(outs).view(b, (h // s) * (w // s), d)
        return out, (h // s, w // s)

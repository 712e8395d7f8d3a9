"""Non-overlapping patch embedding (a strided convolution)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sapiens2.nn.precision import compute_dtype


class PatchEmbed(nn.Module):
    """``(B, C, H, W)`` -> tokens ``(B, H/p * W/p, D)`` in row-major order, plus the grid size."""

    def __init__(
        self, in_channels: int, dim: int, patch_size: int, *, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.projection = nn.Conv2d(
            in_channels, dim, patch_size, stride=patch_size, device=device, dtype=dtype
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        conv = self.projection
        cd = compute_dtype(conv.weight.dtype, x.device)
        bias = None if conv.bias is None else conv.bias.to(cd)
        x = F.conv2d(x.to(cd), conv.weight.to(cd), bias, stride=self.patch_size)
        x = x.to(conv.weight.dtype)  # (B, D, Hp, Wp)
        grid = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), grid  # (B, Hp*Wp, D)

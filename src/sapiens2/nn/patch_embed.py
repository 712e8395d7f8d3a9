"""Non-overlapping patch embedding (a strided convolution)."""

from __future__ import annotations

import torch
from torch import nn


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
        x = self.projection(x)  # (B, D, Hp, Wp)
        grid = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), grid  # (B, Hp*Wp, D)

"""LayerScale: a learned per-channel gain on a residual branch."""

from __future__ import annotations

import torch
from torch import nn


class LayerScale(nn.Module):
    """Multiplies its input by ``weight`` (shape ``(dim,)``), initialised to ``init_value``."""

    def __init__(self, dim: int, init_value: float = 1e-4, *, device=None, dtype=None) -> None:
        super().__init__()
        self.init_value = init_value
        self.weight = nn.Parameter(torch.empty(dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.weight, self.init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.to(x.dtype)

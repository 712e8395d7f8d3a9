"""SwiGLU feed-forward network with the official fused ``w12`` input projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sapiens2.nn.precision import linear


class SwiGLU(nn.Module):
    """``w3(silu(a) * b)`` with ``[a | b] = w12(x)``.

    The first half of ``w12``'s output is the gated (SiLU) branch and the second half the linear
    branch, as in the official checkpoints.
    """

    def __init__(
        self, dim: int, hidden_dim: int, *, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.w12 = nn.Linear(dim, 2 * hidden_dim, bias=bias, device=device, dtype=dtype)
        self.w3 = nn.Linear(hidden_dim, dim, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = linear(self.w12, x).chunk(2, dim=-1)
        h = F.silu(a)
        h = h * b if torch.is_grad_enabled() else h.mul_(b)  # in place saves a buffer
        return linear(self.w3, h)

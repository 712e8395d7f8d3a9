"""Small stand-in task models with known behaviour (test-only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


class PeakyPoseModel(nn.Module):
    """A pose model with smooth single-bump heatmaps that is *not* mirror-symmetric by itself.

    ``avgpool 4 -> random 3x3 conv (3 -> K) -> wide symmetric Gaussian blur -> exp(2 (z - max z) / std)``:
    the random conv kernels break the left/right symmetry, the blur makes every channel a smooth
    log-concave bump so DARK refinement is well conditioned.
    """

    task = "pose"
    input_size = None

    def __init__(self, num_keypoints: int = 308, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, num_keypoints, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
            self.conv.bias.zero_()
        self.register_buffer("blur", _gaussian_kernel(3.0, 9)[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv(F.avg_pool2d(x, 4))
        b, k, h, w = z.shape
        z = F.conv2d(
            z.reshape(b * k, 1, h, w), self.blur, padding=self.blur.shape[-1] // 2
        ).reshape(b, k, h, w)
        std = z.std(dim=(2, 3), keepdim=True) + 1e-6
        top = z.amax(dim=(2, 3), keepdim=True)
        return torch.exp(2 * (z - top) / std)  # peak value 1, like trained heatmaps


class ConstantDenseModel(nn.Module):
    """A dense model returning fixed maps: ``forward(x)`` repeats ``maps`` (C, H, W) over the batch;
    pointmap models also return ``scale`` (B, 1)."""

    def __init__(
        self, task: str, maps: torch.Tensor, scale: float | None = None, input_size=None
    ) -> None:
        super().__init__()
        self.task = task
        self.input_size = input_size
        self.register_buffer("maps", maps.float())
        self.scale = scale
        self.dummy = nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor):
        self.seen.append(x.detach().clone())
        out = self.maps[None].expand(x.shape[0], -1, -1, -1).clone()
        if self.task == "pointmap":
            return out, torch.full((x.shape[0], 1), float(self.scale))
        return out

"""Top-down pose heatmap head (308 keypoints by default)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sapiens2.models.heads.layers import conv_stages, deconv_stages


@dataclass(frozen=True)
class PoseHeadConfig:
    deconv_channels: tuple[int, ...] = (1024, 768)
    deconv_kernels: tuple[int, ...] = (4, 4)
    conv_channels: tuple[int, ...] = (512, 512, 256)
    conv_kernels: tuple[int, ...] = (1, 1, 1)
    num_keypoints: int = 308


def init_heatmap_layer(conv: nn.Conv2d) -> None:
    """Start a layer that outputs heatmaps near zero: weights normal with std 0.001, zero bias."""
    nn.init.normal_(conv.weight, std=0.001)
    nn.init.zeros_(conv.bias)


class PoseHeatmapHead(nn.Module):
    """Deconvolutions (x2 each), convolutions, then a 1x1 conv to one heatmap per keypoint.

    Keys: ``deconv_layers.{0,3,..}.weight``, ``conv_layers.{0,3,..}.{weight,bias}``, ``conv_pose``.
    Output: ``(B, K, Hp * 2**len(deconv), Wp * 2**len(deconv))`` (1/4 of the input for 2 deconvs).
    """

    def __init__(self, in_channels: int, cfg: PoseHeadConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.cfg = cfg
        self.deconv_layers = deconv_stages(
            in_channels, cfg.deconv_channels, cfg.deconv_kernels, **dd
        )
        c = cfg.deconv_channels[-1] if cfg.deconv_channels else in_channels
        self.conv_layers = conv_stages(c, cfg.conv_channels, cfg.conv_kernels, **dd)
        c = cfg.conv_channels[-1] if cfg.conv_channels else c
        self.conv_pose = nn.Conv2d(c, cfg.num_keypoints, 1, **dd)

    @torch.no_grad()
    def init_weights(self) -> None:
        """The heatmap layer starts near zero (normal, std 0.001; zero bias), as heatmap heads
        usually do: with PyTorch's default init the first few hundred steps of a small model only
        shrink its random ~0.4-sized heatmaps to the all-zero plateau."""
        init_heatmap_layer(self.conv_pose)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.conv_pose(self.conv_layers(self.deconv_layers(feats)))

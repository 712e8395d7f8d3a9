"""Body-part segmentation head (29 classes by default)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sapiens2.models.heads.layers import conv_stages, deconv_stages


@dataclass(frozen=True)
class SegHeadConfig:
    deconv_channels: tuple[int, ...] = (512, 256, 128, 64)
    deconv_kernels: tuple[int, ...] = (4, 4, 4, 4)
    conv_channels: tuple[int, ...] = (64, 64)
    conv_kernels: tuple[int, ...] = (1, 1)
    num_classes: int = 29


class SegHead(nn.Module):
    """Four x2 deconvolutions back to the input resolution, 1x1 convs, class logits.

    Keys: ``deconv_layers.{0,3,6,9}.weight``, ``conv_layers.{0,3}.{weight,bias}``, ``conv_seg``.
    """

    def __init__(self, in_channels: int, cfg: SegHeadConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.cfg = cfg
        self.deconv_layers = deconv_stages(
            in_channels, cfg.deconv_channels, cfg.deconv_kernels, **dd
        )
        c = cfg.deconv_channels[-1] if cfg.deconv_channels else in_channels
        self.conv_layers = conv_stages(c, cfg.conv_channels, cfg.conv_kernels, **dd)
        c = cfg.conv_channels[-1] if cfg.conv_channels else c
        self.conv_seg = nn.Conv2d(c, cfg.num_classes, 1, **dd)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.conv_layers(self.deconv_layers(feats)))

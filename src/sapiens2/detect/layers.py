"""Building blocks of RTMDet, with mmdet's state-dict child names.

mmcv's ``ConvModule`` (``mmcv/cnn/bricks/conv_module.py``) and mmdet's CSP blocks
(``mmdet/models/layers/csp_layer.py``, ``mmdet/models/backbones/csp_darknet.py`` for the SPP block).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvModule(nn.Module):
    """Conv2d (no bias, padding k//2) -> BatchNorm2d -> SiLU. Keys: ``conv.weight``, ``bn.*``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        groups: int = 1,
        eps: float = 1e-5,
        conv: nn.Conv2d | None = None,
    ) -> None:
        """Args:
        conv: an existing Conv2d to use (shared between levels in the head); built if None.
        """
        super().__init__()
        if conv is None:
            conv = nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            )
        self.conv = conv
        self.bn = nn.BatchNorm2d(out_channels, eps=eps)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparableConvModule(nn.Module):
    """Depthwise k x k ConvModule followed by a pointwise 1x1 ConvModule."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, eps: float):
        super().__init__()
        self.depthwise_conv = ConvModule(
            in_channels, in_channels, kernel_size, groups=in_channels, eps=eps
        )
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        return self.pointwise_conv(self.depthwise_conv(x))


class CSPNeXtBlock(nn.Module):
    """3x3 ConvModule then a 5x5 depthwise-separable conv, optionally plus the input."""

    def __init__(self, channels: int, *, add_identity: bool, eps: float) -> None:
        super().__init__()
        self.conv1 = ConvModule(channels, channels, 3, eps=eps)
        self.conv2 = DepthwiseSeparableConvModule(channels, channels, 5, eps=eps)
        self.add_identity = add_identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class ChannelAttention(nn.Module):
    """Global average pool -> 1x1 conv with bias -> hard-sigmoid -> scale the input channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        gate = F.hardsigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)))
        return x * gate


class CSPLayer(nn.Module):
    """CSPNeXt cross-stage-partial layer.

    ``final_conv(attention?(cat[blocks(main_conv(x)), short_conv(x)]))`` with both halves of width
    ``int(out_channels * expand_ratio)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_blocks: int,
        add_identity: bool,
        channel_attention: bool,
        expand_ratio: float = 0.5,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.main_conv = ConvModule(in_channels, mid, 1, eps=eps)
        self.short_conv = ConvModule(in_channels, mid, 1, eps=eps)
        self.final_conv = ConvModule(2 * mid, out_channels, 1, eps=eps)
        self.blocks = nn.Sequential(
            *(CSPNeXtBlock(mid, add_identity=add_identity, eps=eps) for _ in range(num_blocks))
        )
        self.attention = ChannelAttention(2 * mid) if channel_attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        y = torch.cat([self.blocks(self.main_conv(x)), self.short_conv(x)], dim=1)
        if self.attention is not None:
            y = self.attention(y)
        return self.final_conv(y)


class SPPBottleneck(nn.Module):
    """1x1 conv to C/2, concat with stride-1 max-pools of each kernel, 1x1 conv back to C_out."""

    def __init__(
        self, in_channels: int, out_channels: int, *, kernels: Sequence[int], eps: float
    ) -> None:
        super().__init__()
        mid = in_channels // 2
        self.kernels = tuple(kernels)
        self.conv1 = ConvModule(in_channels, mid, 1, eps=eps)
        self.conv2 = ConvModule(mid * (len(self.kernels) + 1), out_channels, 1, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        x = self.conv1(x)
        pooled = [F.max_pool2d(x, k, stride=1, padding=k // 2) for k in self.kernels]
        return self.conv2(torch.cat([x, *pooled], dim=1))

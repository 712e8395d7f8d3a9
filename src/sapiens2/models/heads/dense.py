"""Pixel-shuffle dense heads at input resolution: surface normals and albedo (3 channels) and
matting (pre-multiplied foreground RGB + alpha, 4 channels after a sigmoid)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sapiens2.models.heads.layers import conv_stages, make_norm


@dataclass(frozen=True)
class DenseHeadConfig:
    upsample_channels: tuple[int, ...] = (768, 512, 256, 128)
    upsample_kernel: int = 3
    conv_channels: tuple[int, ...] = (64, 32, 16)
    conv_kernels: tuple[int, ...] = (3, 3, 3)
    out_channels: int = 3


class DenseTrunk(nn.Module):
    """``input_conv`` (conv 3x3 -> norm -> SiLU), then per upsample block
    conv -> PixelShuffle(2) -> norm -> SiLU, then ``conv_layers``; returns the last features."""

    def __init__(
        self, in_channels: int, cfg: DenseHeadConfig, norm: str, *, device=None, dtype=None
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.input_conv = conv_stages(in_channels, (in_channels,), (3,), norm=norm, **dd)
        k = cfg.upsample_kernel
        blocks = []
        c = in_channels
        for out in cfg.upsample_channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(c, 4 * out, k, padding=(k - 1) // 2, **dd),
                    nn.PixelShuffle(2),
                    make_norm(norm, out, **dd),
                    nn.SiLU(),
                )
            )
            c = out
        self.upsample_blocks = nn.ModuleList(blocks)
        self.conv_layers = conv_stages(c, cfg.conv_channels, cfg.conv_kernels, norm=norm, **dd)
        self.out_features = cfg.conv_channels[-1] if cfg.conv_channels else c

    def trunk(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.input_conv(feats)
        for blk in self.upsample_blocks:
            x = blk(x)
        return self.conv_layers(x)


class NormalHead(DenseTrunk):
    """Surface normals ``(B, 3, H, W)`` (unnormalised vectors); InstanceNorm stages."""

    def __init__(self, in_channels: int, cfg: DenseHeadConfig, *, device=None, dtype=None) -> None:
        super().__init__(in_channels, cfg, "instance", device=device, dtype=dtype)
        self.cfg = cfg
        self.conv_normal = nn.Conv2d(
            self.out_features, cfg.out_channels, 1, device=device, dtype=dtype
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.conv_normal(self.trunk(feats))


class AlbedoHead(DenseTrunk):
    """Albedo RGB ``(B, 3, H, W)``; per-pixel RMSNorm stages."""

    def __init__(self, in_channels: int, cfg: DenseHeadConfig, *, device=None, dtype=None) -> None:
        super().__init__(in_channels, cfg, "rms", device=device, dtype=dtype)
        self.cfg = cfg
        self.conv_albedo = nn.Conv2d(
            self.out_features, cfg.out_channels, 1, device=device, dtype=dtype
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.conv_albedo(self.trunk(feats))


class MattingHead(DenseTrunk):
    """Matting ``(B, 4, H, W)`` in [0, 1]: channels 0..2 the pre-multiplied RGB foreground,
    channel 3 the alpha matte; the sigmoid of a 1x1 ``conv_matting``. InstanceNorm stages.

    The layout of the released ``facebook/sapiens2-matting-*`` checkpoints: the normal head's
    trunk (``decode_head.input_conv.0``, ``upsample_blocks.{j}.0``, ``conv_layers.{3j}``) with a
    4-channel predictor ``decode_head.conv_matting``.
    """

    def __init__(self, in_channels: int, cfg: DenseHeadConfig, *, device=None, dtype=None) -> None:
        if cfg.out_channels != 4:
            raise ValueError(
                f"a matting head predicts 4 channels (foreground RGB, alpha), got out_channels="
                f"{cfg.out_channels}"
            )
        super().__init__(in_channels, cfg, "instance", device=device, dtype=dtype)
        self.cfg = cfg
        self.conv_matting = nn.Conv2d(self.out_features, 4, 1, device=device, dtype=dtype)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Args:
            feats: backbone features ``(B, D, Hp, Wp)``.

        Returns:
            ``(B, 4, Hp * 2**n, Wp * 2**n)`` in [0, 1] (n upsampling blocks): foreground RGB
            (pre-multiplied by alpha) then alpha.
        """
        return torch.sigmoid(self.conv_matting(self.trunk(feats)))

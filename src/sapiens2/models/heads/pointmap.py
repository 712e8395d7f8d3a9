"""Pointmap head: a canonical camera-frame pointmap and the scale that makes it metric."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from sapiens2.models.heads.dense import DenseHeadConfig, DenseTrunk
from sapiens2.models.heads.layers import conv_stages


@dataclass(frozen=True)
class PointmapHeadConfig(DenseHeadConfig):
    upsample_channels: tuple[int, ...] = (1536, 768, 512, 256)
    scale_conv_channels: tuple[int, ...] = (1536, 512, 128)
    scale_hidden: tuple[int, ...] = (512, 128)
    # The token grid (Hp, Wp) the scale branch's flatten is sized for: (64, 48) = 1024x768 input.
    token_grid: tuple[int, int] = (64, 48)

    @property
    def scale_grid(self) -> tuple[int, int]:
        h, w = self.token_grid
        for _ in self.scale_conv_channels:  # 1x1 convs with stride 2
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        return h, w


class PointmapHead(DenseTrunk):
    """Returns ``(canonical_pointmap (B, 3, H, W), scale (B, 1))``.

    The canonical pointmap is the metric one times ``s = 768 / fx``; the scale branch predicts
    ``s`` from the raw backbone features (three stride-2 1x1 convs, flatten, MLP), so the input
    size is fixed by ``cfg.token_grid``. Metric points = canonical / scale.
    """

    def __init__(
        self, in_channels: int, cfg: PointmapHeadConfig, *, device=None, dtype=None
    ) -> None:
        super().__init__(in_channels, cfg, "instance", device=device, dtype=dtype)
        dd = {"device": device, "dtype": dtype}
        self.cfg = cfg
        self.conv_pointmap = nn.Conv2d(self.out_features, cfg.out_channels, 1, **dd)
        n = len(cfg.scale_conv_channels)
        self.scale_conv_layers = conv_stages(
            in_channels, cfg.scale_conv_channels, (1,) * n, stride=2, **dd
        )
        gh, gw = cfg.scale_grid
        sizes = [cfg.scale_conv_channels[-1] * gh * gw, *cfg.scale_hidden, 1]
        mlp: list[nn.Module] = [nn.Flatten()]
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            mlp.append(nn.Linear(a, b, **dd))
            if i < len(sizes) - 2:
                mlp.append(nn.SiLU())
        self.scale_final_layer = nn.Sequential(*mlp)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(feats.shape[-2:]) != self.cfg.token_grid:
            raise ValueError(
                f"the pointmap scale branch needs a {self.cfg.token_grid} token grid (input "
                f"{self.cfg.token_grid[0] * 16}x{self.cfg.token_grid[1] * 16}), got "
                f"{tuple(feats.shape[-2:])}"
            )
        points = self.conv_pointmap(self.trunk(feats))
        scale = self.scale_final_layer(self.scale_conv_layers(feats))
        return points, scale

"""RTMDet network: CSPNeXt backbone, CSPNeXt-PAFPN neck, shared-conv separate-BN head.

Module names follow mmdet's, so ``RTMDet.state_dict()`` has exactly the keys of an mmdet RTMDet
checkpoint (``mmdet/models/backbones/cspnext.py``, ``mmdet/models/necks/cspnext_pafpn.py``,
``mmdet/models/dense_heads/rtmdet_head.py`` in mmdet 3.3), including one copy of each shared head
conv per level.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sapiens2.detect.config import RTMDetConfig
from sapiens2.detect.layers import ConvModule, CSPLayer, SPPBottleneck


class CSPNeXt(nn.Module):
    """CSPNeXt P5 backbone; returns the outputs of stages 2, 3 and 4 (strides 8, 16, 32)."""

    def __init__(self, cfg: RTMDetConfig) -> None:
        super().__init__()
        eps = cfg.bn_eps
        stem_mid, stem_out = cfg.stem_channels
        self.stem = nn.Sequential(
            ConvModule(3, stem_mid, 3, stride=2, eps=eps),
            ConvModule(stem_mid, stem_mid, 3, eps=eps),
            ConvModule(stem_mid, stem_out, 3, eps=eps),
        )
        in_ch = stem_out
        for i, (out_ch, blocks) in enumerate(
            zip(cfg.stage_channels, cfg.stage_blocks, strict=True), start=1
        ):
            last = i == len(cfg.stage_channels)
            layers: list[nn.Module] = [ConvModule(in_ch, out_ch, 3, stride=2, eps=eps)]
            if last:
                layers.append(SPPBottleneck(out_ch, out_ch, kernels=cfg.spp_kernels, eps=eps))
            layers.append(
                CSPLayer(
                    out_ch,
                    out_ch,
                    num_blocks=blocks,
                    add_identity=not last,
                    channel_attention=cfg.channel_attention,
                    expand_ratio=cfg.expand_ratio,
                    eps=eps,
                )
            )
            self.add_module(f"stage{i}", nn.Sequential(*layers))
            in_ch = out_ch

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> C3 (B, c2, H/8, W/8), C4 (B, c3, H/16, W/16), C5 (B, c4, H/32, W/32)."""
        x = self.stage2(self.stage1(self.stem(x)))
        c3 = x
        c4 = self.stage3(c3)
        c5 = self.stage4(c4)
        return c3, c4, c5


class CSPNeXtPAFPN(nn.Module):
    """Top-down then bottom-up path aggregation over three levels (mmdet's ``CSPNeXtPAFPN``)."""

    def __init__(self, cfg: RTMDetConfig) -> None:
        super().__init__()
        eps = cfg.bn_eps
        c3, c4, c5 = cfg.backbone_out_channels

        def csp(cin: int, cout: int) -> CSPLayer:
            return CSPLayer(
                cin,
                cout,
                num_blocks=cfg.neck_blocks,
                add_identity=False,
                channel_attention=False,
                expand_ratio=cfg.expand_ratio,
                eps=eps,
            )

        self.reduce_layers = nn.ModuleList(
            [ConvModule(c5, c4, 1, eps=eps), ConvModule(c4, c3, 1, eps=eps)]
        )
        self.top_down_blocks = nn.ModuleList([csp(2 * c4, c4), csp(2 * c3, c3)])
        self.downsamples = nn.ModuleList(
            [ConvModule(c3, c3, 3, stride=2, eps=eps), ConvModule(c4, c4, 3, stride=2, eps=eps)]
        )
        self.bottom_up_blocks = nn.ModuleList([csp(2 * c3, c4), csp(2 * c4, c5)])
        self.out_convs = nn.ModuleList(
            [ConvModule(c, cfg.neck_channels, 3, eps=eps) for c in (c3, c4, c5)]
        )

    def forward(
        self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(C3, C4, C5) -> three maps of ``neck_channels`` at strides 8, 16, 32."""
        c3, c4, c5 = feats
        r0 = self.reduce_layers[0](c5)
        t0 = self.top_down_blocks[0](torch.cat([_up2(r0), c4], dim=1))
        r1 = self.reduce_layers[1](t0)
        t1 = self.top_down_blocks[1](torch.cat([_up2(r1), c3], dim=1))
        b0 = self.bottom_up_blocks[0](torch.cat([self.downsamples[0](t1), r1], dim=1))
        b1 = self.bottom_up_blocks[1](torch.cat([self.downsamples[1](b0), r0], dim=1))
        return self.out_convs[0](t1), self.out_convs[1](b0), self.out_convs[2](b1)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class RTMDetSepBNHead(nn.Module):
    """Per level: two branches of stacked 3x3 ConvModules whose Conv2d is shared by all levels while
    each level has its own BatchNorm, then per-level 1x1 predictors ``rtm_cls`` and ``rtm_reg``."""

    def __init__(self, cfg: RTMDetConfig) -> None:
        super().__init__()
        self.strides = cfg.strides
        self.exp_on_reg = cfg.exp_on_reg
        self.cls_convs = self._branch(cfg)
        self.reg_convs = self._branch(cfg)
        k = cfg.pred_kernel_size
        n = len(cfg.strides)
        self.rtm_cls = nn.ModuleList(
            nn.Conv2d(cfg.head_channels, cfg.num_classes, k, padding=k // 2) for _ in range(n)
        )
        self.rtm_reg = nn.ModuleList(
            nn.Conv2d(cfg.head_channels, 4, k, padding=k // 2) for _ in range(n)
        )

    @staticmethod
    def _branch(cfg: RTMDetConfig) -> nn.ModuleList:
        levels = nn.ModuleList()
        for level in range(len(cfg.strides)):
            convs = nn.Sequential()
            for i in range(cfg.head_stacked_convs):
                cin = cfg.neck_channels if i == 0 else cfg.head_channels
                shared = None if level == 0 else levels[0][i].conv
                convs.append(ConvModule(cin, cfg.head_channels, 3, eps=cfg.bn_eps, conv=shared))
            levels.append(convs)
        return levels

    def forward(
        self, feats: tuple[torch.Tensor, ...]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Neck maps -> (class logits per level (B, num_classes, H_l, W_l), distances per level
        (B, 4, H_l, W_l) as (left, top, right, bottom) in network-input pixels)."""
        cls_scores, bbox_preds = [], []
        for level, (x, stride) in enumerate(zip(feats, self.strides, strict=True)):
            cls_scores.append(self.rtm_cls[level](self.cls_convs[level](x)))
            reg = self.rtm_reg[level](self.reg_convs[level](x))
            bbox_preds.append((reg.exp() if self.exp_on_reg else reg) * stride)
        return cls_scores, bbox_preds


class RTMDet(nn.Module):
    """The whole network. ``forward(x)`` on normalized BGR ``(B, 3, H, W)`` (H, W divisible by 32)
    returns the raw head outputs ``(cls_scores, bbox_preds)``, each a list over the 3 levels."""

    def __init__(self, cfg: RTMDetConfig) -> None:
        super().__init__()
        self.config = cfg
        self.backbone = CSPNeXt(cfg)
        self.neck = CSPNeXtPAFPN(cfg)
        self.bbox_head = RTMDetSepBNHead(cfg)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(B, 3, H, W) -> ([ (B, num_classes, H/s, W/s) ], [ (B, 4, H/s, W/s) ]) for s in 8, 16, 32."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % 32 or x.shape[3] % 32:
            raise ValueError(
                f"RTMDet expects a (B, 3, H, W) batch with H and W divisible by 32, got "
                f"{tuple(x.shape)}"
            )
        return self.bbox_head(self.neck(self.backbone(x)))

    def shared_head_keys(self) -> dict[str, str]:
        """State-dict keys of the shared head convs at levels >= 1 -> the level-0 key they alias."""
        aliases = {}
        for branch in ("cls_convs", "reg_convs"):
            for level in range(1, len(self.config.strides)):
                for i in range(self.config.head_stacked_convs):
                    key = f"bbox_head.{branch}.{level}.{i}.conv.weight"
                    aliases[key] = f"bbox_head.{branch}.0.{i}.conv.weight"
        return aliases

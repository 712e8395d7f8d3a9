"""Typed configs of the RTMDet person detector: the architecture and the test-time settings.

The official Sapiens pose demo (config ``sapiens/pose/tools/vis/rtmdet_m_640-8xb32_coco-person.py``)
runs RTMDet-m (CSPNeXt P5 backbone with deepen 0.67 / widen 0.75, CSPNeXt-PAFPN neck with 192
channels, RTMDetSepBNHead) with one class, ``exp_on_reg=True``, BatchNorm eps 1e-5, and the test
config ``nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=None, max_per_img=100``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RTMDetConfig:
    """Architecture of an RTMDet detector (CSPNeXt + CSPNeXt-PAFPN + shared-conv/separate-BN head).

    The defaults are RTMDet-m as used by the official pose demo. Everything except ``exp_on_reg``
    and ``bn_eps`` can be read off a checkpoint's tensor shapes (see
    :func:`sapiens2.detect.checkpoint.config_from_state_dict`).

    Attributes:
        stem_channels: ``(mid, out)`` of the 3-conv stem (``3->mid`` stride 2, ``mid->mid``,
            ``mid->out``).
        stage_channels: output channels of the four backbone stages (strides 4, 8, 16, 32).
        stage_blocks: CSPNeXt blocks in each stage's CSP layer.
        expand_ratio: CSP layers split into two halves of ``int(out * expand_ratio)`` channels.
        channel_attention: backbone CSP layers gate their concatenation with channel attention.
        spp_kernels: max-pool kernels of the SPP bottleneck in the last stage.
        neck_channels: output channels of the PAFPN (one per level).
        neck_blocks: CSPNeXt blocks in each neck CSP layer.
        head_channels: width of the head's stacked convs.
        head_stacked_convs: number of 3x3 ConvModules in each head branch.
        num_classes: classification outputs (sigmoid, no background channel).
        pred_kernel_size: kernel of the final ``rtm_cls`` / ``rtm_reg`` convs.
        strides: strides of the three detection levels.
        exp_on_reg: regression output is ``exp(x) * stride`` (True) or ``x * stride`` (False).
        bn_eps: BatchNorm epsilon (the official config leaves mmcv's default 1e-5).
    """

    stem_channels: tuple[int, int] = (24, 48)
    stage_channels: tuple[int, int, int, int] = (96, 192, 384, 768)
    stage_blocks: tuple[int, int, int, int] = (2, 4, 4, 2)
    expand_ratio: float = 0.5
    channel_attention: bool = True
    spp_kernels: tuple[int, ...] = (5, 9, 13)
    neck_channels: int = 192
    neck_blocks: int = 2
    head_channels: int = 192
    head_stacked_convs: int = 2
    num_classes: int = 1
    pred_kernel_size: int = 1
    strides: tuple[int, int, int] = (8, 16, 32)
    exp_on_reg: bool = True
    bn_eps: float = 1e-5

    def __post_init__(self) -> None:
        if len(self.stem_channels) != 2:
            raise ValueError(f"stem_channels must be (mid, out), got {self.stem_channels}")
        if len(self.stage_channels) != 4 or len(self.stage_blocks) != 4:
            raise ValueError(
                "stage_channels and stage_blocks need 4 entries (CSPNeXt P5), got "
                f"{self.stage_channels} and {self.stage_blocks}"
            )
        if min(self.stage_blocks) < 1 or self.neck_blocks < 1 or self.head_stacked_convs < 1:
            raise ValueError("every stage, neck layer and head branch needs at least one block")
        if len(self.strides) != 3:
            raise ValueError(f"RTMDet has three detection levels, got strides {self.strides}")

    @property
    def backbone_out_channels(self) -> tuple[int, int, int]:
        """Channels of the backbone outputs fed to the neck (stages 2, 3, 4)."""
        return self.stage_channels[1], self.stage_channels[2], self.stage_channels[3]


#: RTMDet-m, the official Sapiens person detector (24.66 M parameters).
RTMDET_M = RTMDetConfig()

#: RTMDet-tiny widths and depths (the golden-fixture model, with ``exp_on_reg=True``).
RTMDET_TINY = RTMDetConfig(
    stem_channels=(12, 24),
    stage_channels=(48, 96, 192, 384),
    stage_blocks=(1, 1, 1, 1),
    neck_channels=96,
    neck_blocks=1,
    head_channels=96,
)


@dataclass(frozen=True)
class DetectorTestConfig:
    """Pre- and post-processing of ``inference_detector`` with the Sapiens person config.

    Attributes:
        input_size: images are resized (keeping the ratio, long side to this) and padded
            bottom/right to ``input_size x input_size``.
        pad_value: uint8 value of the padding in every channel.
        mean_bgr: normalization mean in B, G, R order (the weights expect BGR input).
        std_bgr: normalization std in B, G, R order.
        score_thr: keep priors whose sigmoid score is strictly greater than this.
        nms_pre: at most this many candidates per level (highest scores).
        max_per_img: at most this many detections per image (highest scores; no NMS).
        min_bbox_size: drop boxes whose width or height is not strictly greater than this.
    """

    input_size: int = 640
    pad_value: int = 114
    mean_bgr: tuple[float, float, float] = (103.53, 116.28, 123.675)
    std_bgr: tuple[float, float, float] = (57.375, 57.12, 58.395)
    score_thr: float = 0.05
    nms_pre: int = 1000
    max_per_img: int = 100
    min_bbox_size: float = 0.0

    def __post_init__(self) -> None:
        if self.input_size <= 0 or self.input_size % 32:
            raise ValueError(f"input_size must be a positive multiple of 32, got {self.input_size}")
        if not 0 <= self.pad_value <= 255:
            raise ValueError(f"pad_value must be a uint8 value, got {self.pad_value}")
        if self.nms_pre < 1 or self.max_per_img < 1:
            raise ValueError("nms_pre and max_per_img must be >= 1")

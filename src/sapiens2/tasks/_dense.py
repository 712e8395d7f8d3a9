"""Head widths shared by the pixel-shuffle dense heads (normal, albedo, matting, pointmap)."""

from __future__ import annotations

from sapiens2.models.heads import DenseHeadConfig

#: the tiny arch's dense head (the official head with tiny widths)
TINY_DENSE = {"upsample_channels": (32, 16, 16, 8), "conv_channels": (8, 8, 4)}
#: the 5B upsampling widths of the released normal / albedo / matting heads
WIDE_UPSAMPLE = (1536, 768, 512, 256)


def tiny_dense(out_channels: int = 3) -> DenseHeadConfig:
    return DenseHeadConfig(**TINY_DENSE, out_channels=out_channels)

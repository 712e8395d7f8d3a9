"""Stages shared by the heads: ``[conv, norm, SiLU]`` Sequentials with official key indices."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from sapiens2.nn import RMSNorm2d


def make_norm(kind: str, channels: int, *, device=None, dtype=None) -> nn.Module:
    """``"instance"``: InstanceNorm2d without affine parameters or running stats (no keys);
    ``"rms"``: per-pixel RMSNorm over channels (key ``norm.weight``)."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "rms":
        return RMSNorm2d(channels, device=device, dtype=dtype)
    raise ValueError(f"unknown head norm {kind!r} (expected 'instance' or 'rms')")


def deconv_stages(
    in_channels: int, channels: Sequence[int], kernels: Sequence[int], *, device=None, dtype=None
) -> nn.Sequential:
    """Each stage doubles the resolution: ConvTranspose2d(stride 2, no bias) -> IN -> SiLU."""
    padding = {4: (1, 0), 3: (1, 1), 2: (0, 0)}
    layers: list[nn.Module] = []
    for out, k in zip(channels, kernels, strict=True):
        if k not in padding:
            raise ValueError(f"deconv kernel size must be 2, 3 or 4, got {k}")
        p, op = padding[k]
        layers += [
            nn.ConvTranspose2d(
                in_channels,
                out,
                k,
                stride=2,
                padding=p,
                output_padding=op,
                bias=False,
                device=device,
                dtype=dtype,
            ),
            nn.InstanceNorm2d(out),
            nn.SiLU(),
        ]
        in_channels = out
    return nn.Sequential(*layers)


def conv_stages(
    in_channels: int,
    channels: Sequence[int],
    kernels: Sequence[int],
    *,
    norm: str = "instance",
    stride: int = 1,
    device=None,
    dtype=None,
) -> nn.Sequential:
    """Conv(k, padding (k-1)/2, bias) -> norm -> SiLU per stage."""
    layers: list[nn.Module] = []
    for out, k in zip(channels, kernels, strict=True):
        layers += [
            nn.Conv2d(
                in_channels, out, k, stride=stride, padding=(k - 1) // 2, device=device, dtype=dtype
            ),
            make_norm(norm, out, device=device, dtype=dtype),
            nn.SiLU(),
        ]
        in_channels = out
    return nn.Sequential(*layers)

"""Which dtype the arithmetic runs in, given the parameter dtype and the device.

CPUs without bfloat16/float16 arithmetic units (no AVX512-BF16, no AMX) emulate those matrix
products, which makes them several times *slower* than float32 (on a 2-core Cascade Lake Xeon:
~10 GFLOP/s in bf16 against ~36 in fp32 for a 3081x1024x4096 product). There the blocks keep their
weights in the low-precision dtype (the memory saving stays) but compute in float32, casting each
weight on the fly; the residual stream between blocks stays in the parameter dtype. On GPUs and on
CPUs with native units nothing changes. :func:`set_cpu_upcast` switches the behaviour off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from sapiens2.device import cpu_has_native

_LOW_PRECISION = (torch.bfloat16, torch.float16)
_cpu_upcast = True


def set_cpu_upcast(enabled: bool) -> None:
    """Enables (default) or disables float32 compute for bf16/fp16 weights on CPUs without
    native bf16/fp16 arithmetic."""
    global _cpu_upcast
    _cpu_upcast = bool(enabled)


@contextlib.contextmanager
def cpu_upcast(enabled: bool) -> Iterator[None]:
    """:func:`set_cpu_upcast` ``enabled`` inside the block, the previous setting after it (an
    exported graph must not depend on the CPU that traced it)."""
    global _cpu_upcast
    previous, _cpu_upcast = _cpu_upcast, bool(enabled)
    try:
        yield
    finally:
        _cpu_upcast = previous


def compute_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype to run a block in when its parameters are ``dtype`` on ``device``."""
    upcast = _cpu_upcast and dtype in _LOW_PRECISION and device.type == "cpu"
    return torch.float32 if upcast and not cpu_has_native(dtype) else dtype


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` computed in ``x.dtype`` (the weight is cast when its dtype differs)."""
    w, b = layer.weight, layer.bias
    if w.dtype != x.dtype:
        w = w.to(x.dtype)
        b = None if b is None else b.to(x.dtype)
    return F.linear(x, w, b)

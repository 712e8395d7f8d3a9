"""Device and dtype resolution in one place."""

from __future__ import annotations

import functools

import torch

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> cpu; ``"auto"`` -> cuda, then mps, then cpu; anything else as torch reads it."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


@functools.cache
def cpu_has_native(dtype: torch.dtype) -> bool:
    """True when this CPU has hardware arithmetic for ``dtype`` (bf16: AVX512-BF16 or AMX;
    fp16: AMX-FP16). Unknown on old PyTorch versions: assumed present."""
    cpu = torch.cpu
    try:
        if dtype == torch.bfloat16:
            return cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported()
        if dtype == torch.float16:
            return cpu._is_amx_fp16_supported()
    except AttributeError:
        return True
    return True


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: CUDA devices that support it (Ampere
    and later) and CPUs with AVX512-BF16 or AMX. Elsewhere bf16 is emulated or unsupported."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_has_native(torch.bfloat16)
    return False


def inference_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """Like :func:`resolve_dtype`, and ``"auto"`` picks bfloat16 where ``device`` has native bf16
    arithmetic (half the weight memory, the fast kernels), float32 elsewhere."""
    if isinstance(dtype, str) and dtype.lower() == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return resolve_dtype(dtype)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """Maps ``"fp32" | "bf16" | "fp16"`` (and torch dtypes) to a torch dtype; None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}") from None


def disable_tf32() -> None:
    """Makes float32 mean float32 on CUDA: cuDNN convolutions use TF32 by default, which moves
    outputs by ~1e-3 relative and breaks parity with the reference implementation."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

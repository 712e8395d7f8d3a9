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


DEVICE_HELP = "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"


class DeviceError(ValueError):
    """A device that cannot be used here: unknown, or not available on this machine."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The one place that turns a device name into a usable ``torch.device``.

    Args:
        device: ``None`` (cpu), ``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"``, ``"mps"``, ``"meta"``, or a ``torch.device``.

    Returns:
        The device, checked to exist on this machine.

    Raises:
        DeviceError: an unknown name, or a device this machine does not have (CUDA without a
            CUDA build or GPU, ``cuda:7`` with one GPU, MPS off Apple silicon); the message is
            one line that names the device.
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str):
        name = device.strip().lower()
        if name == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            if _mps_available():
                return torch.device("mps")
            return torch.device("cpu")
        try:
            dev = torch.device(name)
        except (RuntimeError, ValueError):
            raise DeviceError(f"unknown device {device!r}; use {DEVICE_HELP}") from None
    else:
        dev = torch.device(device)
    check_device(dev)
    return dev


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def check_device(dev: torch.device) -> None:
    """Raises :class:`DeviceError` unless ``dev`` exists on this machine (cpu and meta always do)."""
    if dev.type in ("cpu", "meta"):
        return
    if dev.type == "cuda":
        if not torch.backends.cuda.is_built():
            why = "this PyTorch build has no CUDA support"
        elif not torch.cuda.is_available():
            why = "no CUDA GPU is visible"
        elif dev.index is not None and dev.index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            why = f"this machine has {n} CUDA device(s) (cuda:0 to cuda:{n - 1})"
        else:
            return
    elif dev.type == "mps":
        if not _mps_available():
            why = "MPS needs Apple silicon and a PyTorch build with MPS support"
        elif dev.index not in (None, 0):
            why = "there is only one MPS device (mps:0)"
        else:
            return
    else:
        backend = getattr(torch, dev.type, None)
        available = getattr(backend, "is_available", None)
        if available is None:
            raise DeviceError(f"unsupported device {str(dev)!r}; use {DEVICE_HELP}")
        if not available():
            why = f"no {dev.type} device is visible"
        elif dev.index is not None and dev.index >= backend.device_count():
            why = f"this machine has {backend.device_count()} {dev.type} device(s)"
        else:
            return
    raise DeviceError(f"device {str(dev)!r} is not available: {why}")


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

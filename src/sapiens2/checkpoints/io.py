"""Reading and writing state dicts: safetensors, and PyTorch pickles loaded safely."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from sapiens2.checkpoints.errors import CheckpointError

_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
# Wrappers seen around weights in PyTorch checkpoints (the official loader accepts these three).
_WRAPPER_KEYS = ("state_dict", "model", "teacher")


def read_state_dict(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Reads all tensors of a checkpoint file.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)`` (never unpickling arbitrary objects), unwrapping a
    ``state_dict`` / ``model`` / ``teacher`` entry. ``device="meta"`` reads only shapes and dtypes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, torch.device(device))
    return _read_torch(path, torch.device(device))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file (empty for other files)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    try:
        with safe_open(path, framework="pt") as f:
            return dict(f.metadata() or {})
    except SafetensorError as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err


def _read_safetensors(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    try:
        with safe_open(path, framework="pt") as f:
            if device.type == "meta":
                out = {}
                for k in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    sl = f.get_slice(k)
                    dtype = _SAFETENSORS_DTYPES.get(sl.get_dtype())
                    if dtype is None:
                        raise CheckpointError(
                            f"{path}: tensor {k} has unsupported dtype {sl.get_dtype()}"
                        )
                    out[k] = torch.empty(sl.get_shape(), dtype=dtype, device="meta")
                return out
            return {k: f.get_tensor(k).to(device) for k in f.keys()}  # noqa: SIM118
    except SafetensorError as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    except OSError as err:  # e.g. truncated data section
        raise CheckpointError(f"{path}: could not read tensors ({err})") from err


def _read_torch(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    map_location = "cpu" if device.type == "meta" else device
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: holds Python objects other than tensors and plain containers; refusing to "
            f"unpickle it (convert it to .safetensors). Details: {str(err).splitlines()[0]}"
        ) from err
    except Exception as err:  # torch.load raises RuntimeError, EOFError, IndexError... on junk
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {first})"
        ) from err
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: does not contain a state dict of tensors")
    not_str = [k for k in obj if not isinstance(k, str)]
    if not_str:
        raise CheckpointError(f"{path}: state dict keys must be strings, found {not_str[:4]!r}")
    if device.type == "meta":
        return {k: torch.empty_like(v, device="meta") for k, v in obj.items()}
    return dict(obj)


def write_state_dict(
    state_dict: Mapping[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Writes tensors to a ``.safetensors`` file (contiguous CPU copies; shared storage split)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoints are written as .safetensors, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    save_file(tensors, str(path), metadata={"format": "pt", **(metadata or {})})
    return path

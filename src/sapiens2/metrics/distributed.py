"""Cross-process reduction helpers for metric accumulators (``torch.distributed``).

Every helper is a no-op (returns its input) when ``torch.distributed`` is unavailable or no
process group is initialised, so metrics work unchanged in a single process. With the NCCL backend
the reduction runs on the current CUDA device (``torch.cuda.current_device()``); with gloo (or any
other backend) it runs on the CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a default ``torch.distributed`` process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size(group: Any = None) -> int:
    """Number of ranks in ``group`` (1 when not distributed)."""
    return dist.get_world_size(group) if is_distributed() else 1


def collective_device(group: Any = None) -> torch.device:
    """The device whose tensors the process group's collectives take: CUDA (this process's
    current GPU) under NCCL, the CPU under gloo (and without a process group)."""
    if is_distributed() and str(dist.get_backend(group)).lower() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


_OPS = {"sum": "SUM", "mean": "SUM", "max": "MAX"}


def all_reduce_(tensor: torch.Tensor, op: str = "sum", group: Any = None) -> torch.Tensor:
    """The one all-reduce: ``tensor`` reduced in place over the ranks of ``group`` by ``op``
    (``"sum"``, ``"mean"`` or ``"max"``) and returned; a no-op in a single process. The tensor
    must be on :func:`collective_device`."""
    if op not in _OPS:
        raise ValueError(f"all-reduce op must be one of {', '.join(_OPS)}, got {op!r}")
    if not is_distributed() or dist.get_world_size(group) == 1:
        return tensor
    dist.all_reduce(tensor, op=getattr(dist.ReduceOp, _OPS[op]), group=group)
    if op == "mean":
        tensor /= dist.get_world_size(group)
    return tensor


def all_reduce_sum(state: dict[str, np.ndarray], group: Any = None) -> dict[str, np.ndarray]:
    """Sum every array of ``state`` over all ranks.

    Integer arrays are reduced as int64 (exact); floating arrays as float64. All arrays of one dtype
    kind are packed into a single flat tensor so the whole state costs at most two collectives.

    Args:
        state: name -> numpy array; every rank must pass the same names, shapes and dtypes.
        group: optional process group (default: the world).

    Returns:
        A new dict with the summed arrays (the input itself when not distributed).
    """
    if not is_distributed():
        return {k: v.copy() for k, v in state.items()}
    device = collective_device(group)
    out: dict[str, np.ndarray] = {}
    for kind, dtype, tdtype in (("i", np.int64, torch.int64), ("f", np.float64, torch.float64)):
        names = [k for k in sorted(state) if _kind(state[k]) == kind]
        if not names:
            continue
        flat = np.concatenate([np.asarray(state[k], dtype=dtype).ravel() for k in names])
        tensor = torch.from_numpy(flat).to(device=device, dtype=tdtype)
        all_reduce_(tensor, "sum", group)
        summed = tensor.cpu().numpy()
        offset = 0
        for k in names:
            n = state[k].size
            out[k] = summed[offset : offset + n].reshape(state[k].shape).astype(dtype, copy=True)
            offset += n
    return out


def _kind(array: np.ndarray) -> str:
    if array.dtype.kind in "biu":
        return "i"
    if array.dtype.kind == "f":
        return "f"
    raise TypeError(f"metric state arrays must be integer or float, got dtype {array.dtype}")


def all_gather_objects(obj: Any, group: Any = None) -> list[Any]:
    """Gather one picklable object from every rank, in rank order (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * world_size(group)
    dist.all_gather_object(gathered, obj, group=group)
    return gathered

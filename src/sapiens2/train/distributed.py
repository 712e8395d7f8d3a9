"""Distributed training on PyTorch's own engines, shared by fine-tuning and pretraining.

Launch with ``torchrun`` (multi-node through its rendezvous); a plain ``python`` run is a single
process. Strategies: ``single`` (no wrapping), ``ddp`` (DistributedDataParallel) and ``fsdp2``
(``fully_shard`` on every transformer block and at the root, with a ``MixedPrecisionPolicy``).
Checkpoints live in :mod:`sapiens2.train.checkpointing`; ``full_model_state_dict`` gathers the
weights for export.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor, Replicate

from sapiens2.device import resolve_device
from sapiens2.metrics.distributed import all_reduce_, collective_device, is_distributed
from sapiens2.nn import TransformerBlock

logger = logging.getLogger(__name__)

Strategy = Literal["single", "ddp", "fsdp2"]
STRATEGIES: tuple[Strategy, ...] = ("single", "ddp", "fsdp2")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | torch.device | None = None) -> DistInfo:
    """Joins the torchrun process group (gloo on CPU, nccl on CUDA), or runs single-process.

    Args:
        device: ``"cpu"``, ``"cuda"`` or None (cuda when available); checked by
            :func:`sapiens2.device.resolve_device`. Under torchrun each process takes
            ``cuda:LOCAL_RANK``.
    """
    want = resolve_device(device) if device is not None else None
    use_cuda = torch.cuda.is_available() if want is None else want.type == "cuda"
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = want if want is not None and want.type != "cuda" else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, dev)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seeds Python, numpy and torch with ``seed + rank`` (different augmentations per rank)."""
    s = seed + rank
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def wrap_model(
    model: nn.Module,
    strategy: Strategy,
    info: DistInfo,
    *,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = None,
) -> nn.Module:
    """Wraps ``model`` for the strategy. ``fsdp2`` shards each TransformerBlock and the root."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    if strategy == "single":
        if info.distributed:
            raise ValueError("strategy 'single' cannot run under several processes; use ddp/fsdp2")
        return model
    if strategy == "ddp":
        if not info.distributed:
            return model
        ids = [info.device.index] if info.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(info.device.type, (info.world_size,))
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    for module in model.modules():
        if isinstance(module, TransformerBlock):
            fully_shard(module, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module under DDP / torch.compile wrappers (FSDP2 wraps in place)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (identity single-process), computed on :func:`collective_device` and
    returned there (a copy); no host synchronisation."""
    if is_distributed() and dist.get_world_size() > 1:
        value = all_reduce_(value.detach().to(collective_device(), copy=True), "mean")
    return value


def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clips the global gradient norm to ``max_norm`` (as ``torch.nn.utils.clip_grad_norm_``) and
    returns the norm before clipping as a plain 0-dim tensor on the parameters' device.

    Sharded (FSDP2) gradients cost one collective, the one that clipping needs anyway: the norm is
    replicated once and both the clipping and the returned value use it. No host sync.
    """
    params = [p for p in parameters if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if isinstance(norm, DTensor):
        norm = norm.redistribute(placements=[Replicate()] * norm.device_mesh.ndim)
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm.to_local() if isinstance(norm, DTensor) else norm


def full_model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) CPU state dict on rank 0 (an empty dict on other ranks)."""
    return get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain containers (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": [version, list(internal), py_gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, py_gauss = state["python"]
    random.setstate((version, tuple(internal), py_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])

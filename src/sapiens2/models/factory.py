"""``create_model``: build any arch (and optionally a task head) from the arch table."""

from __future__ import annotations

import torch
from torch import nn

from sapiens2.device import resolve_device, resolve_dtype
from sapiens2.models.backbone import Sapiens2
from sapiens2.models.configs import ArchConfig, get_arch
from sapiens2.models.task import HeadConfig, TaskModel, build_head, default_head_config


@torch.no_grad()
def init_weights(model: nn.Module) -> None:
    """Random initialisation of every module (after ``to_empty``): PyTorch's defaults, then the
    modules' own ``init_weights`` (the backbone's, the pose head's)."""
    for m in model.modules():
        if isinstance(m, Sapiens2):
            continue
        if m is not model and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    for m in model.modules():
        if hasattr(m, "init_weights"):
            m.init_weights()


def build_model(
    arch: ArchConfig, task: str | None = None, head: HeadConfig | None = None, *, device=None
) -> Sapiens2 | TaskModel:
    """Builds the module tree without initialising it when ``device`` is ``"meta"``."""
    backbone = Sapiens2(arch, device=device)
    if task is None:
        return backbone
    head = head or default_head_config(task, arch)
    return TaskModel(backbone, build_head(task, arch.embed_dim, head, device=device), task)


def create_model(
    name: str | ArchConfig,
    *,
    task: str | None = None,
    head: HeadConfig | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    **overrides,
) -> Sapiens2 | TaskModel:
    """A randomly initialised backbone (or task model) from the arch table.

    Args:
        name: an arch name such as ``"sapiens2_0.4b"`` (see ``sapiens2 models``) or an ArchConfig.
        task: ``"pose" | "seg" | "normal" | "pointmap" | "albedo"`` adds that head with the
            official widths for the size (or ``head``).
        device: ``"cpu"``, ``"cuda"``, ``"auto"``, ``"meta"`` (no memory; weights uninitialised).
        dtype: ``"fp32" | "bf16" | "fp16"`` or a torch dtype.
        **overrides: arch fields to change (unknown names are an error).
    """
    arch = name if isinstance(name, ArchConfig) else get_arch(name)
    if overrides:
        arch = arch.with_overrides(**overrides)
    dev = resolve_device(device)
    model = build_model(arch, task, head, device="meta")
    if dev.type != "meta":
        model = model.to_empty(device=dev)
        init_weights(model)
    dt = resolve_dtype(dtype)
    if dt is not None:
        model = model.to(dt)
    return model.eval()

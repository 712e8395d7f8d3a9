"""``create_model(name, pretrained=True, task=...)`` as timm users expect: an arch name and a task
pick the official hub repo ``facebook/sapiens2-<task>-<size>`` (``pretrain`` for a backbone)."""

from __future__ import annotations

from pathlib import Path

import torch

from sapiens2.checkpoints.errors import CheckpointError
from sapiens2.checkpoints.load import load_model
from sapiens2.models import Sapiens2, TaskModel
from sapiens2.models import create_model as create_random_model
from sapiens2.models.configs import get_arch
from sapiens2.models.task import HeadConfig, check_task

HUB_ORG = "facebook"


def pretrained_id(name: str, task: str | None = None) -> str:
    """The official hub repo of arch ``name`` with ``task``'s head (None: the backbone).

    ``("sapiens2_0.4b", "pose")`` -> ``facebook/sapiens2-pose-0.4b``; ``("sapiens2_1b_4k", None)``
    -> ``facebook/sapiens2-pretrain-1b-4k``.
    """
    arch = get_arch(name)
    if task is not None:
        check_task(task)
    size = arch.name.removeprefix("sapiens2_")
    if not size[:1].isdigit():
        raise ValueError(f"{arch.name} has no released weights (it is a test arch)")
    return f"{HUB_ORG}/sapiens2-{task or 'pretrain'}-{size.replace('_', '-')}"


def create_model(
    name: str,
    pretrained: bool = False,
    *,
    task: str | None = None,
    head: HeadConfig | None = None,
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
    **overrides,
) -> Sapiens2 | TaskModel:
    """A backbone or task model by arch name, random or with released weights (timm style).

    Args:
        name: an arch name such as ``"sapiens2_0.4b"`` (``sapiens2 models`` lists them).
        pretrained: load the official weights of ``name`` and ``task`` from the hub repo
            :func:`pretrained_id` names (huggingface_hub's cache; ``HF_HUB_OFFLINE=1`` uses
            only the cache), or from ``weights``.
        task: ``"pose" | "seg" | "normal" | "pointmap" | "albedo"``; None for the backbone.
        head: head widths of a random model (a pretrained one has its checkpoint's).
        weights: with ``pretrained``, another source for the weights (a file, a folder, a hub
            id); its arch and task must still be ``name`` and ``task``.
        device, dtype: as in :func:`sapiens2.load_model`.
        cache_dir, revision, local_files_only: passed to the hub download.
        **overrides: arch fields of a random model (not with ``pretrained``).

    Raises:
        CheckpointError: the weights are of another arch or task than asked for.
    """
    if not pretrained:
        if weights is not None:
            raise ValueError("weights= is only used with pretrained=True")
        return create_random_model(
            name, task=task, head=head, device=device, dtype=dtype, **overrides
        )
    if overrides or head is not None:
        given = ", ".join([*overrides, *(["head"] if head is not None else [])])
        raise ValueError(f"pretrained weights fix the architecture; cannot also set {given}")
    source = weights if weights is not None else pretrained_id(name, task)
    model = load_model(
        source,
        device=device,
        dtype=dtype,
        cache_dir=cache_dir,
        revision=revision,
        local_files_only=local_files_only,
    )
    arch = model.arch if isinstance(model, TaskModel) else model.cfg
    wanted = get_arch(name).name
    got_task = getattr(model, "task", None)
    if arch.name != wanted or got_task != task:
        raise CheckpointError(
            f"{source}: holds a {arch.name} {got_task or 'backbone'} model, not the {wanted} "
            f"{task or 'backbone'} asked for"
        )
    return model

"""``load_model`` / ``save_model``: strict loading of official-layout checkpoints."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from sapiens2.checkpoints.errors import CheckpointError, list_names, state_dict_problems
from sapiens2.checkpoints.hub import resolve_source
from sapiens2.checkpoints.infer import detect_task, infer_arch, infer_head, split_task_state_dict
from sapiens2.checkpoints.io import read_metadata, read_state_dict, write_state_dict
from sapiens2.checkpoints.transformers import adapt_transformers_checkpoint
from sapiens2.device import disable_tf32, resolve_device, resolve_dtype
from sapiens2.models import Sapiens2, TaskModel, build_model

logger = logging.getLogger(__name__)


def load_state_dict_strict(
    model: nn.Module, sd: Mapping[str, torch.Tensor], *, assign: bool = False
) -> None:
    """``load_state_dict(strict=True)`` with an error that names every problem at once."""
    problems = state_dict_problems(model.state_dict(), sd, limit=4)
    if problems:
        raise CheckpointError("checkpoint does not fit the model; " + "; ".join(problems))
    model.load_state_dict(sd, strict=True, assign=assign)


def check_finite(
    sd: Mapping[str, torch.Tensor], origin: str, *, allow_nonfinite: bool = False
) -> None:
    """Raise a :class:`CheckpointError` naming the tensors that hold NaN or infinite values (a
    warning instead with ``allow_nonfinite``); meta tensors are not checked."""
    bad = [
        k
        for k, v in sd.items()
        if isinstance(v, torch.Tensor)
        and not v.is_meta
        and (v.is_floating_point() or v.is_complex())
        and not bool(torch.isfinite(v).all())
    ]
    if not bad:
        return
    message = f"{origin}: NaN or infinite values in {len(bad)} tensor(s): {list_names(bad, 4)}"
    if not allow_nonfinite:
        raise CheckpointError(
            message + " (a broken or tampered file; allow_nonfinite=True, or predict "
            "--allow-nonfinite, loads it anyway)"
        )
    logger.warning("%s; loading it anyway (allow_nonfinite)", message)


def _token_grid(metadata: Mapping[str, str]) -> tuple[int, int] | None:
    text = metadata.get("sapiens2_token_grid")
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise CheckpointError(
            f"metadata sapiens2_token_grid {text[:40]!r} is not two positive integers 'H,W'"
        )
    return int(parts[0]), int(parts[1])


def load_model(
    source: str | Path | Mapping[str, torch.Tensor],
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
    allow_nonfinite: bool = False,
) -> Sapiens2 | TaskModel:
    """Loads an official Sapiens2 backbone or task checkpoint, strictly.

    Args:
        source: a ``.safetensors`` / ``.pth`` file, a folder holding one, ``demo:<task>`` (the
            bundled demo models), a hub id such as ``facebook/sapiens2-pretrain-0.4b`` or
            ``facebook/sapiens2-seg-1b`` (fetched and cached by huggingface_hub;
            ``HF_HUB_OFFLINE=1`` uses the cache only), ``hf://<repo>/<file>``, or a state dict
            (tensors may be on ``meta``; then ``device="meta"`` builds without memory). A path
            that does not exist is an error; it is never taken for a hub id (see
            :func:`sapiens2.checkpoints.hub.resolve_source`).
        device: ``None`` (cpu), ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``, ``"meta"``.
        dtype: parameter dtype (default float32); the RoPE tables keep their own dtype. A float32
            model on CUDA switches TF32 off (``sapiens2.device.disable_tf32``) for exact results.
        allow_nonfinite: load weights holding NaN or infinite values with a warning instead of
            refusing them.

    Returns:
        ``Sapiens2`` for a backbone checkpoint, ``TaskModel`` for a task checkpoint (``backbone.*``
        + ``decode_head.*``), in eval mode. The arch is inferred from tensor shapes.

    Raises:
        CheckpointError: not a Sapiens2 checkpoint, unreadable, keys/shapes that do not fit,
            malformed metadata, or NaN/infinite weights.
        ModelSourceError: a source that is not a file, folder, demo model or reachable hub id.
    """
    dev = resolve_device(device)
    metadata: dict[str, str] = {}
    if isinstance(source, Mapping):
        sd = dict(source)
        origin = "state dict"
    else:
        path = resolve_source(
            source, cache_dir=cache_dir, revision=revision, local_files_only=local_files_only
        )
        sd = read_state_dict(path, device="meta" if dev.type == "meta" else "cpu")
        metadata = read_metadata(path)
        sd, metadata = adapt_transformers_checkpoint(path, sd, metadata)  # a transformers folder
        origin = str(path)
    try:
        not_str = [k for k in sd if not isinstance(k, str)]
        if not_str:
            raise CheckpointError(f"keys must be strings, found {not_str[:4]!r}")
        backbone_sd, head_sd = split_task_state_dict(sd)
        arch = infer_arch(backbone_sd)
        task = detect_task(head_sd)
        head = infer_head(task, head_sd, _token_grid(metadata)) if task else None
        try:
            model = build_model(arch, task, head, device="meta")
        except (ValueError, ZeroDivisionError) as err:  # shapes no Sapiens2 model has
            raise CheckpointError(f"unsupported architecture ({err})") from None
        load_state_dict_strict(model, sd, assign=True)
    except CheckpointError as err:
        raise CheckpointError(f"{origin}: {err}") from None
    check_finite(sd, origin, allow_nonfinite=allow_nonfinite)
    dt = resolve_dtype(dtype) or torch.float32
    if dev.type == "cuda" and dt == torch.float32:
        disable_tf32()  # an fp32 model on CUDA reproduces the reference (TF32 convs do not)
    if dev.type != "meta":
        model = model.to(device=dev, dtype=dt)
    return model.eval()


def state_dict_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    """The official layout: RoPE periods stored in the RoPE dtype (bfloat16 for released models)."""
    sd = model.state_dict()
    for name, module in model.named_modules():
        if isinstance(module, Sapiens2):
            key = f"{name}.rope_embed.periods" if name else "rope_embed.periods"
            sd[key] = sd[key].to(module.cfg.torch_rope_dtype)
    return sd


def save_model(model: Sapiens2 | TaskModel, path: str | Path) -> Path:
    """Writes ``model`` as a ``.safetensors`` file in the official key layout (loadable by
    :func:`load_model` and by the reference code)."""
    if not isinstance(model, Sapiens2 | TaskModel):
        raise TypeError(f"save_model expects a Sapiens2 or TaskModel, got {type(model).__name__}")
    return write_state_dict(state_dict_for_saving(model), path, metadata=save_model_metadata(model))


def save_model_metadata(model: Sapiens2 | TaskModel) -> dict[str, str]:
    """The safetensors metadata :func:`save_model` writes: the arch name, the task and a
    pointmap's token grid (which :func:`load_model` reads back)."""
    meta = {"sapiens2_arch": (model.cfg if isinstance(model, Sapiens2) else model.arch).name}
    if isinstance(model, TaskModel):
        meta["sapiens2_task"] = model.task
        grid = getattr(model.head_config, "token_grid", None)  # a head with a fixed input size
        if grid is not None:
            meta["sapiens2_token_grid"] = ",".join(map(str, grid))
    return meta

"""The fine-tuning loop: one recipe, from a laptop CPU to ``torchrun`` across GPUs and machines.

Mixed precision is bf16 autocast (single/ddp) or FSDP2's ``MixedPrecisionPolicy`` (fsdp2); the
loss is always computed in float32. Gradient accumulation sums ``grad_accum`` micro-batches with
gradient synchronisation only on the last. The log, checkpoints (atomic, resumed exactly: model,
optimiser, step, data position, RNG) and the non-finite guard are the shared
:mod:`sapiens2.train.core`; the final weights are exported as ``OUT/model.safetensors`` in the
official layout.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sapiens2.checkpoints import load_model, load_state_dict_strict, save_model
from sapiens2.data.datasets import collate
from sapiens2.data.loader import ResumableLoader
from sapiens2.evaluation import TaskAdapter, adapter_for, evaluate, to_device
from sapiens2.models import (
    TaskModel,
    build_model,
    create_model,
    default_head_config,
    get_arch,
    widen_head,
)
from sapiens2.tasks import get_task
from sapiens2.train import distributed as dist_utils
from sapiens2.train.core import TrainingRun, check_enough_data
from sapiens2.train.optim import Schedule, param_groups, set_lr
from sapiens2.train.recipes import Recipe

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    out: Path
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    val: dict[str, Any] = field(default_factory=dict)


def recipe_model(recipe: Recipe, device=None) -> TaskModel:
    """A freshly initialised task model for ``recipe`` (its arch; its head width, if set)."""
    head = None
    if recipe.head_width:
        head = widen_head(
            default_head_config(recipe.task, get_arch(recipe.arch)), recipe.head_width
        )
    return create_model(recipe.arch, task=recipe.task, head=head, device=device)


def recipe_loss(recipe: Recipe) -> nn.Module:
    """The task loss of ``recipe``: its task module's choice (the official terms; OHKM for pose
    with ``pose_ohkm_topk``; the pointmap deviations ``pointmap_multiscale_zero_outside`` /
    ``pointmap_normal_drop_boundary``)."""
    return get_task(recipe.task).recipe_loss(recipe)


def init_from(model: TaskModel, source: str | Path) -> None:
    """Initialises from a pretrain (backbone) checkpoint, or a task checkpoint: the whole model
    when the task matches, else only its backbone. Architectures must match exactly."""
    src = load_model(source)
    if isinstance(src, TaskModel) and src.task == model.task:
        load_state_dict_strict(model, src.state_dict())
        logger.info("initialised the whole %s model from %s", model.task, source)
        return
    backbone = src.backbone if isinstance(src, TaskModel) else src
    if backbone.cfg.name != model.arch.name and backbone.cfg != model.arch:
        raise ValueError(
            f"--init {source} is a {backbone.cfg.name} backbone; the recipe trains {model.arch.name}"
        )
    load_state_dict_strict(model.backbone, backbone.state_dict())
    logger.info("initialised the backbone from %s", source)


def _grad_sync(model: nn.Module, sync: bool):
    if isinstance(model, nn.parallel.DistributedDataParallel) and not sync:
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def _as_float(pred):
    return tuple(p.float() for p in pred) if isinstance(pred, tuple) else pred.float()


def _grid(rows: list[list[np.ndarray]]) -> np.ndarray:
    return np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)


class Trainer:
    """Runs one recipe on a dataset folder (or shards) and writes everything under ``out``.

    Args:
        recipe: the typed recipe (see :mod:`sapiens2.train.recipes`).
        data: dataset root with ``train/`` and ``val/`` (docs/formats.md) or shards.
        out: output folder (logs, pictures, checkpoints, ``model.safetensors``).
        init: pretrain or task checkpoint to start from (file or hub id); random init if None.
            Not loaded when the run resumes (the checkpoint holds the weights).
        resume: ``"auto"`` (the newest complete checkpoint under ``out/checkpoints``, if any), a
            checkpoint folder, or None (start fresh; an error if ``out`` holds checkpoints).
        device: ``cpu``/``cuda``; default cuda when available.
    """

    def __init__(
        self,
        recipe: Recipe,
        data: str | Path,
        out: str | Path,
        *,
        init: str | Path | None = None,
        resume: str | Path | None = "auto",
        device: str | None = None,
    ) -> None:
        self.recipe, self.data, self.out = recipe, data, Path(out)
        self.init, self.resume = init, resume
        self.info = dist_utils.init_distributed(device)
        self.adapter: TaskAdapter = adapter_for(
            recipe.task,
            flip_test=recipe.pose_flip_test,
            pose_sigma=recipe.pose_sigma,
            pointmap_normal_full_window=recipe.pointmap_normal_full_window,
        )

    # ---------------------------------------------------------------- setup
    def _build(self, init: str | Path | None) -> None:
        r, info = self.recipe, self.info
        torch.manual_seed(r.seed)  # identical initial weights on every rank
        model = recipe_model(r, device=info.device)
        if init is not None:
            init_from(model, init)
        model.train()
        model.backbone.set_grad_checkpointing(r.activation_checkpointing)
        self.model = model
        bf16 = r.precision == "bf16"
        # One process has nothing to shard or replicate: ddp/fsdp2 recipes run plainly.
        strategy = r.strategy if info.distributed else "single"
        self.wrapped = dist_utils.wrap_model(
            model,
            strategy,
            info,
            param_dtype=torch.bfloat16 if bf16 and strategy == "fsdp2" else None,
            reduce_dtype=torch.float32 if bf16 and strategy == "fsdp2" else None,
        )
        self.autocast = (
            torch.autocast(info.device.type, dtype=torch.bfloat16)
            if bf16 and strategy != "fsdp2"
            else contextlib.nullcontext()
        )
        groups = param_groups(
            model,
            lr=r.lr,
            weight_decay=r.weight_decay,
            layer_decay=r.layer_decay,
            depth=model.arch.depth,
        )
        for g in groups:
            g.pop("names")
        self.optimizer = torch.optim.AdamW(groups, lr=r.lr, betas=r.betas, eps=r.adam_eps)
        self.schedule = Schedule(r.max_steps, r.warmup_steps, r.warmup_start_factor)
        self.loss_fn = recipe_loss(r)
        dist_utils.seed_everything(r.seed, info.rank)
        ds = self.adapter.dataset(self.data, "train", True, r.input_size, r.seed, r.augment)
        self.loader = ResumableLoader(
            ds,
            r.batch_size,
            shuffle=True,
            seed=r.seed,
            rank=info.rank,
            world_size=info.world_size,
            drop_last=True,
            num_workers=r.num_workers,
            collate_fn=collate,
        )
        check_enough_data(len(ds), r.batch_size, info.world_size, f"the train split of {self.data}")
        self.forward = torch.compile(self.wrapped) if r.compile else self.wrapped

    # ---------------------------------------------------------------- loop
    def run(self) -> TrainResult:
        r, info = self.recipe, self.info
        run = TrainingRun(
            self.out,
            info,
            kind="train",
            recipe=r,
            samples_per_step=r.batch_size * r.grad_accum * info.world_size,
        )
        ckpt = run.resume_point(self.resume)
        if ckpt is not None and self.init is not None:
            logger.info("resuming from %s: --init %s is not loaded", ckpt.path, self.init)
        self._build(self.init if ckpt is None else None)
        start = 0
        if ckpt is not None:
            start = run.restore(ckpt, self.wrapped, self.optimizer, self.loader)
        end = r.max_steps
        if ckpt is not None and start > end:
            raise ValueError(f"{ckpt.path} is past max_steps={end}: raise --set max_steps")
        result = TrainResult(self.out, start)
        batches = iter(self.loader)
        run.start(start, end, f"train {r.name}")
        try:
            for step in range(start, end):
                lr = set_lr(self.optimizer, r.lr, self.schedule.factor(step))
                for micro in range(r.grad_accum):
                    try:
                        batch = next(batches)
                    except StopIteration:
                        batches = iter(self.loader)
                        batch = next(batches)
                    batch = to_device(batch, info.device)
                    last = micro == r.grad_accum - 1
                    with _grad_sync(self.wrapped, last):
                        with self.autocast:
                            pred = self.forward(batch["image"])
                        losses = self.loss_fn(_as_float(pred), batch)
                        (losses["loss"] / r.grad_accum).backward()
                    run.window.add(losses, 1.0 / r.grad_accum)
                grad_norm = dist_utils.clip_grad_norm(self.model.parameters(), r.clip_grad)
                run.window.add({"grad_norm": grad_norm})
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                done = step + 1
                run.end_step(done, {"lr": lr})
                if info.is_main and r.vis_every and done % r.vis_every == 0:
                    self._picture(batch, pred, self.out / "vis" / f"train_{done:06d}.png")
                if r.val_every and done % r.val_every == 0 and done != end:
                    result.val = self._validate_and_log(done, run)
                if done != end:
                    run.maybe_save(done, self.wrapped, self.optimizer, self.loader)
            if start < end or not result.val:
                result.val = self._validate_and_log(end, run) if r.val_every else {}
            run.save(end, self.wrapped, self.optimizer, self.loader)
            self.export(self.out / "model.safetensors")
            result.steps = end
        finally:
            run.close()
        result.history = run.history
        return result

    # ---------------------------------------------------------------- pieces
    def _picture(self, batch: dict[str, Any], pred, path: Path) -> None:
        import cv2

        n = min(4, batch["image"].shape[0])
        pred = tuple(p.detach() for p in pred) if isinstance(pred, tuple) else pred.detach()
        rows = [self.adapter.picture(batch, _as_float(pred), i) for i in range(n)]
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(_grid(rows), cv2.COLOR_RGB2BGR))

    def validate(self) -> dict[str, Any]:
        """Metrics on the ``val`` split, computed across all ranks."""
        r, info = self.recipe, self.info
        return evaluate(
            self.forward,
            r.task,
            self.data,
            input_size=r.input_size,
            batch_size=r.batch_size,
            device=info.device,
            flip_test=r.pose_flip_test,
            max_samples=r.val_max_batches * r.batch_size * info.world_size,
            autocast=self.autocast,
            rank=info.rank,
            world_size=info.world_size,
            pointmap_normal_full_window=r.pointmap_normal_full_window,
        )

    def _validate_and_log(self, step: int, run: TrainingRun) -> dict[str, Any]:
        val = self.validate()
        run.log_validation(step, val)
        if self.info.is_main:
            (self.out / "val_metrics.json").write_text(
                json.dumps({"step": step, **val}, indent=1, default=float)
            )
        return val

    def export(self, path: Path) -> Path | None:
        """Writes the full model (gathered from shards) in the official layout on rank 0."""
        sd = dist_utils.full_model_state_dict(self.wrapped)
        if not self.info.is_main:
            return None
        model = build_model(self.model.arch, self.model.task, self.model.head_config, device="meta")
        load_state_dict_strict(model, {k: v.float() for k, v in sd.items()}, assign=True)
        return save_model(model, path)


def train(
    recipe: Recipe,
    data: str | Path,
    out: str | Path,
    *,
    init: str | Path | None = None,
    resume: str | Path | None = "auto",
    device: str | None = None,
) -> TrainResult:
    """Runs :class:`Trainer` (see there)."""
    return Trainer(recipe, data, out, init=init, resume=resume, device=device).run()


__all__ = ["TrainResult", "Trainer", "init_from", "recipe_loss", "train"]

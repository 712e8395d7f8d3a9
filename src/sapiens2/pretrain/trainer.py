"""The pretraining loop: data, student/teacher, AdamW, EMA, sharded checkpoints, export.

One step: the multi-crop batch (2 global views with their masks, 4 local views) goes through the
student (visible tokens of the global views → MAE decoder and [CLS] head; local views → [CLS] head)
and the teacher (unmasked global views); the weighted objective is back-propagated, gradients are
clipped, AdamW steps, then the teacher takes an EMA step on its local shards.

Runs single-process (``python``) or under ``torchrun`` with ``ddp`` / ``fsdp2``. The log,
checkpoints and resuming are the shared :mod:`sapiens2.train.core`: checkpoints
(``OUT/checkpoints/step_XXXXXXXX``, atomic, DCP-sharded) hold student, teacher (with the centres),
optimizer, step, loader position and RNG states; a run restarted on the same ``OUT`` resumes from
the newest complete one and continues exactly. At the end ``OUT/student.safetensors`` and
``OUT/teacher.safetensors`` are written in the official pretrain layout (``load_model`` reads them).
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sapiens2.checkpoints import load_model, load_state_dict_strict, save_model
from sapiens2.data.datasets import ImageDataset
from sapiens2.data.loader import ResumableLoader
from sapiens2.metrics.distributed import all_reduce_, collective_device
from sapiens2.models import Sapiens2, TaskModel, create_model
from sapiens2.pretrain.distill import ema_momentum, ema_update, teacher_temperature
from sapiens2.pretrain.masking import mask_indices
from sapiens2.pretrain.networks import Student, StudentOutput, Teacher
from sapiens2.pretrain.objective import pretrain_losses
from sapiens2.pretrain.recipes import OptimConfig, PretrainRecipe
from sapiens2.pretrain.views import MultiCrop, collate_views
from sapiens2.train.core import TrainingRun, check_enough_data
from sapiens2.train.distributed import (
    DistInfo,
    clip_grad_norm,
    full_model_state_dict,
    init_distributed,
    seed_everything,
    unwrap,
    wrap_model,
)

__all__ = ["Pretrainer", "build_networks", "lr_at", "param_groups"]

logger = logging.getLogger(__name__)

_NO_DECAY_NAMES = ("cls_token", "storage_tokens", "mask_token", "local_pos_embed", "w_cls")


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Norm weights and biases (all 1-D parameters) and the special tokens get no decay."""
    return param.ndim <= 1 or name.endswith(".bias") or name.split(".")[-1] in _NO_DECAY_NAMES


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: with and without weight decay (trainable parameters only)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if no_weight_decay(name, p) else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_at(step: int, optim: OptimConfig, max_steps: int) -> float:
    """Learning rate of (0-based) ``step``: linear warm-up, then cosine from ``lr`` to ``min_lr``."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    span = max(1, max_steps - optim.warmup_steps)
    t = min(1.0, (step - optim.warmup_steps) / span)
    return optim.min_lr + (optim.lr - optim.min_lr) * 0.5 * (1 + math.cos(math.pi * t))


def init_backbone(backbone: Sapiens2, source: str | Path) -> None:
    """Loads the weights of a backbone checkpoint (a pretrain checkpoint, or a task checkpoint's
    backbone; file or hub id) into ``backbone``; the architectures must match exactly."""
    src = load_model(source)
    src = src.backbone if isinstance(src, TaskModel) else src
    if src.cfg != backbone.cfg:
        raise ValueError(
            f"--init {source} is a {src.cfg.name} backbone; the recipe pretrains {backbone.cfg.name}"
        )
    load_state_dict_strict(backbone, src.state_dict())
    logger.info("initialised the backbone from %s", source)


def build_networks(
    recipe: PretrainRecipe, init: str | Path | None = None
) -> tuple[Student, Teacher]:
    """Student and teacher on CPU, initialised from ``recipe.seed`` (identical on every rank),
    their backbones from ``init`` when given (the heads and decoder stay fresh)."""
    torch.manual_seed(recipe.seed)
    backbone = create_model(recipe.arch, device="cpu")
    assert isinstance(backbone, Sapiens2)
    if init is not None:
        init_backbone(backbone, init)
    distill = recipe.distill if recipe.loss.uses_distillation else None
    mae = recipe.mae if recipe.loss.mae > 0 else None
    student = Student(backbone, mae, distill).train()
    teacher = Teacher.from_student(student, distill).eval()
    return student, teacher


class Pretrainer:
    """Runs a pretraining recipe on image shards.

    Args:
        recipe: the recipe (with overrides applied).
        data: image-only shards (a folder of ``<split>-*.tar``, a ``.tar``) or an image folder.
        out: output folder (``recipe.json``, ``log.jsonl``, checkpoints, exported backbones).
        info: the process group info (default: :func:`init_distributed`).
        init: a backbone checkpoint (file or hub id) to start student and teacher from; a
            resumed checkpoint replaces it.
        device: ``cpu`` or ``cuda``; default the recipe's ``device`` (``auto``: cuda when
            available).
    """

    def __init__(
        self,
        recipe: PretrainRecipe,
        data: str | Path,
        out: str | Path,
        info: DistInfo | None = None,
        *,
        init: str | Path | None = None,
        device: str | None = None,
    ) -> None:
        self.recipe = recipe
        self.out = Path(out)
        device = device or (None if recipe.device == "auto" else recipe.device)
        self.info = info or init_distributed(device)
        if recipe.strategy == "single" and self.info.distributed:
            raise ValueError("strategy 'single' cannot run under torchrun; use --set strategy=ddp")
        self.device = self.info.device
        self.run = TrainingRun(
            self.out,
            self.info,
            kind="pretrain",
            recipe=recipe,
            samples_per_step=recipe.batch_size * self.info.world_size,
        )

        student, teacher = build_networks(recipe, init)
        seed_everything(recipe.seed, self.info.rank)
        self.stride = student.backbone.cfg.stride
        self.target_patch = student.target_patch
        if recipe.activation_checkpointing:
            student.set_grad_checkpointing(True)
        student.to(self.device)
        teacher.to(self.device)
        # ddp / fsdp2 in a single process (no torchrun) run as "single"
        strategy = recipe.strategy if self.info.distributed else "single"
        self.strategy = strategy
        bf16 = recipe.precision == "bf16"
        use_mp_policy = bf16 and strategy == "fsdp2"
        mp = {"param_dtype": torch.bfloat16, "reduce_dtype": torch.float32} if use_mp_policy else {}
        self.autocast = bf16 and not use_mp_policy
        self.student = wrap_model(student, strategy, self.info, **mp)
        if strategy == "fsdp2":  # sharded like the student, so the EMA pairs local shards
            self.teacher = wrap_model(teacher, "fsdp2", self.info, **mp)
        else:
            self.teacher = teacher
        self.state = nn.ModuleDict({"student": unwrap(self.student), "teacher": self.teacher})
        o = recipe.optim
        self.optimizer = torch.optim.AdamW(
            param_groups(unwrap(self.student), o.weight_decay), lr=o.lr, betas=o.betas
        )
        crop = MultiCrop(recipe.views, recipe.mask, self.stride)
        self.dataset = ImageDataset(data, recipe.split, transform=crop, seed=recipe.seed)
        self.loader = ResumableLoader(
            self.dataset,
            recipe.batch_size,
            shuffle=True,
            seed=recipe.seed,
            rank=self.info.rank,
            world_size=self.info.world_size,
            drop_last=True,
            num_workers=recipe.num_workers,
            collate_fn=collate_views,
        )
        check_enough_data(len(self.dataset), recipe.batch_size, self.info.world_size, str(data))
        self.step = 0

    @property
    def history(self) -> list[dict[str, float]]:
        """Every log row of this object's runs (``log_every`` apart)."""
        return self.run.history

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """One optimiser step and the teacher's EMA step.

        Returns:
            ``(terms, scalars)``: this rank's loss terms and the gradient norm as 0-dim tensors on
            the device (not synchronised), and the step's lr, teacher temperature and EMA momentum.
        """
        r = self.recipe
        dev = self.device
        g_views = batch["global"].to(dev, non_blocking=True)  # (B, G, 3, H, W)
        b, g = g_views.shape[:2]
        g_views = g_views.transpose(0, 1).reshape(g * b, *g_views.shape[2:])  # view-major
        mask = batch["mask"].transpose(0, 1).reshape(g * b, -1)
        keep_idx, masked_idx = mask_indices(mask)  # on the CPU: no device sync for its checks
        mask = mask.to(dev, non_blocking=True)
        keep_idx = keep_idx.to(dev, non_blocking=True)
        masked_idx = masked_idx.to(dev, non_blocking=True)
        l_views = None
        if r.loss.uses_distillation and batch["local"].shape[1]:
            lv = batch["local"].to(dev, non_blocking=True)
            l_views = lv.transpose(0, 1).reshape(-1, *lv.shape[2:])
        step = self.step
        lr = lr_at(step, r.optim, r.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        t_temp = teacher_temperature(step, r.distill)
        amp = torch.autocast(dev.type, dtype=torch.bfloat16) if self.autocast else nullcontext()
        with amp:
            s_out = self.student(g_views, keep_idx, masked_idx, l_views, with_pixels=r.loss.mae > 0)
            s_out = StudentOutput(*s_out)
            t_out = None
            if r.loss.distill > 0:
                t_out = self.teacher(g_views, masked_idx if r.distill.patch_loss else None)
                if hasattr(self.teacher, "reshard"):  # FSDP2 keeps the root unsharded after
                    self.teacher.reshard()  # forward (it expects a backward); the EMA needs shards
        total, terms = pretrain_losses(
            g_views,
            mask,
            g,
            s_out,
            t_out,
            unwrap(self.teacher),
            r.loss,
            r.distill,
            stride=self.stride,
            target_patch=self.target_patch,
            norm_pix=r.mae.norm_pix,
            teacher_temp=t_temp,
        )
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if step < r.distill.freeze_prototypes_steps:
            for name, param in self.student.named_parameters():
                if name.endswith("prototypes"):
                    param.grad = None  # AdamW skips it: no update, no weight decay
        grad_norm = clip_grad_norm(self.student.parameters(), r.optim.clip_grad)
        self.optimizer.step()
        momentum = ema_momentum(step, r.max_steps, r.distill)
        t_named = list(unwrap(self.teacher).named_parameters())
        names = {n for n, _ in t_named}
        s_named = [(n, p) for n, p in unwrap(self.student).named_parameters() if n in names]
        ema_update(t_named, s_named, momentum)
        self.step += 1
        return {**terms, "grad_norm": grad_norm}, {
            "lr": lr,
            "teacher_temp": t_temp,
            "ema": momentum,
        }

    # ------------------------------------------------------------------ loop
    def train(
        self, max_steps: int | None = None, resume: str | Path | None = "auto"
    ) -> list[dict[str, float]]:
        """Trains until ``max_steps`` (default the recipe's), saving every ``save_every`` steps and
        at the end. Returns this call's log rows (also appended to ``OUT/log.jsonl``).

        Args:
            max_steps: the step to stop at.
            resume: ``"auto"``: the newest complete checkpoint in ``OUT`` (if any); a checkpoint
                folder; None: none (an error if ``OUT`` holds checkpoints of another start).
                Only a fresh object resumes; a second call continues in memory.
        """
        r = self.recipe
        last = max_steps or r.max_steps
        if self.step == 0:
            manifest = self.run.resume_point(resume)
            if manifest is not None:
                self.step = self.run.restore(manifest, self.state, self.optimizer, self.loader)
                if self.step > last:
                    raise ValueError(f"{manifest.path} is past max_steps={last}: raise max_steps")
        first = len(self.run.history)
        self.run.start(self.step, last, f"pretrain {r.name}")
        t0 = time.perf_counter()
        try:
            out_of_time = False
            while self.step < last and not out_of_time:
                for batch in self.loader:
                    terms, scalars = self.train_step(batch)
                    self.run.window.add(terms)
                    row = self.run.end_step(self.step, scalars)
                    if self.step >= last:
                        break
                    self.run.maybe_save(self.step, self.state, self.optimizer, self.loader)
                    if row is not None and self._out_of_time(t0):
                        logger.info(
                            "time budget of %.1f min reached at step %d", r.max_minutes, self.step
                        )
                        out_of_time = True
                        break
            self.run.save(self.step, self.state, self.optimizer, self.loader)
        finally:
            self.run.close()
        return self.run.history[first:]

    def _out_of_time(self, t0: float) -> bool:
        if self.recipe.max_minutes <= 0:
            return False
        over = time.perf_counter() - t0 > 60 * self.recipe.max_minutes
        if self.info.distributed:  # every rank must stop at the same step
            flag = torch.tensor([float(over)], device=collective_device())
            over = bool(all_reduce_(flag, "max").item())
        return over

    # ------------------------------------------------------------------ export
    def export(self) -> tuple[Path, Path] | None:
        """Writes ``OUT/student.safetensors`` and ``OUT/teacher.safetensors`` (rank 0; every rank
        must call this). Returns the paths on rank 0, None elsewhere."""
        paths = []
        for which, module in (("student", self.student), ("teacher", self.teacher)):
            sd = full_model_state_dict(module)
            if not self.info.is_main:
                continue
            backbone = create_model(self.recipe.arch, device="cpu")
            prefix = "backbone."
            bsd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
            backbone.load_state_dict(bsd, strict=True)
            paths.append(save_model(backbone, self.out / f"{which}.safetensors"))
        return (paths[0], paths[1]) if paths else None

"""The pretraining loop: data, student/teacher, AdamW, EMA, sharded checkpoints, export.

One step: the multi-crop batch (2 global views with their masks, 4 local views) goes through the
student (visible tokens of the global views → MAE decoder and [CLS] head; local views → [CLS] head)
and the teacher (unmasked global views); the weighted objective is back-propagated, gradients are
clipped, AdamW steps, then the teacher takes an EMA step on its local shards.

Runs single-process (``python``) or under ``torchrun`` with ``ddp`` / ``fsdp2``. Checkpoints
(``OUT/checkpoints/step_XXXXXXXX``, DCP, sharded) hold student, teacher (with the centres),
optimizer, step, loader position and RNG states; a run restarted on the same ``OUT`` resumes from
the latest one and continues exactly. At the end ``OUT/student.safetensors`` and
``OUT/teacher.safetensors`` are written in the official pretrain layout (``load_model`` reads them).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sapiens2.checkpoints import save_model
from sapiens2.data.datasets import ImageDataset
from sapiens2.data.loader import ResumableLoader
from sapiens2.models import Sapiens2, create_model
from sapiens2.pretrain.distill import ema_momentum, ema_update, teacher_temperature
from sapiens2.pretrain.masking import mask_indices
from sapiens2.pretrain.networks import Student, StudentOutput, Teacher
from sapiens2.pretrain.objective import pretrain_losses
from sapiens2.pretrain.recipes import OptimConfig, PretrainRecipe
from sapiens2.pretrain.views import MultiCrop, collate_views
from sapiens2.train.distributed import (
    DistInfo,
    full_model_state_dict,
    init_distributed,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
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


def build_networks(recipe: PretrainRecipe) -> tuple[Student, Teacher]:
    """Student and teacher on CPU, initialised from ``recipe.seed`` (identical on every rank)."""
    torch.manual_seed(recipe.seed)
    backbone = create_model(recipe.arch, device="cpu")
    assert isinstance(backbone, Sapiens2)
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
        out: output folder (checkpoints, ``metrics.jsonl``, exported backbones).
        info: the process group info (default: :func:`init_distributed`).
    """

    def __init__(
        self,
        recipe: PretrainRecipe,
        data: str | Path,
        out: str | Path,
        info: DistInfo | None = None,
    ) -> None:
        self.recipe = recipe
        self.out = Path(out)
        device = None if recipe.device == "auto" else recipe.device
        self.info = info or init_distributed(device)
        if recipe.strategy == "single" and self.info.distributed:
            raise ValueError("strategy 'single' cannot run under torchrun; use --set strategy=ddp")
        self.device = self.info.device
        self.out.mkdir(parents=True, exist_ok=True)

        student, teacher = build_networks(recipe)
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
        if len(self.loader) == 0:
            raise ValueError(
                f"{data}: {len(self.dataset)} images are fewer than one global batch "
                f"({recipe.batch_size} x {self.info.world_size})"
            )
        self.step = 0
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ checkpoints
    @property
    def ckpt_root(self) -> Path:
        return self.out / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        done = sorted(p for p in self.ckpt_root.glob("step_*") if (p / "extra.json").is_file())
        return done[-1] if done else None

    def save(self) -> Path:
        path = self.ckpt_root / f"step_{self.step:08d}"
        extra = {
            "step": self.step,
            "loader": self.loader.state_dict(),
            "recipe": self.recipe.to_dict(),
        }
        save_checkpoint(path, self.state, self.optimizer, extra, rank_state=rng_state())
        if self.info.is_main:
            old = sorted(p for p in self.ckpt_root.glob("step_*") if p != path)
            for p in old[: max(0, len(old) - self.recipe.keep_checkpoints + 1)]:
                shutil.rmtree(p, ignore_errors=True)
        logger.info("saved checkpoint %s", path)
        return path

    def resume(self, path: Path | None = None) -> bool:
        """Loads ``path`` (default: the latest checkpoint in ``OUT``); False when there is none."""
        path = path or self.latest_checkpoint()
        if path is None:
            return False
        extra, rank_state = load_checkpoint(path, self.state, self.optimizer)
        self.step = int(extra["step"])
        self.loader.load_state_dict(extra["loader"])
        if rank_state is not None:
            set_rng_state(rank_state)
        logger.info("resumed from %s at step %d", path, self.step)
        return True

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        r = self.recipe
        dev = self.device
        g_views = batch["global"].to(dev, non_blocking=True)  # (B, G, 3, H, W)
        b, g = g_views.shape[:2]
        g_views = g_views.transpose(0, 1).reshape(g * b, *g_views.shape[2:])  # view-major
        mask = batch["mask"].to(dev).transpose(0, 1).reshape(g * b, -1)
        keep_idx, masked_idx = mask_indices(mask)
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
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in self.student.parameters() if p.grad is not None], r.optim.clip_grad
        )
        self.optimizer.step()
        momentum = ema_momentum(step, r.max_steps, r.distill)
        t_named = list(unwrap(self.teacher).named_parameters())
        names = {n for n, _ in t_named}
        s_named = [(n, p) for n, p in unwrap(self.student).named_parameters() if n in names]
        ema_update(t_named, s_named, momentum)
        self.step += 1
        # Losses averaged over ranks (each rank holds the mean of its share of the batch).
        keys = sorted(terms)
        vec = torch.stack([terms[k].float() for k in keys])
        if self.info.distributed:
            torch.distributed.all_reduce(vec, op=torch.distributed.ReduceOp.SUM)
            vec /= self.info.world_size
        gn = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        out = {k: float(v) for k, v in zip(keys, vec.tolist(), strict=True)}
        out.update(step=self.step, lr=lr, grad_norm=float(gn), teacher_temp=t_temp, ema=momentum)
        return out

    # ------------------------------------------------------------------ loop
    def train(self, max_steps: int | None = None, resume: bool = True) -> list[dict[str, float]]:
        """Trains until ``max_steps`` (default the recipe's), saving every ``save_every`` steps and
        at the end. Returns this call's per-step metrics (also appended to ``metrics.jsonl``)."""
        last = max_steps or self.recipe.max_steps
        if resume:
            self.resume()
        metrics_path = self.out / "metrics.jsonl"
        t0 = time.perf_counter()
        history: list[dict[str, float]] = []
        while self.step < last:
            for batch in self.loader:
                m = self.train_step(batch)
                m["time"] = time.perf_counter() - t0
                history.append(m)
                if self.info.is_main:
                    with metrics_path.open("a") as f:
                        f.write(json.dumps(m) + "\n")
                    if self.step % self.recipe.log_every == 0 or self.step == 1:
                        logger.info(
                            "step %d/%d %s",
                            self.step,
                            last,
                            " ".join(
                                f"{k}={m[k]:.4f}"
                                for k in ("loss", "mae", "distill", "koleo", "patch")
                                if k in m
                            ),
                        )
                if self.step % self.recipe.save_every == 0 and self.step < last:
                    self.save()
                if self.step >= last or self._out_of_time(t0):
                    break
            if self._out_of_time(t0):
                logger.info(
                    "time budget of %.1f min reached at step %d", self.recipe.max_minutes, self.step
                )
                break
        if self.latest_checkpoint() != self.ckpt_root / f"step_{self.step:08d}":
            self.save()
        self.history += history
        return history

    def _out_of_time(self, t0: float) -> bool:
        if self.recipe.max_minutes <= 0:
            return False
        over = time.perf_counter() - t0 > 60 * self.recipe.max_minutes
        if self.info.distributed:  # every rank must stop at the same step
            flag = torch.tensor([float(over)], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            over = bool(flag.item())
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

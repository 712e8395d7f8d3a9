"""Self-distillation (paper §2.3): projection head, teacher centering and temperatures, the
cross-view cross-entropy, KoLeo, an optional iBOT-style patch term, and the EMA teacher update.

The teacher is an exponential moving average of the student (momentum 0.992, optionally ramped to
1 with a cosine). It sees the unmasked global views; its [CLS] logits are centred (DINO centering,
momentum 0.9) and sharpened with a temperature warmed up from 0.065 to 0.07. The student's
[CLS] logits of the masked global views and of the local views are matched to the teacher's
distributions of the *other* global views (global↔global across views, global↔local), never a
view with itself. KoLeo spreads the student's global-view [CLS] embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from sapiens2.metrics.distributed import all_reduce_
from sapiens2.train.distributed import all_reduce_mean

__all__ = [
    "DistillConfig",
    "ProjectionHead",
    "TeacherCentering",
    "cross_view_loss",
    "ema_momentum",
    "ema_update",
    "gather_with_grad",
    "koleo_loss",
    "patch_distill_loss",
    "teacher_temperature",
]


@dataclass(frozen=True)
class DistillConfig:
    """The distillation branch.

    Args:
        num_prototypes: K, the head's output size (not given by the paper; DINOv3 uses 65,536).
        head_hidden, head_bottleneck, head_layers: the projection MLP (DINOv3: 2048, 256, 3).
        student_temp: 0.1. teacher_temp: 0.07, reached from ``teacher_temp_warmup`` (0.065)
            linearly over ``teacher_temp_warmup_steps`` (1000) steps.
        center_momentum: DINO centering momentum (0.9).
        ema_momentum: teacher EMA momentum (0.992); ``ema_momentum_end`` (None = constant) ramps it
            with a cosine to that value over the run (DINO's schedule uses 1.0).
        patch_loss: add the iBOT-style patch term (the paper is silent on it; off by default).
        patch_weight: its weight relative to the [CLS] term.
        koleo_scope: ``"global"`` computes KoLeo over the whole batch of all ranks (so a run
            matches a single process on the same global batch); ``"local"`` per rank (DINOv2).
        freeze_prototypes_steps: the student's prototypes get no updates for this many first
            steps (DINO's "freeze last layer"; the paper is silent; 0 = never frozen). Without
            it a small run can fall into a uniform fixed point: while the centred teacher is
            still uniform, the student matches it by turning its prototypes orthogonal to its
            embeddings, the teacher follows, and the contrastive term stays at log K.
    """

    num_prototypes: int = 65536
    head_hidden: int = 2048
    head_bottleneck: int = 256
    head_layers: int = 3
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    teacher_temp_warmup: float = 0.065
    teacher_temp_warmup_steps: int = 1000
    center_momentum: float = 0.9
    ema_momentum: float = 0.992
    ema_momentum_end: float | None = None
    patch_loss: bool = False
    patch_weight: float = 1.0
    koleo_scope: str = "global"
    freeze_prototypes_steps: int = 0

    def __post_init__(self) -> None:
        if self.num_prototypes < 2:
            raise ValueError(f"num_prototypes must be >= 2, got {self.num_prototypes}")
        if self.head_layers < 1:
            raise ValueError(f"head_layers must be >= 1, got {self.head_layers}")
        for name in ("student_temp", "teacher_temp", "teacher_temp_warmup"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("center_momentum", "ema_momentum"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.ema_momentum_end is not None and not 0.0 <= self.ema_momentum_end <= 1.0:
            raise ValueError(f"ema_momentum_end must be in [0, 1], got {self.ema_momentum_end}")
        if self.freeze_prototypes_steps < 0:
            raise ValueError(
                f"freeze_prototypes_steps must be >= 0, got {self.freeze_prototypes_steps}"
            )
        if self.koleo_scope not in ("global", "local"):
            raise ValueError(f"koleo_scope must be 'global' or 'local', got {self.koleo_scope!r}")


# --------------------------------------------------------------------------------------------------
# Schedules


def teacher_temperature(step: int, cfg: DistillConfig) -> float:
    """Linear warm-up ``teacher_temp_warmup -> teacher_temp`` over the warm-up steps, then flat."""
    if step >= cfg.teacher_temp_warmup_steps:
        return cfg.teacher_temp
    t = step / max(1, cfg.teacher_temp_warmup_steps)
    return cfg.teacher_temp_warmup + t * (cfg.teacher_temp - cfg.teacher_temp_warmup)


def ema_momentum(step: int, total_steps: int, cfg: DistillConfig) -> float:
    """``ema_momentum``, or a cosine ramp from it to ``ema_momentum_end`` over ``total_steps``."""
    if cfg.ema_momentum_end is None:
        return cfg.ema_momentum
    t = min(1.0, step / max(1, total_steps))
    m0, m1 = cfg.ema_momentum, cfg.ema_momentum_end
    return m1 - (m1 - m0) * (math.cos(math.pi * t) + 1) / 2


# --------------------------------------------------------------------------------------------------
# Modules


class ProjectionHead(nn.Module):
    """DINO-style head: MLP (GELU) to a bottleneck, L2 normalisation, then K prototypes.

    The prototype matrix is L2-normalised per row in the forward pass (a weight-normalised linear
    layer with unit gain, as DINO), so the logits are cosine similarities.

    Args:
        in_dim: backbone width. cfg: sizes.
    """

    def __init__(self, in_dim: int, cfg: DistillConfig) -> None:
        super().__init__()
        dims = [in_dim] + [cfg.head_hidden] * (cfg.head_layers - 1) + [cfg.head_bottleneck]
        layers: list[nn.Module] = []
        for i in range(cfg.head_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < cfg.head_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.prototypes = nn.Parameter(torch.empty(cfg.num_prototypes, cfg.head_bottleneck))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_dim)`` -> ``(..., K)`` logits."""
        z = F.normalize(self.mlp(x).float(), dim=-1, eps=1e-6)
        return z @ F.normalize(self.prototypes.float(), dim=-1, eps=1e-6).t()


class TeacherCentering(nn.Module):
    """DINO centering: ``softmax((t - c) / tau)``; ``c <- m c + (1 - m) mean(t)`` (mean over the
    whole batch of every rank). The first update sets ``c = mean(t)`` (our choice: a zero centre
    would let the logits' common component sharpen the first teacher targets artificially). The
    centre and its "started" flag are persistent buffers (saved in checkpoints)."""

    def __init__(self, num_prototypes: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, num_prototypes))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def forward(self, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """Teacher probabilities ``(..., K)`` with the current centre (then call :meth:`update`)."""
        return F.softmax((teacher_logits.float() - self.center) / temperature, dim=-1)

    @torch.no_grad()
    def update(self, teacher_logits: torch.Tensor) -> None:
        """Moves the centre towards the mean logits ``teacher_logits (M, K)`` of all ranks."""
        mean = teacher_logits.float().reshape(-1, teacher_logits.shape[-1]).mean(0, keepdim=True)
        mean = all_reduce_mean(mean).to(mean.device)
        if bool(self.started):
            self.center.mul_(self.momentum).add_(mean, alpha=1 - self.momentum)
        else:
            self.center.copy_(mean)
            self.started.fill_(True)


# --------------------------------------------------------------------------------------------------
# Losses


def cross_view_loss(
    student_global: torch.Tensor,
    student_local: torch.Tensor | None,
    teacher_probs: torch.Tensor,
    student_temp: float,
) -> torch.Tensor:
    """Mean teacher→student cross-entropy over the positive pairs of the paper.

    Pairs: student global ``i`` with teacher global ``j != i``, and every student local view with
    every teacher global view; with 2 global and 4 local views that is 2 + 8 = 10 pairs. Each pair
    is averaged over the batch, then pairs are averaged.

    Args:
        student_global: ``(G, B, K)`` student logits of the (masked) global views.
        student_local: ``(L, B, K)`` student logits of the local views, or None.
        teacher_probs: ``(G, B, K)`` centred, sharpened teacher probabilities.
        student_temp: student temperature.
    """
    g = student_global.shape[0]
    if teacher_probs.shape != student_global.shape:
        raise ValueError(
            f"teacher {tuple(teacher_probs.shape)} and student {tuple(student_global.shape)} global logits differ"
        )
    logp_g = F.log_softmax(student_global.float() / student_temp, dim=-1)
    total = student_global.new_zeros((), dtype=torch.float32)
    pairs = 0
    for i in range(g):
        for j in range(g):
            if i != j:
                total = total - (teacher_probs[j] * logp_g[i]).sum(-1).mean()
                pairs += 1
    if student_local is not None and student_local.shape[0]:
        logp_l = F.log_softmax(student_local.float() / student_temp, dim=-1)
        for j in range(g):
            # (L, B, K) x (B, K): mean over batch, summed over locals
            total = total - (teacher_probs[j][None] * logp_l).sum(-1).mean(1).sum()
            pairs += logp_l.shape[0]
    if pairs == 0:
        raise ValueError("cross_view_loss needs two global views or at least one local view")
    return total / pairs


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        ctx.rank, ctx.n = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        all_reduce_(grad, "sum")  # every rank's loss depends on our rows
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` -> ``(world * B, ...)`` rows of all ranks (rank order), differentiable.

    Every rank computes the same loss on the gathered rows; the backward sums the gradient of all
    ranks' copies, and data-parallel gradient averaging then divides by the world size, so the
    result equals one process computing the loss on the whole batch. Identity single-process.
    """
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return x
    return _GatherWithGrad.apply(x)


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko–Leonenko entropy regulariser: ``-mean_i log(min_{j != i} ||x̂_i - x̂_j||)``.

    Args:
        x: ``(B, D)`` embeddings (L2-normalised here), B >= 2.
    """
    if x.shape[0] < 2:
        raise ValueError(f"KoLeo needs at least 2 samples, got a batch of {x.shape[0]}")
    z = F.normalize(x.float(), dim=-1, eps=1e-8)
    with torch.no_grad():
        sim = z @ z.t()
        sim.fill_diagonal_(-2.0)
        nn_idx = sim.argmax(dim=1)
    dist_nn = (z - z[nn_idx]).norm(dim=-1)
    return -torch.log(dist_nn + eps).mean()


def patch_distill_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    student_temp: float,
) -> torch.Tensor:
    """iBOT-style patch term: cross-entropy between teacher patch distributions and the student's
    predictions at the same hidden positions, averaged over those positions.

    Args:
        student_logits: ``(M, K)`` student patch logits at the hidden positions.
        teacher_probs: ``(M, K)`` centred, sharpened teacher patch probabilities there.
    """
    logp = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    return -(teacher_probs * logp).sum(-1).mean()


# --------------------------------------------------------------------------------------------------
# EMA


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (FSDP2 parameter), else the tensor itself."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


@torch.no_grad()
def ema_update(
    teacher: Iterable[tuple[str, torch.Tensor]],
    student: Iterable[tuple[str, torch.Tensor]],
    momentum: float,
) -> None:
    """``t <- m t + (1 - m) s`` for every matching pair of named parameters, on local shards.

    Under FSDP2 both models are sharded the same way, so each rank updates only its own shards (no
    communication). Names must match one to one (a mismatch is an error naming the keys).
    """
    t_params = dict(teacher)
    s_params = dict(student)
    if t_params.keys() != s_params.keys():
        missing = sorted(set(s_params) ^ set(t_params))[:8]
        raise KeyError(f"teacher and student parameters differ: {missing}")
    ts, ss = [], []
    for name, tp in t_params.items():
        tl, sl = _local(tp), _local(s_params[name])
        if tl.shape != sl.shape:
            raise ValueError(
                f"parameter {name}: teacher shard {tuple(tl.shape)} != student shard {tuple(sl.shape)}"
            )
        ts.append(tl)
        ss.append(sl.detach().to(tl.dtype))
    if ts:
        torch._foreach_mul_(ts, momentum)
        torch._foreach_add_(ts, ss, alpha=1.0 - momentum)

"""The unified objective (paper §2.1): ``1.0 * MAE + 0.4 * contrastive + 0.04 * KoLeo``.

Each weight may be 0 for ablations (MAE only, distillation only, both). The contrastive term is the
[CLS] cross-view cross-entropy, plus ``patch_weight`` times the iBOT-style patch term when enabled.
KoLeo is weighted as the reference code does (``dinov3/train/ssl_meta_arch.py``, and DINOv2's
``dinov2/train/ssl_meta_arch.py``): ``weight × Σ over the G global views`` of the per-view KoLeo,
i.e. ``G × weight ×`` the view mean that is logged as ``"koleo"``; ``LossWeights.koleo_view_mean``
weights the mean instead (half as much with two global views, our earlier behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sapiens2.pretrain.distill import (
    DistillConfig,
    cross_view_loss,
    gather_with_grad,
    koleo_loss,
    patch_distill_loss,
)
from sapiens2.pretrain.mae import mae_loss, mae_targets
from sapiens2.pretrain.networks import StudentOutput, Teacher, TeacherOutput

__all__ = ["LossWeights", "pretrain_losses"]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three terms (paper A.1.1); 0 switches a branch off entirely.

    Attributes:
        mae, distill, koleo: the term weights.
        koleo_view_mean: off (the reference): the total gets ``koleo × Σ_views KoLeo(view)``; on
            (our deviation, the behaviour before): ``koleo × mean_views KoLeo(view)``.
    """

    mae: float = 1.0
    distill: float = 0.4
    koleo: float = 0.04
    koleo_view_mean: bool = False

    def __post_init__(self) -> None:
        for name in ("mae", "distill", "koleo"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss weight {name} must be >= 0, got {getattr(self, name)}")
        if self.mae == 0 and self.distill == 0 and self.koleo == 0:
            raise ValueError("all loss weights are 0: nothing to train")

    @property
    def uses_distillation(self) -> bool:
        """The teacher, head and multi-crop are needed (contrastive or KoLeo on)."""
        return self.distill > 0 or self.koleo > 0


def pretrain_losses(
    global_views: torch.Tensor,
    mask: torch.Tensor,
    num_global: int,
    student: StudentOutput,
    teacher_out: TeacherOutput | None,
    teacher: Teacher | None,
    weights: LossWeights,
    distill: DistillConfig,
    *,
    stride: int,
    target_patch: int,
    norm_pix: bool,
    teacher_temp: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted total and each term (detached) of one step; updates the teacher centres.

    Args:
        global_views: ``(V, 3, H, W)`` the global crops (V = G * B, view-major), for the targets.
        mask: ``(V, N)`` bool, True = hidden.
        num_global: G.
        student, teacher_out: the networks' outputs; teacher: holds the centering buffers.
        weights, distill: the configuration.
        stride, target_patch, norm_pix: reconstruction target settings.
        teacher_temp: the teacher temperature of this step.

    Returns:
        ``(total, {"loss", "mae", "distill", "koleo", "patch"})`` (terms that are off are absent;
        ``"koleo"`` is the unweighted mean over the global views, as DINOv3 logs it).
    """
    terms: dict[str, torch.Tensor] = {}
    total = global_views.new_zeros((), dtype=torch.float32)
    if weights.mae > 0:
        if student.pred is None:
            raise RuntimeError("MAE weight > 0 but the student has no decoder")
        target = mae_targets(global_views, stride, target_patch, norm_pix)
        terms["mae"] = mae_loss(student.pred, target, mask)
        total = total + weights.mae * terms["mae"]
    if weights.uses_distillation:
        assert student.logits_global is not None
        g = num_global
        v, k = student.logits_global.shape
        b = v // g
        if weights.distill > 0:
            if teacher_out is None or teacher is None or teacher.center is None:
                raise RuntimeError("the contrastive term is on but there is no teacher output")
            if not bool(teacher.center.started):  # start the centre on the first batch
                teacher.center.update(teacher_out.logits_global)
            probs = teacher.center(teacher_out.logits_global.view(g, b, k), teacher_temp)
            local = (
                student.logits_local.view(-1, b, k) if student.logits_local is not None else None
            )
            terms["distill"] = cross_view_loss(
                student.logits_global.view(g, b, k), local, probs, distill.student_temp
            )
            contrastive = terms["distill"]
            if distill.patch_loss:
                if student.patch_logits is None or teacher_out.patch_logits is None:
                    raise RuntimeError("patch_loss is on but the patch logits are missing")
                assert teacher.patch_center is not None
                if not bool(teacher.patch_center.started):
                    teacher.patch_center.update(teacher_out.patch_logits)
                pprobs = teacher.patch_center(teacher_out.patch_logits, teacher_temp)
                terms["patch"] = patch_distill_loss(
                    student.patch_logits.reshape(-1, k), pprobs.reshape(-1, k), distill.student_temp
                )
                teacher.patch_center.update(teacher_out.patch_logits)
                contrastive = contrastive + distill.patch_weight * terms["patch"]
            total = total + weights.distill * contrastive
            teacher.center.update(teacher_out.logits_global)
        if weights.koleo > 0:
            cls = student.cls_global.view(g, b, -1)
            per_view = []
            for i in range(g):
                x = gather_with_grad(cls[i]) if distill.koleo_scope == "global" else cls[i]
                per_view.append(koleo_loss(x))
            terms["koleo"] = torch.stack(per_view).mean()
            views = 1 if weights.koleo_view_mean else g  # Σ over views = g × the mean
            total = total + weights.koleo * views * terms["koleo"]
    out = {name: t.detach() for name, t in terms.items()}
    out["loss"] = total.detach()
    return total, out

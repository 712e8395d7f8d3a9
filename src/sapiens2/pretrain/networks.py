"""The student and the teacher networks of pretraining.

Each is one ``nn.Module`` whose single ``forward`` runs every sub-network it needs, so that FSDP2's
root hooks (which gather the root-level parameters) fire once per step. The teacher holds the same
backbone and projection head(s) as the student, under the same parameter names (the EMA pairs
parameters by name), plus the centering buffers.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import nn

from sapiens2.models import Sapiens2
from sapiens2.pretrain.distill import DistillConfig, ProjectionHead, TeacherCentering
from sapiens2.pretrain.mae import MAEConfig, MAEDecoder

__all__ = ["Student", "StudentOutput", "Teacher", "TeacherOutput"]


class StudentOutput(NamedTuple):
    """Student outputs for one step (V = G * B global views, view-major). A NamedTuple so that
    FSDP2 finds the output tensors (it registers backward hooks on them)."""

    pred: torch.Tensor | None  # (V, N, P) pixel predictions of every token
    cls_global: torch.Tensor  # (V, D) final-norm [CLS] of the masked global views
    logits_global: torch.Tensor | None  # (V, K)
    logits_local: torch.Tensor | None  # (L*B, K)
    patch_logits: torch.Tensor | None  # (V, M, K) at the hidden positions


class TeacherOutput(NamedTuple):
    logits_global: torch.Tensor  # (V, K) [CLS] logits of the unmasked global views
    patch_logits: torch.Tensor | None  # (V, M, K) at the student's hidden positions


class Student(nn.Module):
    """Backbone on visible tokens, MAE decoder, [CLS] projection head, optional patch head.

    Args:
        backbone: a :class:`~sapiens2.models.Sapiens2`.
        mae: decoder settings, or None for no reconstruction branch.
        distill: head settings, or None for no distillation branch.
    """

    def __init__(
        self, backbone: Sapiens2, mae: MAEConfig | None, distill: DistillConfig | None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        cfg = backbone.cfg
        self.stride = cfg.stride
        patch_loss = distill is not None and distill.patch_loss
        self.decoder: MAEDecoder | None = None
        self.target_patch = self.stride
        if patch_loss and mae is None:
            raise ValueError("the patch distillation term needs the MAE decoder (mae config)")
        if mae is not None:
            self.target_patch = mae.target_patch(self.stride)
            out_dim = self.target_patch**2 * cfg.in_channels
            self.decoder = MAEDecoder(cfg.embed_dim, cfg.num_prefix_tokens, out_dim, mae)
        self.head = ProjectionHead(cfg.embed_dim, distill) if distill is not None else None
        self.patch_head = ProjectionHead(cfg.embed_dim, distill) if patch_loss else None
        self.patch_proj = nn.Linear(mae.decoder_dim, cfg.embed_dim) if patch_loss else None

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)
        if self.decoder is not None:
            self.decoder.grad_checkpointing = enable

    def forward(
        self,
        global_views: torch.Tensor,
        keep_idx: torch.Tensor,
        masked_idx: torch.Tensor,
        local_views: torch.Tensor | None = None,
        *,
        with_pixels: bool = True,
    ) -> StudentOutput:
        """One student pass.

        Args:
            global_views: ``(V, 3, H, W)`` normalised global crops.
            keep_idx, masked_idx: ``(V, K)`` / ``(V, M)`` visible / hidden token indices.
            local_views: ``(L*B, 3, h, w)`` local crops (unmasked), or None.
            with_pixels: run the MAE decoder's pixel prediction.
        """
        h, w = global_views.shape[-2:]
        grid = (h // self.stride, w // self.stride)
        tokens = self.backbone.forward_masked(global_views, keep_idx)  # (V, P + K, D)
        cls = tokens[:, 0]
        pred = patch_logits = None
        if self.decoder is not None and (with_pixels or self.patch_head is not None):
            pred, hidden = self.decoder(tokens, keep_idx, grid, return_hidden=True)
            if self.patch_head is not None:
                assert self.patch_proj is not None
                d = hidden.shape[-1]
                at_masked = hidden.gather(1, masked_idx[..., None].expand(-1, -1, d))
                patch_logits = self.patch_head(self.patch_proj(at_masked))
        logits_g = logits_l = None
        if self.head is not None:
            logits_g = self.head(cls)
            if local_views is not None and local_views.shape[0]:
                local_cls = self.backbone.forward_features(local_views)[:, 0]
                logits_l = self.head(local_cls)
        return StudentOutput(pred, cls, logits_g, logits_l, patch_logits)


class Teacher(nn.Module):
    """EMA copy of the student's backbone and heads (no decoder), with the centering buffers.

    Built from a student with :meth:`from_student`; its parameters never get gradients.
    """

    def __init__(
        self,
        backbone: Sapiens2,
        head: ProjectionHead | None,
        patch_head: ProjectionHead | None,
        distill: DistillConfig | None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.patch_head = patch_head
        momentum = distill.center_momentum if distill is not None else 0.9
        k = distill.num_prototypes if distill is not None else 1
        self.center = TeacherCentering(k, momentum) if head is not None else None
        self.patch_center = TeacherCentering(k, momentum) if patch_head is not None else None
        for p in self.parameters():
            p.requires_grad_(False)

    @classmethod
    def from_student(cls, student: Student, distill: DistillConfig | None) -> Teacher:
        """A teacher initialised as an exact copy of the student's backbone and heads."""
        return cls(
            copy.deepcopy(student.backbone),
            copy.deepcopy(student.head),
            copy.deepcopy(student.patch_head),
            distill,
        )

    @torch.no_grad()
    def forward(
        self, global_views: torch.Tensor, masked_idx: torch.Tensor | None = None
    ) -> TeacherOutput:
        """[CLS] logits ``(V, K)`` of unmasked global views (and patch logits at ``masked_idx``)."""
        if self.head is None:
            raise RuntimeError("the teacher has no projection head (distillation is off)")
        tokens = self.backbone.forward_features(global_views)
        logits = self.head(tokens[:, 0])
        patch_logits = None
        if self.patch_head is not None and masked_idx is not None:
            patches = tokens[:, self.backbone.num_prefix_tokens :]
            d = patches.shape[-1]
            at_masked = patches.gather(1, masked_idx[..., None].expand(-1, -1, d))
            patch_logits = self.patch_head(at_masked)
        return TeacherOutput(logits, patch_logits)

"""Optimiser and schedule of the recipes: AdamW with layer-wise lr decay, linear warm-up then
polynomial decay, global-norm gradient clipping, following the official configs and
``_generate_param_groups`` in ``sapiens/engine/runners/base_runner.py`` (no fixture test)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

_BLOCK = re.compile(r"(?:^|\.)backbone\.blocks\.(\d+)\.")
_EMBED = ("cls_token", "storage_tokens", "mask_token", "pos_embed", "patch_embed.", "tokenizer.")


def layer_id(name: str, depth: int) -> int:
    """0 for embeddings and special tokens, ``i + 1`` for block ``i``, ``depth + 1`` otherwise
    (final norm and the decode head)."""
    m = _BLOCK.search(name)
    if m:
        return int(m.group(1)) + 1
    inner = name.split("backbone.", 1)[1] if "backbone." in name else None
    if inner is not None and inner.startswith(_EMBED):
        return 0
    return depth + 1


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """No decay for 1-D parameters, biases and positional embeddings (the rule of
    ``_generate_param_groups`` in ``sapiens/engine/runners/base_runner.py``)."""
    return param.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name


def param_groups(
    model: nn.Module, *, lr: float, weight_decay: float, layer_decay: float, depth: int
) -> list[dict]:
    """AdamW groups keyed by (lr scale, decay): block ``i`` gets ``layer_decay**(depth - i)``,
    embeddings ``layer_decay**(depth + 1)``, head and final norm 1."""
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = layer_id(name, depth)
        decay = not no_weight_decay(name, p)
        g = groups.setdefault(
            (lid, decay),
            {
                "params": [],
                "names": [],
                "lr_scale": layer_decay ** (depth + 1 - lid),
                "weight_decay": weight_decay if decay else 0.0,
            },
        )
        g["params"].append(p)
        g["names"].append(name)
    out = [groups[k] for k in sorted(groups)]
    for g in out:
        g["lr"] = lr * g["lr_scale"]
    return out


@dataclass(frozen=True)
class Schedule:
    """Linear warm-up from ``start_factor`` over ``warmup_steps``, then ``(1 - t)**power`` decay to
    0 at ``total_steps`` (the official SequentialLR of LinearLR and PolynomialLR)."""

    total_steps: int
    warmup_steps: int = 500
    start_factor: float = 1e-3
    power: float = 1.0
    kind: str = "poly"  # "poly" or "cosine"

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.start_factor + (1 - self.start_factor) * step / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        if self.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        return (1 - t) ** self.power


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
    for g in optimizer.param_groups:
        g["lr"] = base_lr * g.get("lr_scale", 1.0) * factor
    return base_lr * factor

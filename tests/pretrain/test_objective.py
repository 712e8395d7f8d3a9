"""The KoLeo weighting of the pretraining objective against a hand computation of the reference.

DINOv2 / DINOv3 (``ssl_meta_arch.py``) add ``weight × Σ_{global views} KoLeo(view)`` to the loss,
where ``KoLeo(x) = -mean_i log(min_{j≠i} ||x̂_i - x̂_j||)`` on L2-normalised rows; the code before
weighted the view mean (half of it with two global views), now ``koleo_view_mean=True``.
"""

from __future__ import annotations

import math

import pytest
import torch

from sapiens2.pretrain.distill import DistillConfig
from sapiens2.pretrain.networks import StudentOutput
from sapiens2.pretrain.objective import LossWeights, pretrain_losses
from sapiens2.pretrain.recipes import get_recipe

D = torch.float64


def _koleo_by_hand(rows: list[list[float]]) -> float:
    """KoLeo of a few vectors with explicit loops (no torch)."""
    unit = [[v / math.sqrt(sum(c * c for c in r)) for v in r] for r in rows]
    total = 0.0
    for i, a in enumerate(unit):
        nearest = min(
            math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))
            for j, b in enumerate(unit)
            if j != i
        )
        total += -math.log(nearest + 1e-8)
    return total / len(unit)


def _koleo_only(cls: torch.Tensor, g: int, weights: LossWeights):
    v = cls.shape[0]
    student = StudentOutput(
        pred=None,
        cls_global=cls,
        logits_global=torch.zeros(v, 4, dtype=cls.dtype),
        logits_local=None,
        patch_logits=None,
    )
    return pretrain_losses(
        torch.zeros(v, 3, 4, 4),
        torch.zeros(v, 1, dtype=torch.bool),
        g,
        student,
        None,
        None,
        weights,
        DistillConfig(koleo_scope="local"),
        stride=4,
        target_patch=4,
        norm_pix=False,
        teacher_temp=0.07,
    )


def test_koleo_is_weighted_as_the_reference_sum_over_global_views():
    # two global views of a batch of three, view-major rows (view 0: rows 0-2, view 1: rows 3-5)
    rows = [
        [1.0, 0.0, 0.0],
        [0.9, 0.3, 0.0],
        [0.0, 1.0, 0.2],
        [0.2, -1.0, 0.5],
        [0.0, 0.0, 1.0],
        [-1.0, 0.4, 0.1],
    ]
    per_view = [_koleo_by_hand(rows[:3]), _koleo_by_hand(rows[3:])]
    cls = torch.tensor(rows, dtype=D)
    w = 0.04
    total, terms = _koleo_only(cls, 2, LossWeights(mae=0, distill=0, koleo=w))
    assert float(terms["koleo"]) == pytest.approx(sum(per_view) / 2, rel=1e-6)  # logged: the mean
    assert float(total) == pytest.approx(w * sum(per_view), rel=1e-6)  # reference: w × Σ views
    old, _ = _koleo_only(cls, 2, LossWeights(mae=0, distill=0, koleo=w, koleo_view_mean=True))
    assert float(old) == pytest.approx(w * sum(per_view) / 2, rel=1e-6)
    # the gradient scales the same way
    a = cls.clone().requires_grad_(True)
    _koleo_only(a, 2, LossWeights(mae=0, distill=0, koleo=w))[0].backward()
    b = cls.clone().requires_grad_(True)
    _koleo_only(b, 2, LossWeights(mae=0, distill=0, koleo=w, koleo_view_mean=True))[0].backward()
    torch.testing.assert_close(a.grad, 2 * b.grad, rtol=1e-12, atol=0)


def test_recipe_default_is_the_reference_weighting():
    r = get_recipe("tiny")
    assert r.loss.koleo == 0.04 and not r.loss.koleo_view_mean
    assert get_recipe("tiny", ["loss.koleo_view_mean=true"]).loss.koleo_view_mean

"""Training losses of the five tasks: the terms of the official loss modules
(``sapiens/pose/src/models/losses/``, ``sapiens/dense/src/models/losses/``) with the weights of the
1B task configs.

By default every term equals the official code's on its own seeded inputs
(``tests/fixtures/official/losses.*``, ``tests/train/test_losses_official.py``); our deviations are
named options, off by default (docs/training.md). The matting loss (``matting.py``) is our choice:
no official matting training code was released. Each task module has plain functions for the
individual terms and a composite ``<Task>Loss`` module configured by a frozen ``<Task>LossWeights``
dataclass (the official weights are the defaults). ``<Task>Loss()(pred, batch)`` returns a dict
of the weighted terms plus ``"loss"``, their sum; ``batch`` is a collated item dict of the matching
``sapiens2.data.datasets`` dataset.
"""

from __future__ import annotations

from torch import nn

from sapiens2.train.losses.albedo import AlbedoLoss, AlbedoLossWeights
from sapiens2.train.losses.matting import MattingLoss, MattingLossWeights
from sapiens2.train.losses.normal import NormalLoss, NormalLossWeights
from sapiens2.train.losses.pointmap import PointmapLoss, PointmapLossWeights
from sapiens2.train.losses.pose import PoseLoss, PoseLossWeights
from sapiens2.train.losses.seg import SegLoss, SegLossWeights

__all__ = [
    "AlbedoLoss",
    "AlbedoLossWeights",
    "MattingLoss",
    "MattingLossWeights",
    "NormalLoss",
    "NormalLossWeights",
    "PointmapLoss",
    "PointmapLossWeights",
    "PoseLoss",
    "PoseLossWeights",
    "SegLoss",
    "SegLossWeights",
    "create_loss",
]

LossWeights = (
    PoseLossWeights | SegLossWeights | NormalLossWeights | PointmapLossWeights | AlbedoLossWeights
)


def create_loss(task: str, weights: LossWeights | None = None) -> nn.Module:
    """The composite loss of ``task`` ("pose", "seg", "normal", "pointmap" or "albedo").

    Args:
        task: task name.
        weights: that task's ``<Task>LossWeights``; None for the official weights.
    """
    classes: dict[str, tuple[type[nn.Module], type]] = {
        "pose": (PoseLoss, PoseLossWeights),
        "seg": (SegLoss, SegLossWeights),
        "normal": (NormalLoss, NormalLossWeights),
        "pointmap": (PointmapLoss, PointmapLossWeights),
        "albedo": (AlbedoLoss, AlbedoLossWeights),
    }
    if task not in classes:
        raise ValueError(f"unknown task {task!r}; expected pose, seg, normal, pointmap or albedo")
    loss_cls, weights_cls = classes[task]
    if weights is not None and not isinstance(weights, weights_cls):
        raise TypeError(f"a {task} loss needs {weights_cls.__name__}, got {type(weights).__name__}")
    return loss_cls(weights)

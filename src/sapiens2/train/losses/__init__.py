"""Training losses of the tasks: the terms of the official loss modules
(``sapiens/pose/src/models/losses/``, ``sapiens/dense/src/models/losses/``) with the weights of the
1B task configs.

By default every term equals the official code's on its own seeded inputs
(``tests/fixtures/official/losses.*``, ``tests/train/test_losses_official.py``); our deviations are
named options, off by default (docs/training.md). The matting loss (``matting.py``) is our choice:
no official matting training code was released. Each task module has plain functions for the
individual terms and a composite ``<Task>Loss`` module configured by a frozen ``<Task>LossWeights``
dataclass (the official weights are the defaults). ``<Task>Loss()(pred, batch)`` returns a dict
of the weighted terms plus ``"loss"``, their sum; ``batch`` is a collated item dict of the matching
``sapiens2.data.datasets`` dataset. Which loss a task uses is its task module's choice
(``sapiens2.tasks.create_loss(task, weights)``).
"""

from __future__ import annotations

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
]

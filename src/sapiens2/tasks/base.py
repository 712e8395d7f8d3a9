"""The typed description of one task (:class:`TaskSpec`) and what its parts share.

A task module (``sapiens2/tasks/<task>.py``) builds one :class:`TaskSpec` from pieces of the lower
layers: the head (:mod:`sapiens2.models.heads`), the inference runner
(:mod:`sapiens2.inference.runners`), the outputs writer (:mod:`sapiens2.inference.outputs`), the
result type, the dataset (:mod:`sapiens2.data.datasets`), the metric (:mod:`sapiens2.metrics`), the
loss (:mod:`sapiens2.train.losses`), and its recipe defaults. :meth:`TaskSpec.register` hands the
head, runner and outputs to the small tables of those lower layers, which look them up by name
and never import this package.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sapiens2.data import datasets as D
from sapiens2.inference.outputs import Outputs, register_outputs
from sapiens2.inference.runners import Runner, register_runner
from sapiens2.models.task import HeadSpec, register_head

if TYPE_CHECKING:
    from sapiens2.train.recipes import Recipe

_MEAN = torch.tensor(D.IMAGE_MEAN).view(3, 1, 1)
_STD = torch.tensor(D.IMAGE_STD).view(3, 1, 1)


def denormalize(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) normalised -> (H, W, 3) uint8 RGB."""
    x = image.detach().float().cpu() * _STD + _MEAN
    return x.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()


def resize_like(pred: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) predictions to ``hw`` (a 2K head on 4K inputs, etc.)."""
    if tuple(pred.shape[-2:]) == tuple(hw):
        return pred
    return F.interpolate(pred.float(), size=hw, mode="bilinear", align_corners=False)


def fit_panel(panel: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``panel`` resized (nearest) to the size of ``like``."""
    import cv2

    h, w = like.shape[:2]
    if panel.shape[:2] == (h, w):
        return panel
    return cv2.resize(panel, (w, h), interpolation=cv2.INTER_NEAREST)


class TaskAdapter:
    """What evaluation needs of a task: its dataset, its raw prediction, its metric and the
    panels of a validation picture (``sapiens2.evaluation.evaluate`` and the trainer use it).

    Args:
        flip_test: pose: average with the flipped input's heatmaps.
        sigma: pose: heatmap Gaussian sigma in heatmap pixels (0 = the official, scaled).
        pointmap_normal_full_window: pointmap: score the pointmap normals only where the whole
            5×5 Sobel window is valid (``PointmapMetric(normal_full_window=True)``, a deviation;
            False = every valid pixel, official).
    """

    task = ""
    dataset_cls: type = D.SegDataset
    primary_metric = ""
    higher_is_better = True

    def __init__(
        self, flip_test: bool = True, sigma: float = 0.0, pointmap_normal_full_window: bool = False
    ) -> None:
        self.flip_test = flip_test
        self.sigma = sigma
        self.pointmap_normal_full_window = pointmap_normal_full_window

    def dataset(self, data, split: str, train: bool, input_size, seed: int, augment: bool = True):
        """``train`` selects the training behaviour (dropping unusable samples); ``augment`` the
        official training augmentations (else the deterministic eval pipeline)."""
        hw = tuple(input_size)
        transforms = (
            None if (augment or not train) else self.dataset_cls.default_pipeline(False, hw)
        )
        return self.dataset_cls(
            data, split, train=train, input_hw=hw, seed=seed, transforms=transforms
        )

    def predict(self, model: nn.Module, image: torch.Tensor):
        """The raw model output for a normalised batch (pose adds the flip test)."""
        return model(image)

    def metric(self, data, split: str):
        raise NotImplementedError

    def update_metric(self, metric, pred, batch: dict[str, Any]) -> None:
        raise NotImplementedError

    def picture(self, batch: dict[str, Any], pred, i: int) -> list[np.ndarray]:
        """Panels for sample ``i``: input, target, prediction (RGB uint8, input size)."""
        raise NotImplementedError


@dataclass(frozen=True)
class SizeHyper:
    """The optimisation numbers of one size: (strategy, precision, steps, lr, layer decay,
    gradient clip, per-GPU batch), as the official ``sapiens/{pose,dense}`` configs and launchers
    have them."""

    strategy: str
    precision: str
    max_steps: int
    lr: float
    layer_decay: float
    clip_grad: float
    batch_size: int


@dataclass(frozen=True)
class RecipeDefaults:
    """A task's part of the ``<task>-<size>`` recipes (:mod:`sapiens2.train.recipes`).

    Attributes:
        sizes: per released size (0.4b, 0.8b, 1b, 5b) its :class:`SizeHyper`.
        official: ``sizes`` holds the official configs' numbers (False: our choice, e.g. borrowed
            from a task with the same head).
        tiny: fields of the ``<task>-tiny`` CPU recipe that differ from the common tiny ones.
        input_size: the (H, W) input of the released sizes.
    """

    sizes: Mapping[str, SizeHyper]
    official: bool = True
    tiny: Mapping[str, Any] = field(default_factory=dict)
    input_size: tuple[int, int] = (1024, 768)


@dataclass(frozen=True)
class TaskSpec:
    """Everything that makes one task, declared in one module.

    Attributes:
        name: the task's name (``--task``, ``TaskModel.task``, recipe prefix, hub repo part).
        summary: one line for tables, model cards and ``--help``.
        head: the head's :class:`~sapiens2.models.task.HeadSpec` (widths per size, checkpoint key).
        runner: pre/post-processing of :class:`~sapiens2.inference.Predictor`.
        result: the result dataclass the runner returns.
        outputs: the pictures and files ``sapiens2 predict`` writes.
        adapter: the evaluation adapter class (dataset, metric, validation picture).
        dataset: the training/eval dataset class.
        loss_cls, loss_weights: the composite loss and its weights dataclass.
        recipe: the recipe defaults.
        export_outputs: the names of the model's outputs in an exported graph (``sapiens2
            export``), in the order of its flattened ``forward`` result.
        make_loss: the loss of a recipe (default: ``loss_cls()`` with the official weights).
    """

    name: str
    summary: str
    head: HeadSpec
    runner: Runner
    result: type
    outputs: Callable[..., Outputs]
    adapter: type[TaskAdapter]
    dataset: type
    loss_cls: type[nn.Module]
    loss_weights: type
    recipe: RecipeDefaults
    export_outputs: tuple[str, ...]
    make_loss: Callable[[Recipe], nn.Module] | None = None

    def register(self) -> None:
        """Hand the head, the runner and the outputs to the tables of the lower layers."""
        register_head(self.name, replace(self.head, description=self.summary))
        register_runner(self.name, self.runner)
        register_outputs(self.name, self.outputs)

    def loss(self, weights=None) -> nn.Module:
        """The composite loss with ``weights`` (a ``loss_weights`` instance; None: official)."""
        if weights is not None and not isinstance(weights, self.loss_weights):
            raise TypeError(
                f"a {self.name} loss needs {self.loss_weights.__name__}, got "
                f"{type(weights).__name__}"
            )
        return self.loss_cls(weights)

    def recipe_loss(self, recipe: Recipe) -> nn.Module:
        return self.make_loss(recipe) if self.make_loss is not None else self.loss()

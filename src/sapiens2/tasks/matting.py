"""Human matting: the normal head's pixel-shuffle trunk with a 4-channel ``conv_matting`` and a
sigmoid (pre-multiplied foreground RGB, then alpha, at the input resolution), as the released
``facebook/sapiens2-matting-*`` checkpoints; letterboxed input; alpha, RGBA cut-out and composite
PNGs; the matting literature's SAD / MSE / gradient / connectivity errors; our training loss
(alpha L1 + foreground L1 + Laplacian pyramid, :mod:`sapiens2.train.losses.matting`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from sapiens2.data import datasets as D
from sapiens2.data.geometry import LetterboxParams
from sapiens2.inference.media import read_image
from sapiens2.inference.outputs import Outputs, WriterOptions, encode_image
from sapiens2.inference.preprocess import unletterbox
from sapiens2.inference.results import ResultIO, beside_image
from sapiens2.inference.runners import MapRunner
from sapiens2.metrics.matting import MattingMetric
from sapiens2.models.configs import ArchConfig
from sapiens2.models.heads import DenseHeadConfig, MattingHead
from sapiens2.models.task import HeadSpec
from sapiens2.tasks._dense import WIDE_UPSAMPLE, tiny_dense
from sapiens2.tasks.base import (
    RecipeDefaults,
    TaskAdapter,
    TaskSpec,
    denormalize,
    resize_like,
)
from sapiens2.tasks.normal import SPEC as NORMAL
from sapiens2.train.losses.matting import MattingLoss, MattingLossWeights
from sapiens2.viz.layout import side_by_side
from sapiens2.viz.matting import alpha_to_rgb, composite, cutout_rgba, parse_colour


def head_widths(arch: ArchConfig) -> DenseHeadConfig:
    """The normal head's widths (the released matting head is the normal head with 4 outputs)."""
    if arch.size == "tiny":
        return tiny_dense(4)
    if arch.size == "5b":
        return DenseHeadConfig(WIDE_UPSAMPLE, conv_channels=(128, 64, 32), out_channels=4)
    return DenseHeadConfig(out_channels=4)


@dataclass
class MattingResult(ResultIO):
    """An alpha matte and the person's colour at the image size.

    Attributes:
        alpha: ``(H, W)`` float32 in [0, 1] (1 = person).
        foreground: ``(H, W, 3)`` float32 RGB in [0, 1], pre-multiplied by ``alpha``.
        mask: unused (a matte is its own mask); None.
    """

    alpha: np.ndarray
    foreground: np.ndarray
    mask: np.ndarray | None = None

    def to_dict(self) -> dict:
        """``{image_size, foreground_pixels (alpha >= 0.5), alpha_mean}`` (the matte and colour:
        :meth:`to_array` / ``.npy``)."""
        return {
            "image_size": [int(v) for v in self.alpha.shape],
            "foreground_pixels": int(np.count_nonzero(self.alpha >= 0.5)),
            "alpha_mean": float(np.mean(self.alpha)),
        }

    def to_array(self) -> np.ndarray:
        """``(H, W, 4)`` float32: the pre-multiplied foreground RGB, then alpha."""
        return np.concatenate([self.foreground, self.alpha[..., None]], axis=-1).astype(np.float32)

    def plot(self, image: np.ndarray | None = None) -> np.ndarray:
        """The matte in gray (``[image | matte]`` with an image)."""
        return beside_image(image, alpha_to_rgb(self.alpha))

    @classmethod
    def from_map(cls, m: np.ndarray, mask: np.ndarray | None = None) -> MattingResult:
        """From the ``(H, W, 4)`` map of :func:`matting_map_tensor`."""
        return cls(np.ascontiguousarray(m[..., 3]), np.ascontiguousarray(m[..., :3]))


def matting_map_tensor(raw: torch.Tensor, box: LetterboxParams) -> torch.Tensor:
    """``(4, h, w)`` head output -> ``(H, W, 4)`` float32 at the original size: the letterbox
    padding removed, bilinear resize, clamped to [0, 1]; stays on the device."""
    x = unletterbox(raw.float(), box)
    if tuple(x.shape[-2:]) != tuple(box.in_hw):
        x = F.interpolate(x[None], size=tuple(box.in_hw), mode="bilinear", align_corners=False)[0]
    return x.clamp(0, 1).permute(1, 2, 0).contiguous()


class MattingOutputs(Outputs):
    help = (
        "<name>_alpha.png      uint8 alpha matte (255 = person)",
        "<name>_cutout.png     RGBA cut-out: the predicted person colour with the alpha",
        "<name>_composite.png  the person over --background (a colour or an image file)",
    )

    def __init__(self, options: WriterOptions) -> None:
        super().__init__(options)
        bg = options.background
        self._colour = parse_colour(bg) if isinstance(bg, str | tuple) else None
        self._image = None
        if self._colour is None:
            try:
                self._image = read_image(Path(bg))
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"background {bg!r} is neither a colour (a name, R,G,B or #RRGGBB) nor an "
                    "image file"
                ) from None

    def _background(self, hw: tuple[int, int]) -> np.ndarray | tuple[int, int, int]:
        if self._image is None:
            assert self._colour is not None
            return self._colour
        if self._image.shape[:2] == tuple(hw):
            return self._image
        return cv2.resize(self._image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)

    def _composite(self, result: MattingResult) -> np.ndarray:
        return composite(result.foreground, result.alpha, self._background(result.alpha.shape))

    def picture(self, frame, result):
        return side_by_side(frame.rgb, self._composite(result))

    def files(self, sink, frame, result, picture):
        name = frame.name
        h, w = frame.rgb.shape[:2]
        comp = picture[:, w:] if picture is not None and picture.shape[:2] == (h, 2 * w) else None
        if comp is None:
            comp = self._composite(result)
        alpha8 = alpha_to_rgb(result.alpha)[..., 0]
        cutout = cutout_rgba(result.foreground, result.alpha)
        return [
            sink.put(f"{name}_alpha.png", encode_image(alpha8, ".png")),
            sink.put(f"{name}_cutout.png", encode_image(cutout, ".png")),
            sink.put(f"{name}_composite.png", encode_image(comp, ".png")),
        ]


class MattingAdapter(TaskAdapter):
    task, dataset_cls, primary_metric, higher_is_better = "matting", D.MattingDataset, "sad", False

    def metric(self, data, split):
        return MattingMetric()

    def update_metric(self, metric, pred, batch):
        metric.update(resize_like(pred[:, 3:], batch["alpha"].shape[-2:]), batch["alpha"])

    def picture(self, batch, pred, i):
        image = denormalize(batch["image"][i])
        gt = batch["alpha"][i, 0].float().cpu().numpy()
        p = resize_like(pred[i : i + 1, 3:], image.shape[:2])[0, 0].float().cpu().numpy()
        return [image, alpha_to_rgb(gt), alpha_to_rgb(p)]


SPEC = TaskSpec(
    name="matting",
    summary="human matting (alpha matte and foreground colour)",
    head=HeadSpec("conv_matting", DenseHeadConfig, MattingHead, head_widths),
    runner=MapRunner(matting_map_tensor, MattingResult.from_map, uses_masks=False),
    result=MattingResult,
    outputs=MattingOutputs,
    adapter=MattingAdapter,
    dataset=D.MattingDataset,
    loss_cls=MattingLoss,
    loss_weights=MattingLossWeights,
    export_outputs=("matting",),
    # no official matting training configs were released: the normal task's numbers (the same
    # head and input), marked as not official
    recipe=RecipeDefaults(sizes=NORMAL.recipe.sizes, official=False),
)

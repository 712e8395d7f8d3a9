"""Stage 2, person filter: keep images with a person box whose short side reaches a threshold.

The detector is any :class:`sapiens2.detect.protocol.Detector`. :class:`SegmentationDetector` is the
built-in one: a Sapiens2 body-part segmentation model, one box per connected component of its person
mask. It loads the model lazily and drops it when pickled, so the same object can be shipped to Ray
workers, each of which loads its own copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.detect.protocol import Detector


def resolve_model_source(source: str) -> str | Path:
    """``"demo:<task>"`` -> the bundled demo checkpoint; anything else is passed on unchanged."""
    if source.startswith("demo:"):
        from sapiens2.demo import demo_model_path

        return demo_model_path(source.split(":", 1)[1])
    return source


class SegmentationDetector:
    """Person boxes from a segmentation model's foreground (every box scores 1.0).

    Args:
        model: a seg task checkpoint (path, hub id, ``"demo:seg"``) or a seg task model.
        input_size: (H, W) the model runs at.
        device: where the model runs.
        min_component_fraction: components smaller than this fraction of the largest are ignored.
    """

    def __init__(
        self,
        model: Any,
        input_size: tuple[int, int] = (1024, 768),
        device: str = "cpu",
        min_component_fraction: float = 0.05,
    ) -> None:
        self.source = model
        self.input_size = tuple(input_size)
        self.device = device
        self.min_component_fraction = min_component_fraction
        self._predictor = None

    def _load(self):
        if self._predictor is None:
            from sapiens2.inference.predictor import SegPredictor

            src = self.source
            model = resolve_model_source(src) if isinstance(src, str) else src
            self._predictor = SegPredictor(
                model, device=self.device, dtype="fp32", input_size=self.input_size, batch_size=1
            )
        return self._predictor

    def __call__(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from sapiens2.inference.boxes import boxes_from_mask

        fg = self._load().predict(image_rgb).foreground
        boxes = boxes_from_mask(fg, min_relative_area=self.min_component_fraction)
        return boxes, np.ones(len(boxes), np.float32)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_predictor"] = None
        return state


@dataclass(frozen=True)
class PersonVerdict:
    """Stage 2 result of one image.

    Attributes:
        drop: "" when kept, else ``no_person`` (no box at all) or ``small_person``.
        people: number of boxes reaching the threshold.
        max_short_side: the largest box short side found (0 when no box).
    """

    drop: str
    people: int
    max_short_side: float


def person_verdict(
    detector: Detector, rgb: np.ndarray, min_short_side: float, score_thr: float = 0.3
) -> PersonVerdict:
    """Run the detector on one (H, W, 3) uint8 RGB image and apply the short-side rule.

    Boxes are inclusive xyxy pixels (width ``x2 - x1 + 1``); boxes scoring <= ``score_thr`` are ignored.
    """
    boxes, scores = detector(rgb)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"detector returned {len(boxes)} boxes but {len(scores)} scores")
    boxes = boxes[scores > score_thr]
    if len(boxes) == 0:
        return PersonVerdict("no_person", 0, 0.0)
    short = np.minimum(boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1)
    big = int(np.count_nonzero(short >= min_short_side))
    return PersonVerdict("" if big else "small_person", big, float(short.max()))

"""Runners: how a :class:`~sapiens2.inference.predictor.Predictor` prepares inputs for one kind of
task head and turns its raw outputs into typed results.

A runner is chosen by the task module (``sapiens2/tasks/<task>.py``), which registers it under
the task's name with :func:`register_runner`; the predictor looks it up and never branches on the
task's name. The runners here are per family of output, not per task: a heatmap decoder, a
per-pixel classifier, a per-pixel map (normals, albedo, matting), a pointmap with its scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from sapiens2.data.geometry import LetterboxParams
from sapiens2.inference import postprocess
from sapiens2.inference.preprocess import Prepared, letterbox, stretch_resize
from sapiens2.inference.results import (
    CANONICAL_FOCAL_LENGTH,
    PointmapResult,
    PoseResult,
    Result,
    SegResult,
)
from sapiens2.inference.topdown import crop_people, keypoints_to_image

if TYPE_CHECKING:
    from sapiens2.inference.predictor import Predictor

Resize = Literal["none", "stretch", "letterbox"]


class Runner:
    """Pre-processing and post-processing of one family of task outputs.

    Attributes:
        resize: how an image becomes the network input: ``"stretch"`` (seg), ``"letterbox"``
            (the other dense tasks), ``"none"`` (pose: crops are made from person boxes).
        uses_boxes: person boxes are an input (pose).
        uses_masks: a foreground mask (given, or from a mask model) masks the result.
        foreground: the result has a person mask that other predictors can use (seg).
    """

    resize: Resize = "letterbox"
    uses_boxes: bool = False
    uses_masks: bool = False
    foreground: bool = False

    def prepare(self, rgb: np.ndarray, input_size: tuple[int, int]) -> Prepared | np.ndarray:
        if self.resize == "none":
            return rgb
        if self.resize == "stretch":
            return Prepared(rgb, stretch_resize(rgb, input_size), None)
        padded, box = letterbox(rgb, input_size)
        return Prepared(rgb, padded, box)

    def run(
        self, predictor: Predictor, items: list, boxes: list, masks: list, bs: int
    ) -> list[Result]:
        """Results for ``items`` (:class:`Prepared`, or RGB arrays when ``resize`` is ``"none"``)
        in chunks of ``bs``; ``boxes`` / ``masks`` hold one entry (or None) per item."""
        raise NotImplementedError


class SegRunner(Runner):
    """Per-pixel class logits -> :class:`SegResult` labels at the original size."""

    resize: Resize = "stretch"
    foreground = True

    def run(self, predictor, items, boxes, masks, bs):
        results: list[Result] = []
        for start in range(0, len(items), bs):
            chunk = items[start : start + bs]
            logits = predictor._forward(np.stack([p.input for p in chunk]))
            labels = postprocess.fetch(
                [postprocess.seg_labels_tensor(lg, p.rgb.shape[:2]) for p, lg in zip(chunk, logits, strict=True)]
            )  # fmt: skip
            results.extend(SegResult(labels=lb) for lb in labels)
        return results


@dataclass(frozen=True)
class MapRunner(Runner):
    """A per-pixel map (normals, albedo, matting): ``to_map(raw (C, h, w), letterbox)`` on the
    device gives ``(H, W, C)`` at the original size; ``make_result(map, mask)`` the result."""

    to_map: Callable[[torch.Tensor, LetterboxParams], torch.Tensor]
    make_result: Callable[[np.ndarray, np.ndarray | None], Any]
    uses_masks: bool = True

    def run(self, predictor, items, boxes, masks, bs):
        fg = [None] * len(items)
        if self.uses_masks:
            fg = predictor._foreground([p.rgb for p in items], masks, bs)
        results: list[Result] = []
        for start in range(0, len(items), bs):
            chunk = items[start : start + bs]
            out = predictor._forward(np.stack([p.input for p in chunk]))
            maps = postprocess.fetch(
                [self.to_map(o, p.box) for o, p in zip(out, chunk, strict=True)]
            )
            results.extend(self.make_result(m, fg[start + j]) for j, m in enumerate(maps))
        return results


class PointmapRunner(Runner):
    """``(canonical (B, 3, h, w), scale (B, 1))`` -> metric :class:`PointmapResult`."""

    uses_masks = True

    def run(self, predictor, items, boxes, masks, bs):
        fg = predictor._foreground([p.rgb for p in items], masks, bs)
        results: list[Result] = []
        for start in range(0, len(items), bs):
            chunk = items[start : start + bs]
            canonical, scale = predictor._forward(np.stack([p.input for p in chunk]))
            scale = scale.float().reshape(len(chunk), -1)[:, 0]
            lbs = [p.box for p in chunk]
            maps = postprocess.fetch(
                [scale] + [postprocess.canonical_to_metric_tensor(c, s, b)
                           for c, s, b in zip(canonical, scale, lbs, strict=True)]
            )  # fmt: skip
            for j, (s, metric) in enumerate(zip(maps[0], maps[1:], strict=True)):
                points = postprocess.metric_pointmap_from_host(metric, float(s), lbs[j])
                focal = _focal_length(float(s), lbs[j])
                results.append(PointmapResult(points, float(s), fg[start + j], focal))
        return results


def _focal_length(scale: float, box: LetterboxParams) -> tuple[float, float] | None:
    """``(fx, fy)`` in image pixels from the predicted scale ``s = 768 / fx`` (fx in the
    letterboxed network input's pixels); None for a scale that is not positive."""
    if not (np.isfinite(scale) and scale > 0):
        return None
    f = CANONICAL_FOCAL_LENGTH / scale
    fx, fy = box.factors
    return f / fx, f / fy


class PoseRunner(Runner):
    """Top-down heatmaps: person boxes, crops (at most ``bs`` per forward), UDP decoding, keypoints
    in image pixels -> one :class:`PoseResult` per image."""

    resize: Resize = "none"
    uses_boxes = True

    def run(self, predictor, items, boxes, masks, bs):
        results: list[list[PoseResult]] = [[] for _ in items]
        hw = predictor.input_size
        pending: list[tuple] = []

        def flush() -> None:
            crops = [p[1] for p in pending if len(p[1])]
            if crops:
                kp_in, scores = predictor.decode(predictor.pose_heatmaps(np.concatenate(crops)))
            at = 0
            for i, crop, center, scale, bxs, box_scores in pending:
                n = len(crop)
                kp = (
                    keypoints_to_image(kp_in[at : at + n], center, scale, hw)
                    if n
                    else np.zeros((0, 308, 2), np.float32)
                )
                sc = scores[at : at + n] if n else np.zeros((0, 308), np.float32)
                at += n
                results[i].append(PoseResult(kp, sc, bxs, box_scores, items[i].shape[:2]))
            pending.clear()

        count = 0
        for i, rgb in enumerate(items):
            bxs, box_scores = predictor.person_boxes(rgb, boxes[i])
            # an image's crops are made and run at most ``bs`` at a time (bounded memory for any
            # number of boxes); its results are joined below
            for start in range(0, max(len(bxs), 1), bs):
                part = slice(start, start + bs)
                crops, center, scale = crop_people(rgb, bxs[part], hw)
                pending.append((i, crops, center, scale, bxs[part], box_scores[part]))
                count += len(crops)
                if count >= bs:
                    flush()
                    count = 0
        if pending:
            flush()
        return [_join_pose(parts) for parts in results]


def _join_pose(parts: list[PoseResult]) -> PoseResult:
    """One image's pose result from the results of its chunks of boxes, in box order."""
    if len(parts) == 1:
        return parts[0]
    return PoseResult(
        np.concatenate([p.keypoints for p in parts]),
        np.concatenate([p.scores for p in parts]),
        np.concatenate([p.boxes for p in parts]),
        np.concatenate([p.box_scores for p in parts]),
        parts[0].image_size,
    )


_RUNNERS: dict[str, Runner] = {}


def register_runner(task: str, runner: Runner) -> None:
    """Make ``task``'s runner known to :class:`Predictor` (called by the task modules)."""
    old = _RUNNERS.get(task)
    if old is not None and old is not runner:
        raise ValueError(f"a runner is already registered for task {task!r}")
    _RUNNERS[task] = runner


def runner_for(task: str) -> Runner:
    if task not in _RUNNERS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(_RUNNERS)}")
    return _RUNNERS[task]


def runner_tasks(**having: bool) -> tuple[str, ...]:
    """Registered task names, optionally those whose runner has the given flags
    (``runner_tasks(uses_masks=True)``)."""
    return tuple(
        t for t, r in _RUNNERS.items() if all(getattr(r, k) == v for k, v in having.items())
    )

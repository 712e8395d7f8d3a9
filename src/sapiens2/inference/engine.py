"""The streaming prediction engine: a predictor over images, folders, globs and videos, with
background decoding, batches in flight and background writing (what ``sapiens2 predict`` runs).

:func:`predict_source` yields each frame's result in input order and, given a writer, writes its
outputs in the background; :func:`predict_items` runs it to the end and returns its statistics.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sapiens2.inference.media import Frame, MediaItem

logger = logging.getLogger(__name__)

__all__ = [
    "PredictStats",
    "Prediction",
    "default_io_workers",
    "default_render_processes",
    "predict_items",
    "predict_source",
]


def default_io_workers() -> int:
    """Decode/write threads: enough to keep a GPU fed, few enough to leave a CPU forward alone."""
    return max(1, min(8, (os.cpu_count() or 1) // 2))


def default_render_processes() -> int:
    """Render processes beside a GPU: three quarters of the cores (12 of 16 keep up with a 0.4B
    model on an H100 at ~80 photos/s, 8 do not)."""
    return max(1, min(16, 3 * (os.cpu_count() or 1) // 4))


@dataclass
class PredictStats:
    """What :func:`predict_source` did and where its wall time went (seconds).

    ``predict_seconds`` is spent waiting for ``Predictor.predict`` (pre-processing, forward,
    decoding), ``read_wait_seconds`` waiting for the background decoder, ``write_wait_seconds``
    waiting for the background writer (a full queue, and the final drain); the writer's own work
    is ``write_seconds`` (summed over its threads) and overlaps with the rest.
    """

    frames: int = 0
    people: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    predict_seconds: float = 0.0
    read_wait_seconds: float = 0.0
    write_wait_seconds: float = 0.0
    write_seconds: float = 0.0


@dataclass(frozen=True)
class Prediction:
    """One frame (its pixels, name, media item) and the predictor's result for it."""

    frame: Frame
    result: Any


def _as_items(source) -> list[MediaItem]:
    from sapiens2.inference.media import expand_media

    if isinstance(source, str | Path):
        return expand_media([source])
    source = list(source)
    if all(isinstance(s, MediaItem) for s in source):
        return source
    return expand_media(source)


def predict_source(
    source: str | Path | Sequence[str | Path] | Iterable[MediaItem],
    predictor,
    *,
    writer=None,
    batch_size: int = 4,
    boxes_table: dict | None = None,
    mask_dir: Path | None = None,
    progress: bool = False,
    io_workers: int = 1,
    in_flight: int | None = None,
    render_processes: bool | None = None,
    render_workers: int | None = None,
    max_pixels: int | None = -1,
    stats: PredictStats | None = None,
) -> Iterator[Prediction]:
    """Predict on images, folders, glob patterns and videos; yields one :class:`Prediction` per
    frame, in input order.

    Unreadable files (and images over ``max_pixels``) are logged, counted in ``stats.skipped``
    and passed over; a frame whose prediction fails with an error about that input (bad boxes or
    mask, out of memory) is logged, counted in ``stats.failed`` (frame name, reason) and passed
    over, and the run goes on with the others.

    Frames are decoded (and resized for the network, ``predictor.prepare``) on ``io_workers``
    threads. ``in_flight`` batches are predicted at once, each on its own thread (and on CUDA its
    own stream; default: 2 on an accelerator, so that one batch's CPU work overlaps with the
    other's forward; 1 on a CPU, whose cores the forward already keeps busy).

    With ``writer`` (a :class:`~sapiens2.inference.writer.PredictionWriter`) each frame's outputs
    are drawn and written on ``render_workers`` threads or, with ``render_processes``,
    processes, overlapping with the forward passes; the writer is closed at the end.
    ``render_processes`` defaults to on for light results (seg labels, pose keypoints) on an
    accelerator, where the threads that drive the model must not wait for the interpreter lock;
    ``render_workers`` to ``io_workers`` threads or :func:`default_render_processes` processes.

    Args:
        source: a path, glob, folder or video, or a list of them (or of ``MediaItem``).
        predictor: a :class:`~sapiens2.inference.Predictor`.
        boxes_table: pose: person boxes by image name (``load_boxes_json``).
        mask_dir: dense tasks: a folder of foreground masks (``find_mask``).
        max_pixels: see :mod:`sapiens2.limits` (-1: the default limit, None: none).
        stats: filled in as the run goes (pass one to read it afterwards).
    """
    from sapiens2.inference.boxes import lookup_boxes
    from sapiens2.inference.media import FrameReader, count_frames, find_mask, read_mask
    from sapiens2.inference.writer import BackgroundWriter

    items = _as_items(source)
    stats = stats if stats is not None else PredictStats()
    if in_flight is None:
        in_flight = 1 if predictor.device.type == "cpu" else 2
    if in_flight < 1:
        raise ValueError(f"in_flight must be >= 1, got {in_flight}")
    if render_processes is None:
        light = getattr(getattr(writer, "outputs", None), "light", False)
        render_processes = predictor.device.type != "cpu" and light
    if render_workers is None:
        render_workers = default_render_processes() if render_processes else io_workers
    start = time.perf_counter()
    batch: list = []
    running: deque[tuple[list, dict, Future]] = deque()  # batches being predicted, in order
    item_errors = _item_errors()

    with ExitStack() as stack:
        reader = stack.enter_context(
            FrameReader(
                items,
                workers=io_workers,
                prepare=getattr(predictor, "prepare", None),
                max_pixels=max_pixels,
            )
        )
        background = None
        if writer is not None:
            background = stack.enter_context(
                BackgroundWriter(writer, workers=render_workers, processes=render_processes)
            )
        pool = stack.enter_context(
            ThreadPoolExecutor(in_flight, thread_name_prefix="sapiens2-predict")
        )
        bar = stack.enter_context(
            tqdm(total=count_frames(items), unit="img", desc=predictor.task, disable=not progress)
        )

        def fail(frame, err: BaseException) -> None:
            logger.warning("%s: prediction failed, going on with the others: %s", frame.name, err)
            logger.debug("%s: prediction failed", frame.name, exc_info=err)
            stats.failed.append((frame.name, str(err)))
            bar.update(1)

        def one_by_one(frames: list, kwargs: dict) -> list[tuple]:
            """After a batch failed: each frame alone, so that one bad input costs only itself."""
            done = []
            for j, frame in enumerate(frames):
                try:
                    one = {k: [v[j]] for k, v in kwargs.items()}
                    done.append((frame, predictor.predict([_input(frame)], **one)[0]))
                except item_errors as err:
                    fail(frame, err)
            return done

        def finish_oldest() -> list[Prediction]:
            frames, kwargs, future = running.popleft()
            t0 = time.perf_counter()
            try:
                done = list(zip(frames, future.result(), strict=True))
            except item_errors:
                done = one_by_one(frames, kwargs)
            t1 = time.perf_counter()
            stats.predict_seconds += t1 - t0
            for frame, result in done:
                if background is not None:
                    background.submit(frame, result)
                stats.people += getattr(result, "num_people", 0)
            stats.write_wait_seconds += time.perf_counter() - t1
            stats.frames += len(done)
            bar.update(len(done))
            return [Prediction(f, r) for f, r in done]

        def flush() -> list[Prediction]:
            out: list[Prediction] = []
            if not batch:
                return out
            frames, boxes, masks = [], [], []
            for f in batch:
                try:
                    if boxes_table is not None:
                        key = f.item.path.name if f.item.kind == "image" else f.name
                        boxes.append(lookup_boxes(boxes_table, key))
                    if mask_dir:
                        path = find_mask(mask_dir, f)
                        if path is None:
                            logger.warning("no mask for %s in %s; not masking it", f.name, mask_dir)
                        masks.append(read_mask(path) if path is not None else None)
                except item_errors as err:
                    del boxes[len(frames) :], masks[len(frames) :]
                    fail(f, err)
                    continue
                frames.append(f)
            batch.clear()
            if not frames:
                return out
            kwargs = {}
            if boxes_table is not None:
                kwargs["boxes"] = boxes
            if mask_dir:
                kwargs["masks"] = masks
            while len(running) >= in_flight:
                out.extend(finish_oldest())
            inputs = [_input(f) for f in frames]
            running.append((frames, kwargs, pool.submit(predictor.predict, inputs, **kwargs)))
            return out

        frames = iter(reader)
        while True:
            t0 = time.perf_counter()
            frame = next(frames, None)
            stats.read_wait_seconds += time.perf_counter() - t0
            if frame is None:
                break
            if frame.error is not None:
                logger.warning("skipping %s: %s", frame.item.path, frame.error)
                stats.skipped.append((frame.item.path, frame.error))
                bar.update(1)
                continue
            batch.append(frame)
            if len(batch) >= batch_size or (frame.item.kind == "video" and frame.last):
                yield from flush()
        yield from flush()
        while running:
            yield from finish_oldest()
        if background is not None:
            t0 = time.perf_counter()
            background.close()
            stats.write_wait_seconds += time.perf_counter() - t0
            stats.write_seconds = background.seconds
    stats.seconds = time.perf_counter() - start


def predict_items(predictor, items, writer, **kwargs) -> PredictStats:
    """Run :func:`predict_source` on ``items`` to the end, writing with ``writer`` (closed at the
    end); returns the statistics. Keywords as :func:`predict_source` (``progress`` defaults to
    on here)."""
    kwargs.setdefault("progress", True)
    stats = PredictStats()
    for _ in predict_source(items, predictor, writer=writer, stats=stats, **kwargs):
        pass
    return stats


def _input(frame):
    """What a frame gives ``Predictor.predict``: its prepared network input, else its pixels."""
    return frame.rgb if frame.prepared is None else frame.prepared


def _item_errors() -> tuple[type[BaseException], ...]:
    """Errors that concern one input (bad boxes, a bad mask, an input too big for the memory):
    the frame is skipped and the run goes on. Anything else is a bug and stops the run."""
    import cv2
    import torch

    from sapiens2.errors import Sapiens2Error

    oom = getattr(torch, "OutOfMemoryError", MemoryError)
    return (Sapiens2Error, ValueError, MemoryError, oom, cv2.error)

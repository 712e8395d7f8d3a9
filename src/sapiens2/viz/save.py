"""Writing predictions to disk: pictures (``[input | result]``), rendered videos and data files.

Per image ``<name>`` in the output folder (video frames go to ``<out>/<video name>/`` and their
pictures into ``<out>/<video name>.mp4``):

- every task: ``<name>.jpg`` picture;
- pose: ``predictions.json`` (official schema; one ``<video>_predictions.json`` per video) and
  ``coco_results.json`` (COCO keypoint results, 308 keypoints);
- seg: ``<name>_seg.png`` uint8 labels (+ ``<name>_seg.npy`` int64 with ``save_npy``);
- normal: ``<name>_normal.npy`` float32 (H, W, 3) and ``<name>_normal.png``;
- pointmap: ``<name>_depth.npy`` float32 (H, W) metres, ``<name>.ply`` coloured point cloud
  (foreground points if a mask was used, else every valid point) and ``<name>_depth.png``;
- albedo: ``<name>_albedo.png``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import queue
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sapiens2.errors import OutputError, Sapiens2Error
from sapiens2.inference.export import coco_results, pose_frame_record, pose_predictions_json
from sapiens2.inference.media import Frame, MediaItem, safe_name
from sapiens2.inference.results import (
    AlbedoResult,
    NormalResult,
    PointmapResult,
    PoseResult,
    Result,
    SegResult,
)
from sapiens2.viz.dense import DepthRange, albedo_to_rgb, depth_to_rgb, normals_to_rgb
from sapiens2.viz.layout import fit_into, side_by_side
from sapiens2.viz.ply import write_ply
from sapiens2.viz.pose import draw_pose
from sapiens2.viz.seg import seg_picture

logger = logging.getLogger(__name__)


def write_image(path: Path, rgb: np.ndarray, quality: int = 95) -> Path:
    """Write an ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` gray) image; format from the suffix."""
    # cvtColor swaps the channels ~10x faster than copying the reversed numpy view
    data = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else np.ascontiguousarray(rgb)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(path.suffix, data, params)
    if not ok:
        raise ValueError(f"cannot encode image {path}")
    buf.tofile(str(path))
    return path


@dataclass
class Rendered:
    """What :meth:`PredictionWriter.render` made of one frame: the files it wrote and, for a
    video frame, the picture still to be added to the video (None for images, without pictures,
    and for pointmap video frames, which are drawn at commit)."""

    paths: list[Path]
    video_picture: np.ndarray | None


class _Video:
    """One output video: every picture becomes a frame of the size of the first one, and
    :meth:`close` checks that the file holds every frame (OpenCV's writer drops a frame of
    another size with a logged warning only)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.path, self.size, self.frames = path, size, 0
        self._refitted = 0
        h, w = size
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not self._writer.isOpened():
            raise OutputError(f"cannot open a video writer for {path}")

    def write(self, picture: np.ndarray) -> None:
        """Add a uint8 RGB picture; one of another size is fitted into the video's frame
        (:func:`~sapiens2.viz.layout.fit_into`) with a warning, never dropped."""
        if picture.shape[:2] != self.size:
            if not self._refitted:
                logger.warning(
                    "%s: frame %d is %dx%d, the video %dx%d; fitting it (logged once per video)",
                    self.path, self.frames, *picture.shape[:2], *self.size,
                )  # fmt: skip
            self._refitted += 1
            picture = fit_into(picture, self.size)
        self._writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        """Finish the file and check that it holds every frame written.

        Raises:
            OutputError: the file holds fewer frames than were written.
        """
        self._writer.release()
        cap = cv2.VideoCapture(str(self.path))
        try:
            stored = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        finally:
            cap.release()
        if stored != self.frames:
            raise OutputError(f"{self.path} holds {stored} of the {self.frames} frames written")


class PredictionWriter:
    """Writes each frame's outputs and, on :meth:`close`, the collected JSON files and videos.

    Args:
        task: the prediction task.
        out_dir: output folder (created).
        kpt_thr: pose keypoint score threshold for drawing and COCO scores.
        save_npy: seg: also write the labels as ``.npy``.
        coco_layout: pose: keypoint layout of ``coco_results.json`` (see
            :func:`~sapiens2.inference.export.coco_results`).
        pictures: write the ``<name>.jpg`` pictures and rendered videos (off: the data files
            only, which is much cheaper per frame).
    """

    def __init__(
        self,
        task: str,
        out_dir: str | Path,
        *,
        kpt_thr: float = 0.3,
        save_npy: bool = False,
        coco_layout: str = "goliath308",
        pictures: bool = True,
    ) -> None:
        self.task = task
        self.pictures = pictures
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.kpt_thr = kpt_thr
        self.save_npy = save_npy
        self.coco_layout = coco_layout
        self._videos: dict[MediaItem, _Video] = {}
        self._depth_ranges: dict[MediaItem, DepthRange] = {}
        self._pose_frames: dict[MediaItem | None, list[dict]] = {}
        self._coco: list[dict] = []
        self._num_pose_frames = 0  # COCO image_id of the next pose frame
        self.written: list[Path] = []

    # ------------------------------------------------------------------ pictures
    def picture(self, frame: Frame, result: Result) -> np.ndarray:
        """The picture of one prediction as uint8 RGB."""
        rgb = frame.rgb
        assert rgb is not None
        if isinstance(result, PoseResult):
            return draw_pose(rgb, result.keypoints, result.scores, kpt_thr=self.kpt_thr)
        if isinstance(result, SegResult):  # a video's frames need one size: a fixed legend
            return seg_picture(rgb, result.labels, fixed_legend=frame.item.kind == "video")
        if isinstance(result, NormalResult):
            return side_by_side(rgb, normals_to_rgb(result.normals, result.mask))
        if isinstance(result, AlbedoResult):
            return side_by_side(rgb, albedo_to_rgb(result.albedo, result.mask))
        if isinstance(result, PointmapResult):
            bounds = None
            if frame.item.kind == "video":
                bounds = self._depth_ranges.setdefault(frame.item, DepthRange()).update(
                    result.depth, result.mask
                )
            return side_by_side(rgb, depth_to_rgb(result.depth, result.mask, bounds))
        raise TypeError(f"unknown result type {type(result).__name__}")

    # ------------------------------------------------------------------ per frame
    def write(self, frame: Frame, result: Result) -> None:
        """Write the files of one frame (and add its picture to the video of a video frame)."""
        self.commit(frame, result, self.render(frame, result))

    def render(self, frame: Frame, result: Result) -> Rendered:
        """The order-free part of :meth:`write`: draw the picture and write this frame's own
        files. Touches no shared state, so frames may be rendered on several threads at once;
        :meth:`commit` must then be called in frame order."""
        _check_names(frame)
        is_video = frame.item.kind == "video"
        folder = self.out / frame.item.name if is_video else self.out
        if self.task != "pose":
            folder.mkdir(parents=True, exist_ok=True)
        name = frame.name
        paths: list[Path] = []
        if is_video and isinstance(result, PointmapResult):
            return Rendered(paths, None)  # the depth colour range runs over the video: in order
        # the pointmap's depth PNG is the right half of its picture
        draw = self.pictures or isinstance(result, PointmapResult)
        picture = self.picture(frame, result) if draw else None
        if self.pictures and not is_video:
            paths.append(write_image(folder / f"{name}.jpg", picture))
        paths.extend(self._data_files(folder, frame, result, picture))
        return Rendered(paths, picture if is_video and self.pictures else None)

    def commit(self, frame: Frame, result: Result, rendered: Rendered) -> None:
        """The ordered part of :meth:`write`: video frames, pose records, the file list."""
        _check_names(frame)
        is_video = frame.item.kind == "video"
        self.written.extend(rendered.paths)
        picture = rendered.video_picture
        if is_video and isinstance(result, PointmapResult):  # rendered here (see render)
            picture = self.picture(frame, result)
            folder = self.out / frame.item.name
            self.written.extend(self._data_files(folder, frame, result, picture))
        if is_video and self.pictures:
            self._add_video_frame(frame, picture)
        if isinstance(result, PoseResult):
            key = frame.item if is_video else None
            self._pose_frames.setdefault(key, []).append(pose_frame_record(result, frame.name))
            self._coco.extend(
                coco_results(
                    result, self._num_pose_frames, frame.name, self.kpt_thr, self.coco_layout
                )
            )
            self._num_pose_frames += 1
        if is_video and frame.last:
            self._close_video(frame.item)

    def _data_files(
        self, folder: Path, frame: Frame, result: Result, picture: np.ndarray | None
    ) -> list[Path]:
        """Write the per-frame data files of a dense result; returns their paths."""
        name = frame.name
        if isinstance(result, SegResult):
            paths = [write_image(folder / f"{name}_seg.png", result.labels.astype(np.uint8))]
            if self.save_npy:
                np.save(folder / f"{name}_seg.npy", result.labels.astype(np.int64))
                paths.append(folder / f"{name}_seg.npy")
            return paths
        # The normal / albedo PNG is the right half of the picture when there is one (same size).
        width = frame.rgb.shape[1]
        same_size = picture is not None and picture.shape[:2] == (frame.rgb.shape[0], 2 * width)
        if isinstance(result, NormalResult):
            np.save(folder / f"{name}_normal.npy", result.normals.astype(np.float32, copy=False))
            rgb = picture[:, width:] if same_size else normals_to_rgb(result.normals, result.mask)
            return [folder / f"{name}_normal.npy", write_image(folder / f"{name}_normal.png", rgb)]
        if isinstance(result, PointmapResult):
            np.save(folder / f"{name}_depth.npy", result.depth.astype(np.float32))
            x, y, z = np.moveaxis(result.points, -1, 0)  # ~5x faster than isfinite(...).all(-1)
            valid = np.isfinite(x) & np.isfinite(y) & np.isfinite(z) & (result.depth > 0)
            if result.mask is not None:
                valid &= result.mask
            return [
                folder / f"{name}_depth.npy",
                write_ply(folder / f"{name}.ply", result.points[valid], frame.rgb[valid]),
                write_image(folder / f"{name}_depth.png", picture[:, width:]),
            ]
        if isinstance(result, AlbedoResult):
            rgb = picture[:, width:] if same_size else albedo_to_rgb(result.albedo, result.mask)
            return [write_image(folder / f"{name}_albedo.png", rgb)]
        return []

    # ------------------------------------------------------------------ videos
    def _add_video_frame(self, frame: Frame, picture: np.ndarray) -> None:
        video = self._videos.get(frame.item)
        if video is None:
            path = self.out / f"{frame.item.name}.mp4"
            video = _Video(path, frame.fps or 25.0, picture.shape[:2])
            self._videos[frame.item] = video
            self.written.append(path)
        video.write(picture)

    def _close_video(self, item: MediaItem) -> None:
        video = self._videos.pop(item, None)
        if video is not None:
            video.close()

    def __getstate__(self) -> dict:
        """What a render process gets: the settings, without the ordered state (open videos, pose
        records), which stays with the committing side."""
        state = self.__dict__.copy()
        state.update(_videos={}, _depth_ranges={}, _pose_frames={}, _coco=[], written=[])
        return state

    # ------------------------------------------------------------------ end
    def close(self) -> None:
        """Release open videos and write the pose JSON files.

        Raises:
            OutputError: a video lacks frames (raised after everything else is written).
        """
        errors = []
        for item in list(self._videos):
            try:
                self._close_video(item)
            except OutputError as err:
                errors.append(err)
        if self.task == "pose":
            self._write_pose_json()
        if errors:
            raise errors[0]

    def _write_pose_json(self) -> None:
        for item, frames in self._pose_frames.items():
            if item is None:
                path = self.out / "predictions.json"
                data = pose_predictions_json(frames, video=None, kpt_thr=self.kpt_thr)
            else:
                path = self.out / f"{item.name}_predictions.json"
                data = pose_predictions_json(
                    frames, video=str(item.path.name), kpt_thr=self.kpt_thr
                )
            path.write_text(json.dumps(data, allow_nan=False))
            self.written.append(path)
        path = self.out / "coco_results.json"
        path.write_text(json.dumps(self._coco, allow_nan=False))
        self.written.append(path)


def _check_names(frame: Frame) -> None:
    """Output names come from input names: refuse any that would leave the output folder."""
    for name in (frame.name, frame.item.name):
        if safe_name(name) != name:
            raise OutputError(f"output name {name!r} would leave the output folder")


def _render_timed(writer: PredictionWriter, frame: Frame, result: Result) -> tuple[Rendered, float]:
    t0 = time.perf_counter()
    rendered = writer.render(frame, result)
    return rendered, time.perf_counter() - t0


_PROCESS_WRITER: PredictionWriter | None = None  # the render side of the writer, in a worker


def _start_render_process(writer: PredictionWriter) -> None:
    global _PROCESS_WRITER
    _PROCESS_WRITER = writer
    # the workers are the parallelism; OpenCV's own threads would oversubscribe the cores
    cv2.setNumThreads(1)


def _render_in_process(frame: Frame, result: Result) -> tuple[Rendered, float]:
    assert _PROCESS_WRITER is not None, "render process not initialised"
    return _render_timed(_PROCESS_WRITER, frame, result)


def _process_context() -> multiprocessing.context.BaseContext:
    """Fork-free workers (a CUDA process with threads must not fork): a fork server that has
    already imported this module, where the platform has one, else spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


class BackgroundWriter:
    """Writes with a :class:`PredictionWriter` in the background, in submission order, so that
    drawing, encoding and file writing overlap with the next forward pass.

    Args:
        writer: the writer to drive; only this object's threads touch it until :meth:`close`.
        max_pending: frames that may wait to be written (bounds the memory held by results).
        workers: threads (or processes) that render frames (draw, encode, write their files) at
            once; one more thread commits them in order (video frames, pose records). A fast
            accelerator needs several: drawing and encoding a 1080p picture takes tens of
            milliseconds of CPU.
        processes: render in worker processes instead of threads. Their Python work then does
            not compete for the interpreter lock with the threads that drive the model (which
            matters on a fast GPU), at the price of sending each frame's pixels to a worker and
            of starting the workers (about a second).

    :meth:`submit` blocks while ``max_pending`` frames wait; an error raised by the writer is
    re-raised by the next :meth:`submit` or by :meth:`close`. :meth:`close` drains the queue, then
    closes the writer (pose JSON files, videos). ``seconds`` is the time spent rendering and
    committing, summed over the workers.
    """

    _END = object()

    def __init__(
        self,
        writer: PredictionWriter,
        max_pending: int = 16,
        workers: int = 1,
        processes: bool = False,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.writer = writer
        self.processes = processes
        self.seconds = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_pending))
        self._error: BaseException | None = None
        self._pool: Executor
        if processes:
            self._pool = ProcessPoolExecutor(
                workers,
                mp_context=_process_context(),
                initializer=_start_render_process,
                initargs=(writer,),
            )
        else:
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="sapiens2-render")
        self._thread = threading.Thread(target=self._work, name="sapiens2-writer", daemon=True)
        self._thread.start()
        self._closed = False

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            frame, result, rendered = item
            if self._error is not None:
                continue  # drain after a failure; the error is raised in the caller's thread
            try:
                done, seconds = rendered.result()  # re-raises a render error
                t0 = time.perf_counter()
                self.writer.commit(frame, result, done)
                self.seconds += seconds + time.perf_counter() - t0
            except BaseException as err:  # re-raised by submit() / close()
                self._error = err

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            # a full disk or a bad name is the user's to fix (one line); anything else is a bug
            kind = OutputError if isinstance(err, OSError | Sapiens2Error) else RuntimeError
            raise kind(f"writing predictions failed: {err}") from err

    def submit(self, frame: Frame, result: Result) -> None:
        """Queue one frame's outputs for writing."""
        if self._closed:
            raise RuntimeError("the writer is closed")
        self._raise()
        if self.processes:
            # the network input is not needed for drawing: do not send it to the worker
            sent = dataclasses.replace(frame, prepared=None)
            rendered: Future = self._pool.submit(_render_in_process, sent, result)
        else:
            rendered = self._pool.submit(_render_timed, self.writer, frame, result)
        self._queue.put((frame, result, rendered))

    def close(self) -> None:
        """Write what is queued, stop the threads and close the writer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(self._END)
        self._thread.join()
        self._pool.shutdown(wait=True)
        try:
            self._raise()
        finally:
            self.writer.close()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

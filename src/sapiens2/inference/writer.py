"""Writing predictions to disk: pictures (``[input | result]``), rendered videos and data files.

Per image ``<name>`` in the output folder (video frames go to ``<out>/<video name>/`` and their
pictures into ``<out>/<video name>.mp4``): every task writes a ``<name>.jpg`` picture, and the
files of its :class:`~sapiens2.inference.outputs.Outputs` (the task module's choice; ``sapiens2
predict --help`` lists them).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import multiprocessing
import queue
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from sapiens2.errors import OutputError, Sapiens2Error
from sapiens2.inference.media import Frame, MediaItem, safe_name
from sapiens2.inference.outputs import (
    FolderSink,
    MemorySink,
    Sink,
    WriterOptions,
    encode_image,
    outputs_for,
    write_image,
)
from sapiens2.inference.results import Result
from sapiens2.viz.layout import fit_into

logger = logging.getLogger(__name__)

__all__ = ["BackgroundWriter", "PredictionWriter", "Rendered", "write_image"]


@dataclass
class Rendered:
    """What :meth:`PredictionWriter.render` made of one frame: the files it wrote and, for a
    video frame, the picture still to be added to the video (None for images, without pictures,
    and for video frames of ordered outputs, which are drawn at commit)."""

    paths: list[Path]
    video_picture: np.ndarray | None


#: H.264 encoders tried in order through PyAV (FFmpeg's names; which exist depends on its build).
H264_ENCODERS = ("libx264", "libopenh264", "h264")


def _fps_fraction(fps: float) -> Fraction:
    fps = fps if np.isfinite(fps) and fps > 0 else 25.0
    return Fraction(fps).limit_denominator(1001)


class _AvEncoder:
    """H.264 (yuv420p, MP4 with the index first) through PyAV: what browsers play.

    Raises:
        OutputError: PyAV has no H.264 encoder, or cannot open the file.
    """

    codec = "h264"

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        import av

        h, w = size
        self.size = (h + h % 2, w + w % 2)  # 4:2:0 chroma needs even sides: pad by one pixel
        self._container = av.open(str(path), "w", container_options={"movflags": "faststart"})
        try:
            self._stream = self._h264_stream(av, _fps_fraction(fps))
        except BaseException:
            self._container.close()
            raise
        self._stream.width, self._stream.height = self.size[1], self.size[0]
        self._stream.pix_fmt = "yuv420p"
        self._av = av

    def _h264_stream(self, av, rate: Fraction):
        errors = []
        for name in H264_ENCODERS:
            try:
                stream = self._container.add_stream(name, rate=rate)
            except Exception as err:  # this FFmpeg build lacks the encoder
                errors.append(f"{name}: {err}")
                continue
            self.codec = name
            return stream
        raise OutputError(f"PyAV has no H.264 encoder ({'; '.join(errors)})")

    def write(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        if (h, w) != self.size:
            rgb = cv2.copyMakeBorder(rgb, 0, self.size[0] - h, 0, self.size[1] - w, cv2.BORDER_CONSTANT)  # fmt: skip
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        try:
            self._container.mux(self._stream.encode(None))  # flush the delayed frames
        finally:
            self._container.close()

    @staticmethod
    def count(path: Path) -> int:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size)


class _CvEncoder:
    """MPEG-4 part 2 (``mp4v``) through OpenCV: the fallback without PyAV."""

    codec = "mp4v"

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.size = size
        h, w = size
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not self._writer.isOpened():
            raise OutputError(f"cannot open a video writer for {path}")

    def write(self, rgb: np.ndarray) -> None:
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._writer.release()

    @staticmethod
    def count(path: Path) -> int:
        cap = cv2.VideoCapture(str(path))
        try:
            return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        finally:
            cap.release()


def have_pyav() -> bool:
    """Whether PyAV (the ``video`` extra) is installed."""
    return importlib.util.find_spec("av") is not None


_FALLBACK_LOGGED: list[bool] = []


def _open_encoder(path: Path, fps: float, size: tuple[int, int], codec: str):
    """The encoder for ``codec``: ``"h264"`` (PyAV), ``"mp4v"`` (OpenCV) or ``"auto"`` (H.264
    when PyAV is installed and has an encoder, else mp4v, logged once)."""
    if codec not in ("auto", "h264", "mp4v"):
        raise ValueError(f"unknown video codec {codec!r}; expected auto, h264 or mp4v")
    if codec == "mp4v":
        return _CvEncoder(path, fps, size)
    if codec == "h264" or have_pyav():
        try:
            return _AvEncoder(path, fps, size)
        except Exception as err:
            if codec == "h264":
                raise OutputError(f"cannot write H.264 video {path}: {err}") from err
            reason = f"PyAV cannot write H.264 ({err})"
    else:
        reason = "PyAV is not installed (pip install 'sapiens2[video]')"
    if not _FALLBACK_LOGGED:
        _FALLBACK_LOGGED.append(True)
        logger.info("videos are written as mp4v, which browsers do not play: %s", reason)
    return _CvEncoder(path, fps, size)


class _Video:
    """One output video: every picture becomes a frame of the size of the first one, and
    :meth:`close` checks that the file holds every frame (OpenCV's writer drops a frame of
    another size with a logged warning only).

    Args:
        codec: ``"auto"`` (H.264 through PyAV when installed, else OpenCV's mp4v), ``"h264"``
            or ``"mp4v"``.
    """

    def __init__(self, path: Path, fps: float, size: tuple[int, int], codec: str = "auto") -> None:
        self.path, self.size, self.frames = path, size, 0
        self._refitted = 0
        self._encoder = _open_encoder(path, fps, size, codec)

    @property
    def codec(self) -> str:
        """The encoder writing the file (an H.264 encoder's name, or ``"mp4v"``)."""
        return self._encoder.codec

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
        self._encoder.write(picture)
        self.frames += 1

    def close(self) -> None:
        """Finish the file and check that it holds every frame written.

        Raises:
            OutputError: the file holds fewer frames than were written.
        """
        self._encoder.close()
        stored = self._encoder.count(self.path)
        if stored != self.frames:
            raise OutputError(f"{self.path} holds {stored} of the {self.frames} frames written")


class PredictionWriter:
    """Writes each frame's outputs and, on :meth:`close`, the end-of-run files and videos.

    Args:
        task: the prediction task (its registered outputs say what is written).
        out_dir: output folder (created); None for a writer that only renders into memory
            (:meth:`render_members`) and writes its end-of-run files into a given sink.
        kpt_thr, save_npy, coco_layout, pictures, and other keywords: the
            :class:`~sapiens2.inference.outputs.WriterOptions`.
    """

    def __init__(self, task: str, out_dir: str | Path | None, **options) -> None:
        self.task = task
        self.options = WriterOptions(**options)
        self.outputs = outputs_for(task, self.options)
        self.pictures = self.options.pictures
        self.out = Path(out_dir) if out_dir is not None else None
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
        self._videos: dict[MediaItem, _Video] = {}
        self.written: list[Path] = []

    # ------------------------------------------------------------------ pictures
    def picture(self, frame: Frame, result: Result) -> np.ndarray:
        """The picture of one prediction as uint8 RGB."""
        assert frame.rgb is not None
        return self.outputs.picture(frame, result)

    # ------------------------------------------------------------------ per frame
    def write(self, frame: Frame, result: Result) -> None:
        """Write the files of one frame (and add its picture to the video of a video frame)."""
        self.commit(frame, result, self.render(frame, result))

    def _folder(self, frame: Frame) -> Path:
        if self.out is None:
            raise ValueError("this writer has no output folder: it renders into memory only")
        return self.out / frame.item.name if frame.item.kind == "video" else self.out

    def render(self, frame: Frame, result: Result) -> Rendered:
        """The order-free part of :meth:`write`: draw the picture and write this frame's own
        files. Touches no shared state, so frames may be rendered on several threads at once;
        :meth:`commit` must then be called in frame order."""
        _check_names(frame)
        is_video = frame.item.kind == "video"
        folder = self._folder(frame)
        if self.outputs.frame_files:
            folder.mkdir(parents=True, exist_ok=True)
        if is_video and self.outputs.ordered:
            return Rendered([], None)  # drawn in frame order, at commit
        paths, picture = self._render_into(FolderSink(folder), frame, result)
        return Rendered(paths, picture if is_video and self.pictures else None)

    def render_members(self, frame: Frame, result: Result) -> list[tuple[str, bytes]]:
        """The files :meth:`render` writes for an image frame, as ``(name, bytes)`` in memory
        instead (the same bytes; names relative to the output folder), for output shards."""
        _check_names(frame)
        if frame.item.kind == "video":
            raise ValueError(f"{frame.name}: only image frames are rendered to memory")
        sink = MemorySink()
        self._render_into(sink, frame, result)
        return sink.members

    def _render_into(
        self, sink: Sink, frame: Frame, result: Result
    ) -> tuple[list, np.ndarray | None]:
        """Draw the picture (when wanted or needed for the data files) and put the frame's files
        into ``sink``: the picture of an image, then the task's files."""
        draw = self.pictures or self.outputs.picture_is_data
        picture = self.picture(frame, result) if draw else None
        paths: list = []
        if self.pictures and frame.item.kind != "video":
            paths.append(sink.put(f"{frame.name}.jpg", encode_image(picture, ".jpg")))
        paths.extend(self.outputs.files(sink, frame, result, picture))
        return paths, picture

    def commit(self, frame: Frame, result: Result, rendered: Rendered) -> None:
        """The ordered part of :meth:`write`: video frames, end-of-run records, the file list."""
        _check_names(frame)
        is_video = frame.item.kind == "video"
        self.written.extend(rendered.paths)
        picture = rendered.video_picture
        if is_video and self.outputs.ordered:  # rendered here (see render)
            picture = self.picture(frame, result)
            sink = FolderSink(self._folder(frame))
            self.written.extend(self.outputs.files(sink, frame, result, picture))
        if is_video and self.pictures:
            self._add_video_frame(frame, picture)
        self.outputs.commit(frame, result)
        if is_video and frame.last:
            self._close_video(frame.item)

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
        """What a render process gets: the settings, without the ordered state (open videos, the
        outputs' records), which stays with the committing side."""
        state = self.__dict__.copy()
        state.update(_videos={}, written=[], outputs=self.outputs.fresh())
        return state

    # ------------------------------------------------------------------ end
    def close(self, sink: Sink | None = None) -> None:
        """Release open videos and write the end-of-run files (pose JSON) into ``sink`` (default:
        the output folder).

        Raises:
            OutputError: a video lacks frames (raised after everything else is written).
        """
        errors = []
        for item in list(self._videos):
            try:
                self._close_video(item)
            except OutputError as err:
                errors.append(err)
        if sink is None and self.out is None:
            raise ValueError("this writer has no output folder: give close() a sink")
        self.written.extend(self.outputs.close(sink or FolderSink(self.out)))
        if errors:
            raise errors[0]


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

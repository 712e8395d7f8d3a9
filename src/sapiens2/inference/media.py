"""Media sources: images, folders, glob patterns and videos, read on a background thread.

Videos are streamed frame by frame (never held in memory as a whole). Unreadable files do not stop
the stream: they come out as a :class:`Frame` whose ``error`` says what went wrong.
"""

from __future__ import annotations

import glob
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from sapiens2.data.formats import decode_npy
from sapiens2.data.image import read_image
from sapiens2.errors import DataError
from sapiens2.limits import DEFAULT, check_image_header, check_pixels

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})


@dataclass(frozen=True)
class MediaItem:
    """One input file; ``name`` is unique among the items of one :func:`expand_media` call."""

    path: Path
    kind: Literal["image", "video"]
    name: str


@dataclass
class Frame:
    """One image or video frame.

    Attributes:
        item: the file it comes from.
        name: output name (``<stem>`` for images, ``<stem>_<index:06d>`` for video frames).
        index: frame index within a video (0 for images).
        rgb: ``(H, W, 3)`` uint8 RGB, or None when reading failed.
        error: why reading failed, or None.
        fps: the video frame rate (None for images).
        last: True for the last frame of a video (or for an image).
        prepared: what the reader's ``prepare`` made of ``rgb`` (e.g. the network input), or None.
    """

    item: MediaItem
    name: str
    index: int = 0
    rgb: np.ndarray | None = None
    error: str | None = None
    fps: float | None = None
    last: bool = True
    prepared: Any = None


def safe_name(stem: str) -> str:
    """An output name that stays inside the output folder whatever the input was called: path
    separators and control characters become ``_``, and a name of dots only (``..`` is the stem of
    ``...mp4``) or an empty one gets underscores (``__``), so it is never a parent folder."""
    name = "".join("_" if ch in "/\\" or not ch.isprintable() else ch for ch in stem)
    if not name.strip("."):
        name = "_" * max(2, len(name))
    return name


def _kind(path: Path) -> Literal["image", "video"]:
    return "video" if path.suffix.lower() in VIDEO_EXTENSIONS else "image"


def _is_media(path: Path) -> bool:
    ext = path.suffix.lower()
    return ext in IMAGE_EXTENSIONS or ext in VIDEO_EXTENSIONS


def expand_media(sources: Iterable[str | Path]) -> list[MediaItem]:
    """Resolve files, folders (their image/video files, sorted, not recursive) and glob patterns.

    Output names are the file stems made safe (:func:`safe_name`) and unique. Special files
    (FIFOs, devices, sockets) are never read: a folder or glob passes over them, a path naming one
    is skipped with a warning.

    Raises:
        FileNotFoundError: a path that does not exist, a glob or folder with no media files.
    """
    paths: list[Path] = []
    for src in sources:
        text = str(src)
        p = Path(text)
        if p.exists() and not p.is_dir() and not p.is_file():
            logger.warning("skipping %s: not a regular file (a FIFO, device or socket)", p)
            continue
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and _is_media(q))
            if not found:
                raise FileNotFoundError(f"folder {p} holds no image or video files")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        elif glob.has_magic(text):
            found = sorted(
                Path(q) for q in glob.glob(text) if Path(q).is_file() and _is_media(Path(q))
            )
            if not found:
                raise FileNotFoundError(f"no image or video files match {text!r}")
            paths.extend(found)
        else:
            raise FileNotFoundError(f"input not found: {text}")
    names = unique_names((path.stem, path.suffix) for path in paths)
    return [
        MediaItem(path=path, kind=_kind(path), name=name)
        for path, name in zip(paths, names, strict=True)
    ]


def unique_names(stems: Iterable[tuple[str, str]]) -> list[str]:
    """Output names of inputs given as ``(stem, suffix)`` in input order: the stem made safe
    (:func:`safe_name`); a repeated one gets the suffix (``a.jpg`` and ``a.png``: ``a`` and
    ``a_png``), then a number."""
    out: list[str] = []
    used: set[str] = set()
    for raw, suffix in stems:
        stem = safe_name(raw)
        name = stem
        if name in used:  # a.jpg and a.png, or the same stem in two folders
            name = f"{stem}_{suffix.lstrip('.').lower()}"
            n = 1
            while name in used:
                n += 1
                name = f"{stem}_{n}"
        used.add(name)
        out.append(name)
    return out


def _frames_of(item: MediaItem, max_pixels: int | None = DEFAULT) -> Iterator[Frame]:
    if item.kind == "image":
        try:
            yield Frame(item=item, name=item.name, rgb=read_image(item.path, max_pixels))
        except (OSError, ValueError) as err:
            yield Frame(item=item, name=item.name, error=str(err))
        return
    cap = cv2.VideoCapture(str(item.path))
    try:
        if not cap.isOpened():
            yield Frame(item=item, name=item.name, error=f"cannot open video {item.path}")
            return
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        try:
            check_pixels(h, w, f"video {item.path}", max_pixels)
        except DataError as err:
            yield Frame(item=item, name=item.name, error=str(err))
            return
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or 25.0
        index = 0
        ok, bgr = cap.read()
        if not ok:
            yield Frame(
                item=item, name=item.name, error=f"video {item.path} has no readable frames"
            )
            return
        while ok:
            nxt_ok, nxt = cap.read()
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            yield Frame(
                item=item,
                name=f"{item.name}_{index:06d}",
                index=index,
                rgb=rgb,
                fps=fps,
                last=not nxt_ok,
            )
            ok, bgr = nxt_ok, nxt
            index += 1
    finally:
        cap.release()


class FrameReader:
    """Iterate the frames of media items, decoding on a background thread.

    Args:
        items: from :func:`expand_media`.
        prefetch: how many decoded frames may wait in the queue.
        workers: threads that decode image files at once (frames still come out in order);
            video frames are decoded one after the other.
        prepare: called on each decoded ``rgb`` on the decoding thread; its result is the
            frame's ``prepared`` (e.g. ``Predictor.prepare``: the resize for the network).
        max_pixels: images and videos over this many pixels per frame become error frames
            before decoding (see :mod:`sapiens2.limits`; None for no limit).

    Use as an iterator, ideally in a ``with`` block so that an early exit stops the threads.
    """

    _END = object()

    def __init__(
        self,
        items: list[MediaItem],
        prefetch: int = 8,
        workers: int = 1,
        prepare: Callable[[np.ndarray], Any] | None = None,
        max_pixels: int | None = DEFAULT,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.max_pixels = max_pixels
        self.items = list(items)
        self.workers = workers
        self.prepare = prepare
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _put(self, obj) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(obj, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _frames(self, item: MediaItem) -> Iterator[Frame]:
        for frame in _frames_of(item, self.max_pixels):
            if self.prepare is not None and frame.rgb is not None:
                try:
                    frame.prepared = self.prepare(frame.rgb)
                except (ValueError, MemoryError, cv2.error) as err:  # this frame only
                    frame.rgb, frame.error = None, f"{item.path}: cannot prepare it ({err})"
            yield frame

    def _work(self) -> None:
        pending: deque[Future] = deque()  # image frames being decoded, in order
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="sapiens2-decode") as pool:
                for item in self.items:
                    if item.kind == "image":
                        pending.append(pool.submit(lambda it: next(self._frames(it)), item))
                        if len(pending) < 2 * self.workers:
                            continue
                    while pending and (item.kind == "video" or len(pending) >= 2 * self.workers):
                        if not self._put(pending.popleft().result()):
                            return
                    if item.kind == "video":
                        for frame in self._frames(item):
                            if not self._put(frame):
                                return
                while pending:
                    if not self._put(pending.popleft().result()):
                        return
        except BaseException as err:  # surfaced in the consumer thread
            self._put(err)
        finally:
            self._put(self._END)

    def __iter__(self) -> Iterator[Frame]:
        if self._thread is not None:
            raise RuntimeError("a FrameReader can be iterated once")
        self._thread = threading.Thread(target=self._work, name="sapiens2-media", daemon=True)
        self._thread.start()
        try:
            while True:
                obj = self._queue.get()
                if obj is self._END:
                    return
                if isinstance(obj, BaseException):
                    raise obj
                yield obj
        finally:
            self.close()

    def close(self) -> None:
        """Stop the reading thread (safe to call more than once)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def count_frames(items: list[MediaItem]) -> int | None:
    """Total number of frames (images count 1; videos by their header), None if a video has no count."""
    total = 0
    for item in items:
        if item.kind == "image":
            total += 1
            continue
        cap = cv2.VideoCapture(str(item.path))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        cap.release()
        if n <= 0:
            return None
        total += n
    return total


MASK_SUFFIXES = ("_seg.png", "_seg.npy", "_mask.png", ".npy", ".png")


def read_mask(path: str | Path) -> np.ndarray:
    """Read a foreground mask: a ``.npy`` array or an image; nonzero = foreground.

    Returns:
        ``(H, W)`` bool.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"mask {path}: missing or not a regular file")
    if path.suffix == ".npy":
        arr = decode_npy(path.read_bytes(), f"mask {path}")
    else:
        data = np.fromfile(str(path), dtype=np.uint8)
        check_image_header(data, f"mask {path}")
        try:
            arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            arr = None
        if arr is None:
            raise ValueError(f"cannot decode mask image {path}")
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise DataError(f"mask {path} must be (H, W), got shape {arr.shape}")
    return arr > 0


def find_mask(mask_dir: str | Path, frame: Frame) -> Path | None:
    """The mask file for ``frame`` in ``mask_dir``: ``<name>_seg.png``, ``<name>_seg.npy``,
    ``<name>_mask.png``, ``<name>.npy`` or ``<name>.png`` (``sapiens2 predict --task seg`` output
    works as is). Video frames are also looked up in ``<mask_dir>/<video name>/``."""
    folders = [Path(mask_dir)]
    if frame.item.kind == "video":
        folders.insert(0, Path(mask_dir) / frame.item.name)
    for folder in folders:
        for suffix in MASK_SUFFIXES:
            p = folder / f"{frame.name}{suffix}"
            if p.is_file():
                return p
    return None

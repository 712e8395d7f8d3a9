"""What each task writes per frame: its picture and its data files (``sapiens2 predict``).

An :class:`Outputs` class describes one family of results; the task module picks one and
registers it under the task's name (:func:`register_outputs`). :class:`~sapiens2.inference.writer.
PredictionWriter` makes one instance per run (it may hold state over the frames of a run: the
pose JSON records, a video's depth range) and never branches on the result type.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sapiens2.inference.export import coco_results, pose_frame_record, pose_predictions_json
from sapiens2.inference.media import Frame, MediaItem
from sapiens2.inference.ply import ply_bytes
from sapiens2.viz.dense import DepthRange, albedo_to_rgb, depth_to_rgb, normals_to_rgb
from sapiens2.viz.layout import side_by_side
from sapiens2.viz.pose import draw_pose
from sapiens2.viz.seg import seg_picture

logger = logging.getLogger(__name__)


Buffer = bytes | bytearray | memoryview


def _encoded(rgb: np.ndarray, suffix: str, quality: int) -> np.ndarray:
    # cvtColor swaps the channels ~10x faster than copying the reversed numpy view
    if rgb.ndim == 3 and rgb.shape[2] == 4:
        data = cv2.cvtColor(rgb, cv2.COLOR_RGBA2BGRA)
    elif rgb.ndim == 3:
        data = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    else:
        data = np.ascontiguousarray(rgb)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, data, params)
    if not ok:
        raise ValueError(f"cannot encode image as {suffix}")
    return buf


def encode_image(rgb: np.ndarray, suffix: str, quality: int = 95) -> memoryview:
    """The bytes of an ``(H, W, 3)`` uint8 RGB, ``(H, W, 4)`` RGBA (PNG) or ``(H, W)`` gray image
    in the format of ``suffix`` (``".png"``, ``".jpg"``, ...): what :func:`write_image` writes."""
    return memoryview(_encoded(rgb, suffix, quality)).cast("B")


def write_image(path: Path, rgb: np.ndarray, quality: int = 95) -> Path:
    """Write an ``(H, W, 3)`` uint8 RGB, ``(H, W, 4)`` RGBA (PNG) or ``(H, W)`` gray image; the
    format from the suffix."""
    try:
        _encoded(rgb, path.suffix, quality).tofile(str(path))
    except ValueError:
        raise ValueError(f"cannot encode image {path}") from None
    return path


def encode_npy(array: np.ndarray) -> memoryview:
    """The bytes ``np.save`` writes for ``array`` (a ``.npy`` file)."""
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getbuffer()


class Sink:
    """Where the named files of a frame (or the end-of-run files) go: :class:`FolderSink` writes
    them into a folder, :class:`MemorySink` keeps them (for output shards); the
    :class:`Outputs` encode each file's bytes once and hand them to :meth:`put`."""

    def put(self, name: str, data: Buffer) -> Path | str:
        """Store one file; returns where it went (a path, or the name in memory)."""
        raise NotImplementedError


class FolderSink(Sink):
    """Files in ``folder`` (which must exist), written as they come."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def put(self, name: str, data: Buffer) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        return path


class MemorySink(Sink):
    """Files kept in memory, in the order they were put: ``members`` ``[(name, bytes)]``."""

    def __init__(self) -> None:
        self.members: list[tuple[str, bytes]] = []

    def put(self, name: str, data: Buffer) -> str:
        self.members.append((name, bytes(data)))
        return name


def as_sink(target: Sink | Path | str) -> Sink:
    """A sink as it is; a folder as a :class:`FolderSink`."""
    return target if isinstance(target, Sink) else FolderSink(Path(target))


@dataclass(frozen=True)
class WriterOptions:
    """The user's choices for the outputs (``sapiens2 predict`` flags).

    Attributes:
        kpt_thr: pose keypoint score threshold for drawing and COCO scores.
        save_npy: seg: also write the labels as ``.npy``.
        coco_layout: pose: keypoint layout of ``coco_results.json``.
        pictures: write the ``<name>.jpg`` pictures and rendered videos.
        background: what composites are made over (matting): a colour (a name such as
            ``"green"``, ``"R,G,B"``, ``"#RRGGBB"`` or an RGB tuple) or an image file.
        image_ids: pose: the ``image_id`` of each input in ``coco_results.json``, by file name
            (video frames: frame name), as in a COCO annotation file (``--coco-gt``); inputs
            without one are left out of it. None: a running count of the frames.
        openpose: pose: also write ``<name>_keypoints.json`` in OpenPose's format.
    """

    kpt_thr: float = 0.3
    save_npy: bool = False
    coco_layout: str = "goliath308"
    pictures: bool = True
    background: tuple[int, int, int] | str | Path = "green"
    image_ids: Mapping[str, int] | None = None
    openpose: bool = False


class Outputs:
    """Pictures and files of one task's results, for one run of the writer.

    Attributes:
        help: lines for ``sapiens2 predict --help``: the files written per image.
        frame_files: whether each frame has files of its own (pose writes JSON at the end only).
        ordered: video frames must be drawn in frame order (state carried over the frames), so the
            writer draws them when committing rather than on its render threads.
        picture_is_data: the picture is needed for the data files even without ``pictures``.
        light: results are small (labels, keypoints): cheap to send to a render process, which
            ``sapiens2 predict`` then uses by default beside an accelerator.
    """

    help: tuple[str, ...] = ()
    light: bool = False
    frame_files: bool = True
    ordered: bool = False
    picture_is_data: bool = False

    def __init__(self, options: WriterOptions) -> None:
        self.options = options

    def picture(self, frame: Frame, result) -> np.ndarray:
        """The picture of one prediction as uint8 RGB."""
        raise NotImplementedError

    def files(self, sink: Sink, frame: Frame, result, picture: np.ndarray | None) -> list:
        """Put the frame's own data files into ``sink``; returns where they went."""
        return []

    def commit(self, frame: Frame, result) -> None:
        """Record what the end-of-run files need (called in frame order)."""

    def close(self, out: Sink | Path) -> list:
        """Write the end-of-run files into ``out`` (a sink or a folder); returns where they
        went."""
        return []

    def fresh(self) -> Outputs:
        """A copy without the run's ordered state (for a render process)."""
        return type(self)(self.options)

    def table_columns(self) -> list[tuple[str, Any]]:
        """The task's own Parquet columns, ``(name, pyarrow type)``, after the common ones
        (``predict --engine ray --output-format parquet``); none by default: dense maps are
        files."""
        return []

    def table_values(self, result) -> dict[str, Any]:
        """The values of :meth:`table_columns` for one result."""
        return {}


def _json(data) -> bytes:
    """JSON as the output files hold it (non-finite numbers refused)."""
    return json.dumps(data, allow_nan=False).encode()


def _right_half(picture: np.ndarray | None, rgb: np.ndarray) -> np.ndarray | None:
    """The result half of a ``[input | result]`` picture of ``rgb``'s size, else None."""
    h, w = rgb.shape[:2]
    if picture is not None and picture.shape[:2] == (h, 2 * w):
        return picture[:, w:]
    return None


class PoseOutputs(Outputs):
    help = (
        "predictions.json      official schema (one <video>_predictions.json per video)",
        "coco_results.json     COCO keypoint results, [x, y, score] * K (--coco-layout; "
        "WholeBody split per part)",
        "<name>_keypoints.json OpenPose JSON, BODY_25 + face 70 + hands 21 (with --openpose)",
    )
    frame_files = False

    def table_columns(self):
        import pyarrow as pa

        f32 = pa.float32()
        return [
            ("boxes", pa.list_(pa.list_(f32, 4))),
            ("box_scores", pa.list_(f32)),
            ("keypoints", pa.list_(pa.list_(pa.list_(f32, 2)))),
            ("keypoint_scores", pa.list_(pa.list_(f32))),
        ]

    def table_values(self, result):
        return {
            "boxes": result.boxes[:, :4].tolist(),
            "box_scores": result.box_scores.tolist(),
            "keypoints": result.keypoints.tolist(),
            "keypoint_scores": result.scores.tolist(),
        }

    light = True

    def __init__(self, options: WriterOptions) -> None:
        super().__init__(options)
        self.frame_files = options.openpose
        self._frames: dict[MediaItem | None, list[dict]] = {}
        self._coco: list[dict] = []
        self._without_id: list[str] = []

    def picture(self, frame, result):
        return draw_pose(frame.rgb, result.keypoints, result.scores, kpt_thr=self.options.kpt_thr)

    def files(self, sink, frame, result, picture):
        if not self.options.openpose:
            return []
        from sapiens2.inference.openpose import openpose_json

        data = openpose_json(result, kpt_thr=self.options.kpt_thr)
        return [sink.put(f"{frame.name}_keypoints.json", _json(data))]

    def _image_id(self, frame) -> int | None:
        ids = self.options.image_ids
        if ids is None:  # COCO id: frames so far
            return sum(len(v) for v in self._frames.values()) - 1
        for key in (
            (frame.item.path.name, frame.name) if frame.item.kind == "image" else (frame.name,)
        ):
            if key in ids:
                return ids[key]
        return None

    def commit(self, frame, result):
        key = frame.item if frame.item.kind == "video" else None
        self._frames.setdefault(key, []).append(pose_frame_record(result, frame.name))
        image_id = self._image_id(frame)
        if image_id is None:
            self._without_id.append(frame.name)
            return
        self._coco.extend(
            coco_results(
                result, image_id, frame.name, self.options.kpt_thr, self.options.coco_layout
            )
        )

    def close(self, out):
        sink = as_sink(out)
        paths = []
        thr = self.options.kpt_thr
        for item, frames in self._frames.items():
            if item is None:
                name = "predictions.json"
                data = pose_predictions_json(frames, video=None, kpt_thr=thr)
            else:
                name = f"{item.name}_predictions.json"
                data = pose_predictions_json(frames, video=str(item.path.name), kpt_thr=thr)
            paths.append(sink.put(name, _json(data)))
        path = sink.put("coco_results.json", _json(self._coco))
        if self._without_id:
            logger.warning("%d frame(s) have no image id in the COCO annotation file and are left "
                           "out of %s: %s", len(self._without_id), path,
                           ", ".join(self._without_id[:10]))  # fmt: skip
        return [*paths, path]


class SegOutputs(Outputs):
    help = ("<name>_seg.png        uint8 class ids 0..28 (+ <name>_seg.npy int64 with --save-npy)",)
    light = True

    def picture(self, frame, result):  # a video's frames need one size: a fixed legend
        return seg_picture(frame.rgb, result.labels, fixed_legend=frame.item.kind == "video")

    def files(self, sink, frame, result, picture):
        name = frame.name
        paths = [sink.put(f"{name}_seg.png", encode_image(result.labels.astype(np.uint8), ".png"))]
        if self.options.save_npy:
            paths.append(sink.put(f"{name}_seg.npy", encode_npy(result.labels.astype(np.int64))))
        return paths


class NormalOutputs(Outputs):
    help = ("<name>_normal.npy     float32 (H, W, 3) camera-frame normals, and <name>_normal.png",)

    def picture(self, frame, result):
        return side_by_side(frame.rgb, normals_to_rgb(result.normals, result.mask))

    def files(self, sink, frame, result, picture):
        name = frame.name
        normals = encode_npy(result.normals.astype(np.float32, copy=False))
        paths = [sink.put(f"{name}_normal.npy", normals)]
        rgb = _right_half(picture, frame.rgb)
        if rgb is None:
            rgb = normals_to_rgb(result.normals, result.mask)
        return [*paths, sink.put(f"{name}_normal.png", encode_image(rgb, ".png"))]


class AlbedoOutputs(Outputs):
    help = ("<name>_albedo.png     RGB albedo",)

    def picture(self, frame, result):
        return side_by_side(frame.rgb, albedo_to_rgb(result.albedo, result.mask))

    def files(self, sink, frame, result, picture):
        rgb = _right_half(picture, frame.rgb)
        if rgb is None:
            rgb = albedo_to_rgb(result.albedo, result.mask)
        return [sink.put(f"{frame.name}_albedo.png", encode_image(rgb, ".png"))]


class PointmapOutputs(Outputs):
    help = (
        "<name>_depth.npy      float32 (H, W) metres, <name>.ply point cloud, <name>_depth.png",
        "<name>_points.npy     float32 (H, W, 3) XYZ metres; <name>_camera.json scale, intrinsics",
    )
    ordered = True  # a video's depth colours use one range, grown over its frames
    picture_is_data = True  # the depth PNG is the right half of the picture

    def __init__(self, options: WriterOptions) -> None:
        super().__init__(options)
        self._ranges: dict[MediaItem, DepthRange] = {}

    def picture(self, frame, result):
        bounds = None
        if frame.item.kind == "video":
            bounds = self._ranges.setdefault(frame.item, DepthRange()).update(
                result.depth, result.mask
            )
        return side_by_side(frame.rgb, depth_to_rgb(result.depth, result.mask, bounds))

    def files(self, sink, frame, result, picture):
        name = frame.name
        paths = [
            sink.put(f"{name}_depth.npy", encode_npy(result.depth.astype(np.float32))),
            sink.put(
                f"{name}_points.npy", encode_npy(result.points.astype(np.float32, copy=False))
            ),
            sink.put(f"{name}_camera.json", _json(result.camera())),
        ]
        x, y, z = np.moveaxis(result.points, -1, 0)  # ~5x faster than isfinite(...).all(-1)
        valid = np.isfinite(x) & np.isfinite(y) & np.isfinite(z) & (result.depth > 0)
        if result.mask is not None:
            valid &= result.mask
        width = frame.rgb.shape[1]
        return [
            *paths,
            sink.put(f"{name}.ply", ply_bytes(result.points[valid], frame.rgb[valid])),
            sink.put(f"{name}_depth.png", encode_image(picture[:, width:], ".png")),
        ]


OutputsFactory = Callable[[WriterOptions], Outputs]
_OUTPUTS: dict[str, OutputsFactory] = {}


def register_outputs(task: str, factory: OutputsFactory) -> None:
    """Make ``task``'s outputs known to the writer (called by the task modules)."""
    old = _OUTPUTS.get(task)
    if old is not None and old is not factory:
        raise ValueError(f"outputs are already registered for task {task!r}")
    _OUTPUTS[task] = factory


def outputs_for(task: str, options: WriterOptions) -> Outputs:
    if task not in _OUTPUTS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(_OUTPUTS)}")
    return _OUTPUTS[task](options)


def outputs_help(task: str) -> tuple[str, ...]:
    return getattr(_OUTPUTS.get(task), "help", ())

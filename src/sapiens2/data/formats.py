"""Readers (and small writers) for the on-disk dataset format, with validation (docs/formats.md).

A dataset root holds split folders (``train/``, ``val/``), each with::

    images/<id>.png      RGB uint8             mask/<id>.png       uint8, >0 = person
    seg/<id>.png         uint8 labels, 255 = ignore
    normal/<id>.npy      float32 (H, W, 3) unit normals (OpenCV camera frame)
    pointmap/<id>.npy    float32 (H, W, 3) camera-frame XYZ in metres
    camera/<id>.json     {"K": 3x3, "width": W, "height": H}
    albedo/<id>.png      RGB uint8
    alpha/<id>.png       uint8 alpha matte (0 background .. 255 person)
    foreground/<id>.png  RGB uint8 person colour pre-multiplied by alpha
    pose.json            COCO-style, 308 keypoints per person in "goliath_wholebody_kpts"

and optionally ``seg_classes.json`` at the root (a user class list with its own flip pairs).
Every reader checks what it reads and raises :class:`DataError` naming the file and the problem.
Decoders take ``(bytes, name)`` so that the same checks apply to files inside tar shards.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sapiens2.data.image import read_image
from sapiens2.data.metadata import keypoints308, seg29
from sapiens2.errors import DataError
from sapiens2.limits import DEFAULT, check_image_header

__all__ = [
    "FOLDER_LAYOUT",
    "IMAGE_SUFFIXES",
    "SHARD_EXT",
    "TASK_FIELDS",
    "Camera",
    "DataError",
    "DatasetFolder",
    "PoseImage",
    "PoseInstance",
    "SegClasses",
    "check_coco_structure",
    "coco_wholebody_to_308",
    "decode_albedo",
    "decode_alpha",
    "decode_camera",
    "decode_foreground",
    "decode_image",
    "decode_mask",
    "decode_normal",
    "decode_npy",
    "decode_pointmap",
    "decode_seg",
    "encode_camera",
    "encode_npy",
    "encode_png",
    "load_pose_json",
    "load_seg_classes",
    "parse_pose_annotations",
    "pose_json_dict",
    "read_image",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

#: Folders each task needs inside a split (pose also needs ``pose.json``).
TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "pose": ("image",),
    "seg": ("image", "seg"),
    "normal": ("image", "normal", "mask"),
    "pointmap": ("image", "pointmap", "camera", "mask"),
    "albedo": ("image", "albedo", "mask"),
    "matting": ("image", "alpha", "foreground"),
}

#: field -> (folder, file suffix) in a split folder
FOLDER_LAYOUT: dict[str, tuple[str, str]] = {
    "image": ("images", ".png"),
    "mask": ("mask", ".png"),
    "seg": ("seg", ".png"),
    "normal": ("normal", ".npy"),
    "pointmap": ("pointmap", ".npy"),
    "camera": ("camera", ".json"),
    "albedo": ("albedo", ".png"),
    "alpha": ("alpha", ".png"),
    "foreground": ("foreground", ".png"),
}

#: field -> extension of the member in a tar shard (``<key>.<ext>``)
SHARD_EXT: dict[str, str] = {
    "image": "rgb.png",
    "mask": "mask.png",
    "seg": "seg.png",
    "normal": "normal.npy",
    "pointmap": "pointmap.npy",
    "camera": "camera.json",
    "albedo": "albedo.png",
    "alpha": "alpha.png",
    "foreground": "foreground.png",
    "pose": "pose.json",
}


# --------------------------------------------------------------------------------------------------
# Encoders (used by writers, shards and tests)


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) uint8 label/mask or an (H, W, 3) uint8 RGB image."""
    a = np.asarray(array)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"encode_png: expected (H, W) or (H, W, 3) uint8, got {a.shape} {a.dtype}")
    if a.ndim == 3:
        a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", a)
    if not ok:
        raise ValueError("encode_png: OpenCV could not encode the array")
    return buf.tobytes()


def encode_npy(array: np.ndarray) -> bytes:
    """``.npy`` bytes of an array (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def encode_camera(K: np.ndarray, width: int, height: int) -> bytes:
    """Camera JSON bytes ``{"K": [[fx,0,cx],[0,fy,cy],[0,0,1]], "width": W, "height": H}``."""
    return json.dumps(
        {"K": np.asarray(K, dtype=np.float64).tolist(), "width": int(width), "height": int(height)}
    ).encode()


# --------------------------------------------------------------------------------------------------
# Decoders with validation


def _check_hw(arr: np.ndarray, hw: tuple[int, int] | None, name: str, what: str) -> None:
    if hw is not None and tuple(arr.shape[:2]) != tuple(hw):
        raise DataError(
            f"{name}: {what} is {arr.shape[0]}x{arr.shape[1]} (HxW) but the image is {hw[0]}x{hw[1]}"
        )


def _imdecode(data: bytes, name: str, flags: int, max_pixels: int | None = DEFAULT) -> np.ndarray:
    if not data:
        raise DataError(f"{name}: file is empty")
    check_image_header(data, name, max_pixels)  # before decoding: a small file can declare GBs
    try:
        arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as e:  # e.g. over OpenCV's own 2**30-pixel limit
        raise DataError(f"{name}: OpenCV cannot decode it ({_cv2_reason(e)})") from None
    if arr is None:
        raise DataError(f"{name}: not a readable image")
    return arr


def _cv2_reason(err: Exception) -> str:
    """The useful line of an OpenCV error message."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__


def decode_image(data: bytes, name: str, max_pixels: int | None = DEFAULT) -> np.ndarray:
    """Decode an RGB image (grey and RGBA are converted; 16-bit is refused). Returns (H, W, 3) uint8.

    An image whose header declares more than ``max_pixels`` pixels (default: the limit of
    :mod:`sapiens2.limits`, 100 MP; None for none) raises :class:`ImageTooLargeError` (a
    DataError) without being decoded.
    """
    arr = _imdecode(data, name, cv2.IMREAD_UNCHANGED, max_pixels)
    if arr.dtype != np.uint8:
        raise DataError(f"{name}: image must be 8-bit, got {arr.dtype}")
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    if arr.shape[2] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
    if arr.shape[2] == 3:
        return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    raise DataError(f"{name}: image has {arr.shape[2]} channels")


def decode_mask(data: bytes, name: str, hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a foreground mask as (H, W) uint8 with 255 = person, 0 = background (input > 0 = person)."""
    arr = _imdecode(data, name, cv2.IMREAD_UNCHANGED)
    if arr.ndim == 3:
        arr = arr[..., 0]  # first channel, as the official readers
    _check_hw(arr, hw, name, "mask")
    return np.where(arr > 0, 255, 0).astype(np.uint8)


def decode_seg(
    data: bytes, name: str, hw: tuple[int, int] | None = None, num_classes: int = 29
) -> np.ndarray:
    """Decode part labels as (H, W) uint8; values must be < ``num_classes`` or 255 (ignore)."""
    arr = _imdecode(data, name, cv2.IMREAD_UNCHANGED)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise DataError(
            f"{name}: label image must be single-channel 8-bit, got shape {arr.shape} {arr.dtype}"
        )
    _check_hw(arr, hw, name, "label image")
    bad = (arr >= num_classes) & (arr != 255)
    if bad.any():
        vals = sorted(int(v) for v in np.unique(arr[bad]))[:10]
        raise DataError(f"{name}: labels {vals} outside 0..{num_classes - 1} (255 = ignore)")
    return arr


def decode_npy(data: bytes, name: str) -> np.ndarray:
    """Decode ``.npy`` bytes (never unpickling), after checking that the shape the header declares
    fits the bytes that follow it (a 100-byte file cannot make us allocate gigabytes)."""
    if not data:
        raise DataError(f"{name}: file is empty")
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(buf)
    except Exception as e:  # numpy raises ValueError, SyntaxError, UnicodeDecodeError...
        raise DataError(f"{name}: not a readable .npy array ({e})") from None
    if dtype.hasobject:
        raise DataError(f"{name}: .npy array of Python objects refused")
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    have = len(data) - buf.tell()
    if need != have:
        raise DataError(
            f"{name}: .npy header declares {shape} {dtype} ({need} bytes) but holds {have} bytes"
        )
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:
        raise DataError(f"{name}: not a readable .npy array ({e})") from e


def _decode_map3(data: bytes, name: str, hw: tuple[int, int] | None, what: str) -> np.ndarray:
    arr = decode_npy(data, name)
    if arr.ndim != 3 or arr.shape[2] != 3 or not np.issubdtype(arr.dtype, np.floating):
        raise DataError(
            f"{name}: {what} must be a float (H, W, 3) array, got {arr.shape} {arr.dtype}"
        )
    _check_hw(arr, hw, name, what)
    arr = arr.astype(np.float32, copy=False)
    n_bad = int((~np.isfinite(arr)).any(axis=2).sum())
    if n_bad:
        raise DataError(f"{name}: {what} has {n_bad} pixels with NaN/inf values")
    return arr


def decode_normal(
    data: bytes, name: str, hw: tuple[int, int] | None = None, mask: np.ndarray | None = None
) -> np.ndarray:
    """Decode normals (H, W, 3) float32; inside ``mask`` their length must be within 0.9..1.1."""
    arr = _decode_map3(data, name, hw, "normal map")
    if mask is not None:
        norm = np.linalg.norm(arr, axis=2)
        bad = (mask > 0) & ((norm < 0.9) | (norm > 1.1))
        if bad.any():
            raise DataError(
                f"{name}: {int(bad.sum())} foreground pixels have non-unit normals (length outside 0.9..1.1)"
            )
    return arr


def decode_pointmap(
    data: bytes, name: str, hw: tuple[int, int] | None = None, mask: np.ndarray | None = None
) -> np.ndarray:
    """Decode a pointmap (H, W, 3) float32 metres; inside ``mask`` the depth Z must be > 0."""
    arr = _decode_map3(data, name, hw, "pointmap")
    if mask is not None:
        bad = (mask > 0) & (arr[..., 2] <= 0)
        if bad.any():
            raise DataError(f"{name}: {int(bad.sum())} foreground pixels have depth Z <= 0")
    return arr


def decode_albedo(data: bytes, name: str, hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an RGB albedo image as (H, W, 3) uint8."""
    arr = decode_image(data, name)
    _check_hw(arr, hw, name, "albedo")
    return arr


def decode_alpha(data: bytes, name: str, hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an alpha matte as (H, W) uint8 (0 = background, 255 = person): a single-channel
    8-bit image, or three or four equal channels (grey saved as RGB)."""
    arr = _imdecode(data, name, cv2.IMREAD_UNCHANGED)
    if arr.dtype != np.uint8:
        raise DataError(f"{name}: alpha matte must be 8-bit, got {arr.dtype}")
    if arr.ndim == 3:
        colour = arr[..., :3]
        if not (colour == colour[..., :1]).all():
            raise DataError(
                f"{name}: alpha matte must be single-channel (grey), got {arr.shape[2]} "
                "different channels"
            )
        arr = np.ascontiguousarray(colour[..., 0])
    _check_hw(arr, hw, name, "alpha matte")
    return arr


def decode_foreground(
    data: bytes, name: str, hw: tuple[int, int] | None = None, alpha: np.ndarray | None = None
) -> np.ndarray:
    """Decode a pre-multiplied foreground as (H, W, 3) uint8 RGB. With ``alpha`` (H, W) uint8 no
    channel may exceed its alpha by more than 1 (rounding): a brighter pixel means straight,
    not pre-multiplied, colour."""
    arr = decode_image(data, name)
    _check_hw(arr, hw, name, "foreground")
    if alpha is not None:
        over = (arr.astype(np.int16) > alpha[..., None].astype(np.int16) + 1).any(axis=2)
        if over.any():
            raise DataError(
                f"{name}: {int(over.sum())} pixels are brighter than their alpha; the foreground "
                "must be pre-multiplied by alpha (foreground * alpha / 255)"
            )
    return arr


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics ``K`` (3, 3) float64 of a ``width`` × ``height`` image."""

    K: np.ndarray
    width: int
    height: int


def decode_camera(data: bytes, name: str, hw: tuple[int, int] | None = None) -> Camera:
    """Decode and check a camera JSON (``K`` 3x3 with fx, fy > 0 and last row 0 0 1; size = image)."""
    try:
        d = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{name}: not valid JSON ({e})") from e
    for k in ("K", "width", "height"):
        if not isinstance(d, dict) or k not in d:
            raise DataError(f"{name}: camera JSON lacks key {k!r}")
    try:
        K = np.asarray(d["K"], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name}: K is not numeric ({e})") from e
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise DataError(f"{name}: K must be a finite 3x3 matrix, got shape {K.shape}")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0:
        raise DataError(
            f"{name}: K must be [[fx,s,cx],[0,fy,cy],[0,0,1]] with fx, fy > 0, got {K.tolist()}"
        )
    w, h = d["width"], d["height"]
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
        raise DataError(f"{name}: width/height must be positive integers, got {w!r}, {h!r}")
    if hw is not None and (h, w) != tuple(hw):
        raise DataError(
            f"{name}: camera is for a {h}x{w} (HxW) image but the image is {hw[0]}x{hw[1]}"
        )
    return Camera(K=K, width=w, height=h)


# --------------------------------------------------------------------------------------------------
# Segmentation class lists


@dataclass(frozen=True)
class SegClasses:
    """A part-label class list: names, left/right flip pairs and an optional RGB palette (C, 3)."""

    names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    palette: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @staticmethod
    def default() -> SegClasses:
        """The 29-class layout of the official models."""
        m = seg29()
        return SegClasses(
            names=m.names,
            flip_pairs=tuple((int(a), int(b)) for a, b in m.flip_pairs),
            palette=m.palette,
        )


def load_seg_classes(path: str | Path) -> SegClasses:
    """Read a user class list ``{"names": [...], "flip_pairs": [[a, b], ...], "palette": [[r,g,b], ...]}``.

    ``flip_pairs`` and ``palette`` are optional; at most 255 classes (255 is the ignore label).
    """
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise DataError(f"{p}: missing class list") from e
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise DataError(f"{p}: not valid JSON ({e})") from e
    names = d.get("names") if isinstance(d, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataError(f"{p}: 'names' must be a non-empty list of strings")
    if len(names) > 255:
        raise DataError(f"{p}: {len(names)} classes; at most 255 (255 is the ignore label)")
    pairs = d.get("flip_pairs", [])
    seen: set[int] = set()
    out_pairs = []
    for pair in pairs:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int) for v in pair)
        ):
            raise DataError(f"{p}: flip pair {pair!r} must be two integers")
        a, b = pair
        if not (0 <= a < len(names) and 0 <= b < len(names)) or a == b or a in seen or b in seen:
            raise DataError(
                f"{p}: invalid flip pair {pair!r} (out of range, self-pair or repeated class)"
            )
        seen.update(pair)
        out_pairs.append((a, b))
    palette = None
    if "palette" in d:
        rows = d["palette"]
        if not (
            isinstance(rows, list)
            and len(rows) == len(names)
            and all(
                isinstance(c, list) and len(c) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in c)
                for c in rows
            )
        ):
            raise DataError(f"{p}: palette must be {len(names)} RGB triples of integers 0..255")
        palette = np.asarray(rows, dtype=np.uint8)
    return SegClasses(names=tuple(names), flip_pairs=tuple(out_pairs), palette=palette)


# --------------------------------------------------------------------------------------------------
# Pose annotations


@dataclass(frozen=True)
class PoseInstance:
    """One annotated person: ``bbox_xywh`` (4,), ``keypoints`` (K, 3) float32 (x, y, v)."""

    ann_id: int
    image_id: int
    bbox_xywh: np.ndarray
    keypoints: np.ndarray
    iscrowd: int = 0


@dataclass(frozen=True)
class PoseImage:
    """An image entry of a pose file with its instances."""

    image_id: int
    file_name: str
    width: int
    height: int
    instances: tuple[PoseInstance, ...]


# COCO-WholeBody keeps its 133 points in five lists, in this order.
_WHOLEBODY_PARTS = (
    ("keypoints", 17),
    ("foot_kpts", 6),
    ("face_kpts", 68),
    ("lefthand_kpts", 21),
    ("righthand_kpts", 21),
)


def coco_wholebody_to_308(ann: Mapping[str, Any], name: str = "annotation") -> np.ndarray:
    """Map a COCO (17) or COCO-WholeBody (133) annotation to the 308 layout.

    Only the points that exist in both layouts are filled (``keypoints308().coco_wholebody_to_goliath``);
    every other point gets ``v = 0`` (not labelled). Missing part lists count as unlabelled.

    Returns:
        (308, 3) float32 (x, y, v).
    """
    flat = []
    for key, n in _WHOLEBODY_PARTS:
        vals = ann.get(key)
        if vals is None:
            flat.append(np.zeros((n, 3)))
            continue
        a = np.asarray(vals, dtype=np.float64)
        if a.size != n * 3:
            raise DataError(f"{name}: {key!r} has {a.size} values, expected {n * 3}")
        flat.append(a.reshape(n, 3))
    wb = np.concatenate(flat)  # (133, 3)
    meta = keypoints308()
    out = np.zeros((meta.num_keypoints, 3), dtype=np.float32)
    for src, dst in meta.coco_wholebody_to_goliath.items():
        out[dst] = wb[src]
    return out


def _pose_instance(
    ann: Mapping[str, Any],
    width: int,
    height: int,
    name: str,
    num_keypoints: int,
    out_of_range: str,
) -> PoseInstance:
    if not isinstance(ann, Mapping):
        raise DataError(f"{name}: an annotation is a {type(ann).__name__}, not an object")
    ann_id = ann.get("id", -1)
    where = f"{name}: annotation id={ann_id!r:.20}"
    if not _is_int(ann_id) or not _is_int(ann.get("iscrowd", 0)):
        raise DataError(f"{where}: 'id' and 'iscrowd' must be integers")
    try:
        return _parse_instance(ann, ann_id, width, height, where, num_keypoints, out_of_range)
    except (TypeError, ValueError, OverflowError) as e:  # non-numbers where numbers belong
        if isinstance(e, DataError):
            raise
        raise DataError(f"{where}: keypoints and bbox must be numbers ({e})") from None


def _parse_instance(
    ann: Mapping[str, Any],
    ann_id: int,
    width: int,
    height: int,
    where: str,
    num_keypoints: int,
    out_of_range: str,
) -> PoseInstance:
    if "goliath_wholebody_kpts" in ann:
        kp = np.asarray(ann["goliath_wholebody_kpts"], dtype=np.float64)
        if kp.size != num_keypoints * 3:
            raise DataError(
                f"{where}: goliath_wholebody_kpts has {kp.size} values, expected {num_keypoints}*3"
            )
        kp = kp.reshape(num_keypoints, 3)
    elif "keypoints" in ann:
        if num_keypoints != keypoints308().num_keypoints:
            raise DataError(
                f"{where}: COCO keypoints can only be mapped to the 308-keypoint layout"
            )
        kp = coco_wholebody_to_308(ann, where).astype(np.float64)
    else:
        raise DataError(f"{where}: no 'goliath_wholebody_kpts' nor COCO 'keypoints'")
    if not np.all(np.isfinite(kp)):
        raise DataError(f"{where}: keypoints contain NaN/inf")
    v = kp[:, 2]
    if not np.all(np.isin(v, (0, 1, 2))):
        raise DataError(
            f"{where}: visibility values {sorted(set(v.tolist()) - {0, 1, 2})} not in 0/1/2"
        )
    labelled = v > 0
    outside = labelled & (
        (kp[:, 0] < 0) | (kp[:, 0] > width) | (kp[:, 1] < 0) | (kp[:, 1] > height)
    )
    if outside.any():
        idx = np.flatnonzero(outside)
        if out_of_range == "error":
            raise DataError(
                f"{where}: {len(idx)} labelled keypoints outside the {width}x{height} image, "
                f"e.g. #{idx[0]} at ({kp[idx[0], 0]:.1f}, {kp[idx[0], 1]:.1f})"
            )
        logger.warning("%s: %d keypoints outside the image marked unlabelled", where, len(idx))
        kp[idx] = 0
    bbox = ann.get("bbox")
    if bbox is None:
        if not labelled.any():
            raise DataError(f"{where}: no bbox and no labelled keypoints")
        lo, hi = kp[labelled, :2].min(0), kp[labelled, :2].max(0)
        bbox = [lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]
    b = np.asarray(bbox, dtype=np.float64)
    if b.shape != (4,) or not np.all(np.isfinite(b)) or b[2] < 0 or b[3] < 0:
        raise DataError(f"{where}: bbox must be [x, y, w, h] with w, h >= 0, got {bbox!r}")
    return PoseInstance(
        ann_id=int(ann_id),
        image_id=int(ann.get("image_id", -1)),
        bbox_xywh=b,
        keypoints=kp.astype(np.float32),
        iscrowd=int(ann.get("iscrowd", 0)),
    )


def parse_pose_annotations(
    anns: Sequence[Mapping[str, Any]],
    width: int,
    height: int,
    name: str,
    num_keypoints: int = 308,
    out_of_range: str = "error",
) -> tuple[PoseInstance, ...]:
    """Validate and convert a list of annotations of one ``width`` × ``height`` image.

    Args:
        anns: COCO annotation dicts (308-layout ``goliath_wholebody_kpts`` or COCO/COCO-WholeBody).
        name: file name used in error messages.
        out_of_range: ``"error"`` (default) raises on labelled keypoints outside ``[0, W] x [0, H]``;
            ``"drop"`` marks them unlabelled and logs a warning.
    """
    if out_of_range not in ("error", "drop"):
        raise ValueError(f"out_of_range must be 'error' or 'drop', got {out_of_range!r}")
    if not isinstance(anns, list | tuple):
        raise DataError(f"{name}: annotations must be a list")
    return tuple(_pose_instance(a, width, height, name, num_keypoints, out_of_range) for a in anns)


def load_pose_json(
    path: str | Path, num_keypoints: int = 308, out_of_range: str = "error"
) -> list[PoseImage]:
    """Read a COCO-style pose file (308 keypoints, or COCO / COCO-WholeBody mapped to 308).

    Checks: keys present, image ids unique, every annotation refers to a known image, keypoint
    counts, visibility in {0, 1, 2}, no NaN, labelled keypoints inside the image, boxes valid.

    Returns:
        One :class:`PoseImage` per image entry (images without annotations included), in file order.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: missing pose annotation file")
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: not valid JSON ({e})") from e
    if not isinstance(d, dict) or "images" not in d or "annotations" not in d:
        raise DataError(f"{p}: a pose file needs 'images' and 'annotations'")
    check_coco_structure(d, str(p))
    images: dict[int, dict] = {}
    for im in d["images"]:
        if im["id"] in images:
            raise DataError(f"{p}: duplicate image id {im['id']}")
        images[im["id"]] = im
    per_image: dict[int, list] = {i: [] for i in images}
    for a in d["annotations"]:
        iid = a.get("image_id")
        if iid not in images:
            raise DataError(f"{p}: annotation id={a.get('id')} refers to unknown image_id {iid!r}")
        per_image[iid].append(a)
    out = []
    for iid, im in images.items():
        inst = parse_pose_annotations(
            per_image[iid], int(im["width"]), int(im["height"]), str(p), num_keypoints, out_of_range
        )
        out.append(
            PoseImage(int(iid), str(im["file_name"]), int(im["width"]), int(im["height"]), inst)
        )
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_coco_structure(d: Mapping[str, Any], name: str) -> None:
    """Raise :class:`DataError` unless ``d`` has the COCO structure a pose file needs: lists of
    ``images`` (objects with an integer ``id``, a string ``file_name``, positive integer
    ``width`` and ``height``) and ``annotations`` (objects with an integer ``image_id``; their
    keypoints are checked when parsed)."""
    images, anns = d.get("images"), d.get("annotations")
    if not isinstance(images, list) or not isinstance(anns, list):
        raise DataError(f"{name}: 'images' and 'annotations' must be lists")
    for i, im in enumerate(images):
        where = f"{name}: images[{i}]"
        if not isinstance(im, dict):
            raise DataError(f"{where} is a {type(im).__name__}, not an object")
        for k in ("id", "file_name", "width", "height"):
            if k not in im:
                raise DataError(f"{where} ({im!r:.60}) lacks {k!r}")
        if not _is_int(im["id"]) or not isinstance(im["file_name"], str):
            raise DataError(f"{where}: 'id' must be an integer and 'file_name' a string")
        if not all(_is_int(im[k]) and im[k] > 0 for k in ("width", "height")):
            raise DataError(f"{where}: 'width' and 'height' must be positive integers")
    for i, a in enumerate(anns):
        if not isinstance(a, dict):
            raise DataError(f"{name}: annotations[{i}] is a {type(a).__name__}, not an object")
        if not _is_int(a.get("image_id")):
            raise DataError(f"{name}: annotations[{i}] needs an integer 'image_id'")


def pose_json_dict(images: Iterable[PoseImage]) -> dict[str, Any]:
    """Build the pose-file dict (308 layout) from :class:`PoseImage` entries (for writers/tests)."""
    meta = keypoints308()
    img_list, ann_list = [], []
    for im in images:
        img_list.append(
            {"id": im.image_id, "file_name": im.file_name, "width": im.width, "height": im.height}
        )
        for inst in im.instances:
            kp = np.asarray(inst.keypoints, dtype=np.float64)
            b = np.asarray(inst.bbox_xywh, dtype=np.float64)
            ann_list.append(
                {
                    "id": inst.ann_id,
                    "image_id": im.image_id,
                    "category_id": 1,
                    "bbox": b.tolist(),
                    "area": float(b[2] * b[3]),
                    "iscrowd": inst.iscrowd,
                    "num_keypoints": int((kp[:, 2] > 0).sum()),
                    "goliath_wholebody_kpts": kp.reshape(-1).tolist(),
                }
            )
    skeleton = np.asarray(meta.skeleton).tolist()
    cat = {"id": 1, "name": "person", "keypoints": list(meta.names), "skeleton": skeleton}
    return {"images": img_list, "annotations": ann_list, "categories": [cat]}


# --------------------------------------------------------------------------------------------------
# Split folders


class DatasetFolder:
    """One split folder (``<root>/<split>``) of the on-disk format.

    Sample ids come from ``images/`` (``<id>.png``; other common image suffixes are accepted).
    :meth:`check` verifies that every file a task needs exists and names the missing ones.
    :meth:`read` decodes and validates the requested fields of one sample.
    """

    def __init__(self, root: str | Path, split: str):
        self.root = Path(root)
        self.split = split
        self.dir = self.root / split
        if not self.dir.is_dir():
            raise DataError(f"{self.dir}: split folder does not exist")
        img_dir = self.dir / "images"
        if not img_dir.is_dir():
            raise DataError(f"{img_dir}: missing images folder")
        self._image_paths: dict[str, Path] = {}
        for f in sorted(img_dir.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                if f.stem in self._image_paths:
                    raise DataError(f"{f}: two images share the id {f.stem!r}")
                self._image_paths[f.stem] = f
        self.ids: list[str] = list(self._image_paths)
        seg_classes = self.root / "seg_classes.json"
        self.seg_classes = (
            load_seg_classes(seg_classes) if seg_classes.is_file() else SegClasses.default()
        )

    def path(self, field: str, sample_id: str) -> Path:
        """Path of ``field`` (image, mask, seg, normal, pointmap, camera, albedo, alpha,
        foreground) for ``sample_id``."""
        if field == "image":
            if sample_id not in self._image_paths:
                return self.dir / "images" / f"{sample_id}.png"
            return self._image_paths[sample_id]
        folder, suffix = FOLDER_LAYOUT[field]
        return self.dir / folder / f"{sample_id}{suffix}"

    def check(self, task: str) -> None:
        """Raise :class:`DataError` listing missing folders/files for ``task`` (cheap: no decoding)."""
        if task not in TASK_FIELDS:
            raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASK_FIELDS)}")
        if task == "pose":
            if not (self.dir / "pose.json").is_file():
                raise DataError(f"{self.dir / 'pose.json'}: missing pose annotation file")
            return
        if not self.ids:
            raise DataError(f"{self.dir / 'images'}: no images")
        for field in TASK_FIELDS[task][1:]:
            folder = self.dir / FOLDER_LAYOUT[field][0]
            if not folder.is_dir():
                raise DataError(f"{folder}: missing folder (task {task!r} needs it)")
            missing = [
                str(self.path(field, i)) for i in self.ids if not self.path(field, i).is_file()
            ]
            if missing:
                more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
                raise DataError(
                    f"missing {field} files for task {task!r}: {', '.join(missing[:3])}{more}"
                )

    def _bytes(self, field: str, sample_id: str) -> tuple[bytes, str]:
        p = self.path(field, sample_id)
        if not p.is_file():
            what = "not a regular file" if p.exists() else "missing"
            raise DataError(f"{p}: {what} {field} file")
        return p.read_bytes(), str(p)

    def read(self, sample_id: str, fields: Iterable[str]) -> dict[str, Any]:
        """Decode ``fields`` of one sample (the image is always read); see :func:`decode_fields`."""
        fields = set(fields) | {"image"}
        return decode_fields(
            {f: self._bytes(f, sample_id) for f in fields}, self.seg_classes.num_classes
        )

    def pose_images(self, out_of_range: str = "error") -> list[PoseImage]:
        """Parse ``pose.json`` of this split and check that every referenced image exists."""
        p = self.dir / "pose.json"
        images = load_pose_json(p, out_of_range=out_of_range)
        for im in images:
            if not (self.dir / im.file_name).is_file():
                raise DataError(
                    f"{p}: image id={im.image_id} file {self.dir / im.file_name} is missing"
                )
        return images


def decode_fields(raw: Mapping[str, tuple[bytes, str]], num_classes: int = 29) -> dict[str, Any]:
    """Decode and cross-check the fields of one sample.

    Args:
        raw: field -> (bytes, name for errors), fields among image, mask, seg, normal, pointmap,
            camera, albedo, alpha, foreground. Sizes are checked against the image; normals and
            pointmaps against the mask; a foreground against its alpha (pre-multiplied).
        num_classes: number of part-label classes.

    Returns:
        field -> decoded value (``camera`` -> :class:`Camera`).
    """
    if "image" not in raw:
        raise ValueError("decode_fields: the image is required")
    out: dict[str, Any] = {"image": decode_image(*raw["image"])}
    hw = out["image"].shape[:2]
    if "mask" in raw:
        out["mask"] = decode_mask(*raw["mask"], hw=hw)
    mask = out.get("mask")
    for field, fn in (("seg", None), ("normal", decode_normal), ("pointmap", decode_pointmap)):
        if field not in raw:
            continue
        if field == "seg":
            out["seg"] = decode_seg(*raw["seg"], hw=hw, num_classes=num_classes)
        else:
            out[field] = fn(*raw[field], hw=hw, mask=mask)
    if "camera" in raw:
        out["camera"] = decode_camera(*raw["camera"], hw=hw)
    if "albedo" in raw:
        out["albedo"] = decode_albedo(*raw["albedo"], hw=hw)
    if "alpha" in raw:
        out["alpha"] = decode_alpha(*raw["alpha"], hw=hw)
    if "foreground" in raw:
        out["foreground"] = decode_foreground(*raw["foreground"], hw=hw, alpha=out.get("alpha"))
    unknown = set(raw) - {
        "image", "mask", "seg", "normal", "pointmap", "camera", "albedo", "alpha", "foreground"
    }  # fmt: skip
    if unknown:
        raise ValueError(f"decode_fields: unknown fields {sorted(unknown)}")
    return out

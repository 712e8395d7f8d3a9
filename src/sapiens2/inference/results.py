"""Typed prediction results (numpy arrays) and keypoint layout converters."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sapiens2.data.geometry import keypoints_in_image  # defined below viz, which uses it too
from sapiens2.data.metadata import keypoints308

COCO17_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
COCO_WHOLEBODY_NUM_KEYPOINTS = 133
# COCO-WholeBody hand roots (91 left, 112 right) are the wrists; the official 308 mapping leaves
# them out, we fill them from the 308 wrists.
_HAND_ROOTS = {91: "left_wrist", 112: "right_wrist"}


def coco_wholebody_index() -> np.ndarray:
    """``(133,)`` int array: for each COCO-WholeBody keypoint the 308-layout index, ``-1`` if absent.

    From the official COCO-WholeBody → Goliath name mapping (body 17, feet 6, 30 finger joints),
    plus the two hand roots taken from the wrists. The 68 COCO face points have no counterpart.
    """
    meta = keypoints308()
    idx = np.full(COCO_WHOLEBODY_NUM_KEYPOINTS, -1, dtype=np.int64)
    for coco, gol in meta.coco_wholebody_to_goliath.items():
        idx[coco] = gol
    for coco, name in _HAND_ROOTS.items():
        idx[coco] = meta.index(name)
    return idx


def coco17_index() -> np.ndarray:
    """``(17,)`` int array: the 308-layout index of each COCO-17 body keypoint (all exist)."""
    meta = keypoints308()
    return np.array([meta.index(n) for n in COCO17_NAMES], dtype=np.int64)


def convert_keypoints(
    keypoints: np.ndarray, scores: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Re-index ``(N, 308, 2)`` keypoints and ``(N, 308)`` scores into another layout.

    Args:
        index: ``(K',)`` 308-layout indices, ``-1`` where the target point has no source.

    Returns:
        ``(N, K', 2)`` keypoints and ``(N, K')`` scores; absent points are 0 with score 0.
    """
    keypoints = np.asarray(keypoints)
    scores = np.asarray(scores)
    if keypoints.ndim != 3 or keypoints.shape[1:] != (308, 2):
        raise ValueError(f"expected keypoints of shape (N, 308, 2), got {keypoints.shape}")
    have = index >= 0
    kp = np.zeros((keypoints.shape[0], len(index), 2), dtype=keypoints.dtype)
    sc = np.zeros((scores.shape[0], len(index)), dtype=scores.dtype)
    kp[:, have] = keypoints[:, index[have]]
    sc[:, have] = scores[:, index[have]]
    return kp, sc


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _check_image(image: np.ndarray | None, hw: tuple[int, int]) -> np.ndarray | None:
    if image is None:
        return None
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    if image.shape[:2] != tuple(hw):
        raise ValueError(f"image is {image.shape[0]}x{image.shape[1]}, the result {hw[0]}x{hw[1]}")
    return image


class ResultIO:
    """``to_json()``, ``plot()`` and ``save()`` of the result types.

    A result type defines ``to_dict()`` (JSON-ready: pose keypoints in full, a summary of a dense
    map), ``plot(image=None)`` (a uint8 RGB picture: over or beside ``image`` when it is given) and
    ``to_array()`` (the ``.npy`` data).
    """

    def to_dict(self) -> dict:
        raise NotImplementedError

    def to_array(self) -> np.ndarray:
        raise NotImplementedError

    def plot(self, image: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def to_json(self, indent: int | None = None) -> str:
        """:meth:`to_dict` as JSON text (non-finite numbers are refused, as JSON has none)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, path: str | Path, image: np.ndarray | None = None) -> Path:
        """Write the result; what is written depends on the suffix: ``.json`` :meth:`to_json`,
        ``.npy`` :meth:`to_array`, ``.png`` / ``.jpg`` / ``.jpeg`` / ``.bmp`` / ``.webp``
        :meth:`plot` (of ``image`` when given). Returns the path.

        Raises:
            ValueError: another suffix.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".json":
            path.write_text(self.to_json())
        elif suffix == ".npy":
            np.save(path, self.to_array())
        elif suffix in _IMAGE_SUFFIXES:
            from sapiens2.inference.outputs import write_image

            write_image(path, self.plot(image))
        else:
            raise ValueError(
                f"cannot save a result as {path.name!r}: use .json, .npy or an image suffix "
                f"({', '.join(_IMAGE_SUFFIXES)})"
            )
        return path


def beside_image(image: np.ndarray | None, picture: np.ndarray) -> np.ndarray:
    """``[image | picture]`` when an image is given, else the picture."""
    if image is None:
        return picture
    from sapiens2.viz.layout import side_by_side

    return side_by_side(_check_image(image, picture.shape[:2]), picture)


def _summary(image_size, mask: np.ndarray | None) -> dict:
    return {
        "image_size": [int(v) for v in image_size],
        "foreground_pixels": None if mask is None else int(np.count_nonzero(mask)),
    }


@dataclass
class PoseResult(ResultIO):
    """308-keypoint poses of the people in one image.

    Attributes:
        keypoints: ``(N, 308, 2)`` float32 image coordinates ``(x, y)``.
        scores: ``(N, 308)`` float32 raw heatmap maxima (not normalised; can exceed 1).
        boxes: ``(N, 4)`` float32 xyxy person boxes the crops were taken from.
        box_scores: ``(N,)`` float32 detector scores (1 for user / mask / whole-image boxes).
        image_size: ``(H, W)`` of the image.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray
    image_size: tuple[int, int]

    @property
    def num_people(self) -> int:
        return int(self.keypoints.shape[0])

    def in_image(self) -> np.ndarray:
        """``(N, 308)`` bool: the keypoints that lie on the image (:func:`keypoints_in_image`)."""
        return keypoints_in_image(self.keypoints, self.image_size)

    def to_coco17(self) -> tuple[np.ndarray, np.ndarray]:
        """COCO-17 body keypoints ``(N, 17, 2)`` and scores ``(N, 17)``."""
        return convert_keypoints(self.keypoints, self.scores, coco17_index())

    def to_coco_wholebody(self) -> tuple[np.ndarray, np.ndarray]:
        """COCO-WholeBody-133 keypoints ``(N, 133, 2)`` and scores ``(N, 133)``; the 68 face points
        (and the 10 finger base joints) have no 308 counterpart and are 0 with score 0."""
        return convert_keypoints(self.keypoints, self.scores, coco_wholebody_index())

    def to_dict(self) -> dict:
        """``{image_size, num_keypoints, instances}``, the instances as in ``predictions.json``
        (bbox, bbox_score, keypoints, keypoint_scores, keypoints_outside_image)."""
        from sapiens2.inference.export import pose_frame_record

        record = pose_frame_record(self, "")
        return {
            "image_size": record["image_size"],
            "num_keypoints": int(self.keypoints.shape[1]),
            "instances": record["instances"],
        }

    def to_array(self) -> np.ndarray:
        """``(N, 308, 3)`` float32 ``x, y, score``."""
        return np.concatenate([self.keypoints, self.scores[..., None]], axis=-1).astype(np.float32)

    def plot(self, image: np.ndarray | None = None, kpt_thr: float = 0.3) -> np.ndarray:
        """The skeletons over ``image`` (else over black), keypoints scoring ``>= kpt_thr``."""
        from sapiens2.viz.pose import draw_pose

        canvas = _check_image(image, self.image_size)
        if canvas is None:
            canvas = np.zeros((*self.image_size, 3), np.uint8)
        return draw_pose(canvas, self.keypoints, self.scores, kpt_thr=kpt_thr)


@dataclass
class SegResult(ResultIO):
    """Body-part segmentation: ``labels`` ``(H, W)`` uint8 class ids 0..28 (0 = background)."""

    labels: np.ndarray

    @property
    def foreground(self) -> np.ndarray:
        """``(H, W)`` bool person mask (any non-background class)."""
        return self.labels > 0

    def to_dict(self) -> dict:
        """``{image_size, foreground_pixels, classes: [{id, name, pixels}]}`` for the classes
        present (the labels themselves: :meth:`to_array` / ``.npy``)."""
        from sapiens2.data.metadata import seg29

        names = seg29().names
        counts = np.bincount(np.asarray(self.labels, np.int64).ravel(), minlength=len(names))
        classes = [
            {"id": i, "name": names[i] if i < len(names) else str(i), "pixels": int(c)}
            for i, c in enumerate(counts)
            if c
        ]
        return {**_summary(self.labels.shape, self.foreground), "classes": classes}

    def to_array(self) -> np.ndarray:
        return np.asarray(self.labels)

    def plot(self, image: np.ndarray | None = None) -> np.ndarray:
        """``[image | overlay | legend]`` as ``sapiens2 predict`` draws it; without an image, the
        labels in the palette colours."""
        if image is None:
            from sapiens2.viz.seg import seg_to_rgb

            return seg_to_rgb(self.labels)
        from sapiens2.viz.seg import seg_picture

        return seg_picture(_check_image(image, self.labels.shape), self.labels)


@dataclass
class NormalResult(ResultIO):
    """Surface normals ``(H, W, 3)`` float32 (OpenCV camera frame; unit length before the resize to
    the original size); ``mask`` ``(H, W)`` bool foreground when masking was requested, else None."""

    normals: np.ndarray
    mask: np.ndarray | None = None

    def to_dict(self) -> dict:
        """``{image_size, foreground_pixels}`` (the normals: :meth:`to_array` / ``.npy``)."""
        return _summary(self.normals.shape[:2], self.mask)

    def to_array(self) -> np.ndarray:
        return np.asarray(self.normals, np.float32)

    def plot(self, image: np.ndarray | None = None) -> np.ndarray:
        """The normals as colours (``[image | normals]`` with an image)."""
        from sapiens2.viz.dense import normals_to_rgb

        return beside_image(image, normals_to_rgb(self.normals, self.mask))


#: The focal length (network-input pixels) of the canonical pointmap space: ``s = 768 / fx``.
CANONICAL_FOCAL_LENGTH = 768.0


@dataclass(frozen=True)
class PinholeFit:
    """Pinhole intrinsics fitted to a point map (:func:`fit_intrinsics`).

    Attributes:
        K: ``(3, 3)`` float64 ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in image pixels
            (pixel-centre coordinates).
        rms_px: root-mean-square reprojection error of the points used, in pixels.
        points: how many points the fit used.
    """

    K: np.ndarray
    rms_px: float
    points: int


def fit_intrinsics(
    points: np.ndarray,
    mask: np.ndarray | None = None,
    focal: tuple[float, float] | None = None,
    max_points: int = 1 << 16,
) -> PinholeFit | None:
    """The pinhole camera under which pixel ``(u, v)`` sees ``points[v, u]``: least squares of
    ``u = fx·X/Z + cx`` and ``v = fy·Y/Z + cy`` over the valid pixels (finite, ``Z > 0``, in
    ``mask``; an even subsample of at most ``max_points``).

    Args:
        focal: ``(fx, fy)`` to keep as given (only the principal point is fitted); None fits
            all four.

    Returns:
        The fit, or None with fewer than 16 valid pixels (or a degenerate map).
    """
    pts = np.asarray(points)
    valid = np.isfinite(pts).all(axis=-1) & (pts[..., 2] > 0)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    vs, us = np.nonzero(valid)
    if len(us) < 16:
        return None
    step = max(1, len(us) // max_points)
    vs, us = vs[::step], us[::step]
    p = pts[vs, us].astype(np.float64)
    a = np.stack([p[:, 0] / p[:, 2], p[:, 1] / p[:, 2]], axis=1)  # normalised image coordinates
    k = np.eye(3)
    residual = []
    for axis, pix in ((0, us.astype(np.float64)), (1, vs.astype(np.float64))):
        if focal is not None:
            f = float(focal[axis])
            c = float(np.mean(pix - f * a[:, axis]))
        else:
            design = np.stack([a[:, axis], np.ones_like(pix)], axis=1)
            (f, c), *_ = np.linalg.lstsq(design, pix, rcond=None)
            if not np.isfinite(f) or abs(f) < 1e-9:
                return None
        k[axis, axis], k[axis, 2] = f, c
        residual.append(pix - (f * a[:, axis] + c))
    rms = float(np.sqrt(np.mean(residual[0] ** 2 + residual[1] ** 2)))
    return PinholeFit(k, rms, len(us))


@dataclass
class PointmapResult(ResultIO):
    """Metric camera-frame point map.

    Attributes:
        points: ``(H, W, 3)`` float32 XYZ in metres (x right, y down, z forward).
        scale: the predicted canonical scale ``s = 768 / fx`` (fx in network-input pixels).
        mask: ``(H, W)`` bool foreground, or None.
        focal_length: ``(fx, fy)`` in image pixels that the scale implies (``768 / s`` undone
            the network input's resize), or None when unknown.
    """

    points: np.ndarray
    scale: float
    mask: np.ndarray | None = None
    focal_length: tuple[float, float] | None = None

    @property
    def depth(self) -> np.ndarray:
        """``(H, W)`` float32 Z in metres."""
        return self.points[..., 2]

    def camera(self) -> dict:
        """The camera of the point map, for ``<name>_camera.json``: the predicted scale, the
        focal length it implies, ``K`` (that focal length, with the principal point fitted to the
        points), ``K_fit`` (all four intrinsics fitted to the points) and their reprojection
        errors (see docs/formats.md)."""
        h, w = self.points.shape[:2]
        fixed = (
            fit_intrinsics(self.points, self.mask, self.focal_length) if self.focal_length else None
        )
        free = fit_intrinsics(self.points, self.mask)

        def k(fit: PinholeFit | None):
            return None if fit is None else np.round(fit.K, 4).tolist()

        def rms(fit: PinholeFit | None):
            return None if fit is None else round(fit.rms_px, 4)

        focal = (
            None if self.focal_length is None else [round(float(f), 4) for f in self.focal_length]
        )
        return {
            "image_size": [int(h), int(w)],
            "units": "metres",
            "frame": "OpenCV camera: x right, y down, z forward; pixel centres at integers",
            "scale": float(self.scale) if np.isfinite(self.scale) else None,
            "canonical_focal_length": CANONICAL_FOCAL_LENGTH,
            "focal_length_px": focal,
            "K": k(fixed),
            "K_rms_px": rms(fixed),
            "K_fit": k(free),
            "K_fit_rms_px": rms(free),
            "fit_points": None if free is None else free.points,
        }

    def to_dict(self) -> dict:
        """``{image_size, foreground_pixels, camera: camera(), depth: {min, median, max}}``
        (depths of the valid foreground pixels; the points: :meth:`to_array` / ``.npy``)."""
        z = self.depth
        valid = np.isfinite(z) & (z > 0)
        if self.mask is not None:
            valid &= self.mask
        depth = None
        if valid.any():
            lo, mid, hi = np.percentile(z[valid], [0, 50, 100])
            depth = {"min": float(lo), "median": float(mid), "max": float(hi)}
        return {**_summary(z.shape, self.mask), "camera": self.camera(), "depth": depth}

    def to_array(self) -> np.ndarray:
        """``(H, W, 3)`` float32 XYZ metres."""
        return np.asarray(self.points, np.float32)

    def plot(self, image: np.ndarray | None = None) -> np.ndarray:
        """The depth in colour (near red, far blue; ``[image | depth]`` with an image)."""
        from sapiens2.viz.dense import depth_to_rgb

        return beside_image(image, depth_to_rgb(self.depth, self.mask))


@dataclass
class AlbedoResult(ResultIO):
    """Albedo ``(H, W, 3)`` float32 RGB in [0, 1]; ``mask`` ``(H, W)`` bool or None."""

    albedo: np.ndarray
    mask: np.ndarray | None = field(default=None)

    def to_dict(self) -> dict:
        """``{image_size, foreground_pixels}`` (the albedo: :meth:`to_array` / ``.npy``)."""
        return _summary(self.albedo.shape[:2], self.mask)

    def to_array(self) -> np.ndarray:
        return np.asarray(self.albedo, np.float32)

    def plot(self, image: np.ndarray | None = None) -> np.ndarray:
        """The albedo as a picture (``[image | albedo]`` with an image)."""
        from sapiens2.viz.dense import albedo_to_rgb

        return beside_image(image, albedo_to_rgb(self.albedo, self.mask))


Result = PoseResult | SegResult | NormalResult | PointmapResult | AlbedoResult

"""Training / evaluation transforms, each a small class testable on its own.

They follow the official ones in ``sapiens/pose/src/datasets/transforms/pose_transforms.py`` and
``sapiens/dense/src/datasets/transforms/{seg,normal,pointmap,albedo}_transforms.py``.

A transform is a callable ``t(sample, rng) -> Sample | None`` taking a :class:`Sample` and a
``numpy.random.Generator`` (all randomness comes from ``rng``, so a pipeline is deterministic given
the generator's seed) and returning a new :class:`Sample` (inputs are never modified in place), or
``None`` when the sample must be dropped. Deterministic transforms ignore ``rng``.

Geometric transforms keep every label in the sample consistent with the image: masks and part labels
are resampled with nearest-neighbour (pixel-centre exact) interpolation, normals and pointmaps are
resampled and, where the geometry demands it, their vectors are changed (a horizontal flip negates the
x component), intrinsics ``K`` follow resizes, crops, letterboxing and flips, and keypoints / boxes are
moved by the same mapping as the pixels (pixel-centre convention, see :mod:`sapiens2.data.geometry`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from sapiens2.data import geometry
from sapiens2.data.metadata import keypoints308, seg29
from sapiens2.data.udp import udp_encode

__all__ = [
    "Compose",
    "GenerateUDPHeatmaps",
    "HorizontalFlip",
    "Letterbox",
    "PhotoMetricDistortion",
    "RandomBBoxTransform",
    "RandomBoxBlur",
    "RandomCoarseDropout",
    "RandomCrop",
    "RandomCropContinuous",
    "RandomDownUpSample",
    "RandomGaussianBlur",
    "RandomGaussianNoise",
    "RandomHalfBody",
    "RandomMedianBlur",
    "RandomRotate",
    "RandomScale",
    "RandomSolarize",
    "Resize",
    "Sample",
    "TopdownAffine",
    "TopdownBoxFromBBox",
    "Transform",
]

# uint8 colour images and mattes: smooth interpolation (bilinear keeps a pre-multiplied
# foreground consistent with its alpha: both are interpolated with the same weights)
_IMAGE_FIELDS = ("image", "albedo", "alpha", "foreground")
_LABEL_FIELDS = ("mask", "seg")  # uint8 labels: nearest
_VECTOR_FIELDS = ("normal", "pointmap")  # float32 (H, W, 3): nearest
_NEAREST = cv2.INTER_NEAREST_EXACT


@dataclass
class Sample:
    """One training/eval sample; every field but ``image`` is optional.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        key: sample id (file stem or shard key).
        mask: (H, W) uint8 foreground mask (255 person, 0 background).
        seg: (H, W) uint8 part labels, 255 = ignore.
        normal: (H, W, 3) float32 camera-frame normals (OpenCV frame).
        pointmap: (H, W, 3) float32 camera-frame XYZ in metres.
        K: (3, 3) float64 intrinsics of ``image``.
        albedo: (H, W, 3) uint8 RGB albedo.
        alpha: (H, W) uint8 alpha matte (255 = person).
        foreground: (H, W, 3) uint8 RGB person colour pre-multiplied by alpha.
        keypoints: (..., K, 2) float64 keypoints (x, y) in image pixels.
        keypoints_visible: (..., K) float32, 1 = labelled (visible or occluded), 0 = not labelled.
        bbox: (..., 4) float64 xyxy person box(es).
        center, scale: (2,) top-down crop centre and extent (w, h) in image pixels.
        rotation: top-down crop rotation in degrees.
        heatmaps: (K, h, w) float32 UDP targets; keypoint_weights: (K,) float32.
        meta: free-form extras (e.g. ``"letterbox"``: :class:`~sapiens2.data.geometry.LetterboxParams`,
            ``"warp_matrix"``: (2, 3) image -> crop matrix, ``"image_id"``, ``"ann_id"``).
    """

    image: np.ndarray
    key: str = ""
    mask: np.ndarray | None = None
    seg: np.ndarray | None = None
    normal: np.ndarray | None = None
    pointmap: np.ndarray | None = None
    K: np.ndarray | None = None
    albedo: np.ndarray | None = None
    alpha: np.ndarray | None = None
    foreground: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    keypoints_visible: np.ndarray | None = None
    bbox: np.ndarray | None = None
    center: np.ndarray | None = None
    scale: np.ndarray | None = None
    rotation: float = 0.0
    heatmaps: np.ndarray | None = None
    keypoint_weights: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def hw(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    def replace(self, **changes: Any) -> Sample:
        """A shallow copy with some fields replaced (``meta`` is copied too)."""
        changes.setdefault("meta", dict(self.meta))
        return dataclasses.replace(self, **changes)


Transform = Callable[[Sample, np.random.Generator], Sample | None]


class Compose:
    """Apply transforms in order; stops and returns ``None`` as soon as one drops the sample."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample | None:
        out: Sample | None = sample
        for t in self.transforms:
            out = t(out, rng)
            if out is None:
                return None
        return out

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def _apply_prob(p: float, rng: np.random.Generator) -> bool:
    return p >= 1.0 or (p > 0.0 and rng.random() < p)


def _truncnorm(rng: np.random.Generator, size: int | tuple[int, ...] = ()) -> np.ndarray:
    """Standard normal truncated to [-1, 1] (rejection sampling)."""
    out = rng.standard_normal(size)
    bad = np.abs(out) > 1
    while np.any(bad):
        out = np.where(bad, rng.standard_normal(np.shape(out)), out)
        bad = np.abs(out) > 1
    return np.asarray(out, dtype=np.float64)


def _map_points(sample: Sample, fn: Callable[[np.ndarray], np.ndarray], out_hw: tuple[int, int]):
    """Move keypoints and boxes with a point mapping ``fn``; keypoints landing outside become unlabelled."""
    changes: dict[str, Any] = {}
    if sample.keypoints is not None:
        kp = fn(sample.keypoints)
        changes["keypoints"] = kp
        if sample.keypoints_visible is not None:
            h, w = out_hw
            inside = (
                (kp[..., 0] >= 0)
                & (kp[..., 0] <= w - 1)
                & (kp[..., 1] >= 0)
                & (kp[..., 1] <= h - 1)
            )
            changes["keypoints_visible"] = np.where(inside, sample.keypoints_visible, 0).astype(
                np.float32
            )
    if sample.bbox is not None:
        b = np.asarray(sample.bbox, dtype=np.float64)
        corners = np.stack(
            [b[..., [0, 1]], b[..., [2, 1]], b[..., [0, 3]], b[..., [2, 3]]], axis=-2
        )  # (..., 4, 2)
        c = fn(corners)
        changes["bbox"] = np.concatenate([c.min(axis=-2), c.max(axis=-2)], axis=-1)
    if sample.center is not None:
        changes["center"] = fn(np.asarray(sample.center, dtype=np.float64))
    return changes


def _resize_sample(sample: Sample, new_hw: tuple[int, int], image_interp: int) -> dict[str, Any]:
    """Resize every spatial field to ``new_hw``; returns the changed fields."""
    h, w = sample.hw
    new_h, new_w = new_hw
    size = (new_w, new_h)
    changes: dict[str, Any] = {}
    for name in _IMAGE_FIELDS:
        arr = getattr(sample, name)
        if arr is not None:
            changes[name] = cv2.resize(arr, size, interpolation=image_interp)
    for name in (*_LABEL_FIELDS, *_VECTOR_FIELDS):
        arr = getattr(sample, name)
        if arr is not None:
            changes[name] = cv2.resize(arr, size, interpolation=_NEAREST)
    rx, ry = new_w / w, new_h / h
    if sample.K is not None:
        changes["K"] = geometry.scale_intrinsics(sample.K, rx, ry)

    def fn(p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        return np.stack([(p[..., 0] + 0.5) * rx - 0.5, (p[..., 1] + 0.5) * ry - 0.5], axis=-1)

    changes.update(_map_points(sample, fn, new_hw))
    if sample.scale is not None:
        changes["scale"] = np.asarray(sample.scale, dtype=np.float64) * np.array([rx, ry])
    return changes


def _crop_sample(sample: Sample, x0: int, y0: int, cw: int, ch: int) -> dict[str, Any]:
    """Crop every spatial field to ``[y0:y0+ch, x0:x0+cw]`` (inside the image)."""
    changes: dict[str, Any] = {}
    for name in (*_IMAGE_FIELDS, *_LABEL_FIELDS, *_VECTOR_FIELDS):
        arr = getattr(sample, name)
        if arr is not None:
            changes[name] = np.ascontiguousarray(arr[y0 : y0 + ch, x0 : x0 + cw])
    if sample.K is not None:
        K = np.asarray(sample.K, dtype=np.float64).copy()
        K[0, 2] -= x0
        K[1, 2] -= y0
        changes["K"] = K
    shift = np.array([x0, y0], dtype=np.float64)
    changes.update(_map_points(sample, lambda p: np.asarray(p, np.float64) - shift, (ch, cw)))
    if "bbox" in changes:
        b = changes["bbox"]
        b[..., [0, 2]] = np.clip(b[..., [0, 2]], 0, cw - 1)
        b[..., [1, 3]] = np.clip(b[..., [1, 3]], 0, ch - 1)
    return changes


# --------------------------------------------------------------------------------------------------
# Flip


class HorizontalFlip:
    """Mirror left-right with probability ``p``; applying it twice is the identity.

    Pixels move ``x -> W - 1 - x``. Keypoints are mirrored and re-indexed with ``flip_indices`` (left
    and right swap), part labels are swapped with ``seg_flip_pairs``, the x component of normals and
    pointmaps is negated, and intrinsics become ``cx' = W - 1 - cx`` (skew negated).

    Args:
        p: probability.
        flip_indices: (K,) keypoint permutation (an involution); default: the 308-keypoint layout.
        seg_flip_pairs: (P, 2) label pairs to swap; default: the 29-class layout.
    """

    def __init__(
        self,
        p: float = 0.5,
        flip_indices: Sequence[int] | np.ndarray | None = None,
        seg_flip_pairs: Sequence[Sequence[int]] | np.ndarray | None = None,
    ):
        self.p = p
        self.flip_indices = (
            np.asarray(keypoints308().flip_indices if flip_indices is None else flip_indices)
        ).astype(np.int64)
        if not np.array_equal(
            self.flip_indices[self.flip_indices], np.arange(len(self.flip_indices))
        ):
            raise ValueError("HorizontalFlip: flip_indices must be an involution (a pairing)")
        pairs = np.asarray(
            seg29().flip_pairs if seg_flip_pairs is None else seg_flip_pairs, dtype=np.int64
        ).reshape(-1, 2)
        lut = np.arange(256, dtype=np.uint8)
        for a, b in pairs:
            if not (0 <= a < 255 and 0 <= b < 255):
                raise ValueError(
                    f"HorizontalFlip: flip pair {(int(a), int(b))} out of range 0..254"
                )
            lut[a], lut[b] = b, a
        if not np.array_equal(lut[lut], np.arange(256)):
            raise ValueError("HorizontalFlip: seg_flip_pairs overlap (a class appears twice)")
        self.seg_lut = lut

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if not _apply_prob(self.p, rng):
            return sample
        return self.apply(sample)

    def apply(self, sample: Sample) -> Sample:
        """Flip unconditionally."""
        w = sample.hw[1]
        ch: dict[str, Any] = {}
        for name in (*_IMAGE_FIELDS, "mask"):
            arr = getattr(sample, name)
            if arr is not None:
                ch[name] = cv2.flip(np.ascontiguousarray(arr), 1)
        if sample.seg is not None:
            ch["seg"] = cv2.LUT(cv2.flip(np.ascontiguousarray(sample.seg), 1), self.seg_lut)
        for name in _VECTOR_FIELDS:
            arr = getattr(sample, name)
            if arr is not None:
                flipped = cv2.flip(np.ascontiguousarray(arr), 1)
                flipped[..., 0] *= -1
                ch[name] = flipped
        if sample.K is not None:
            K = np.asarray(sample.K, dtype=np.float64).copy()
            K[0, 2] = w - 1 - K[0, 2]
            K[0, 1] = -K[0, 1]
            ch["K"] = K
        if sample.keypoints is not None:
            kp = np.asarray(sample.keypoints, dtype=np.float64)
            if kp.shape[-2] != len(self.flip_indices):
                raise ValueError(
                    f"HorizontalFlip: {kp.shape[-2]} keypoints but flip_indices has {len(self.flip_indices)}"
                )
            kp = kp[..., self.flip_indices, :].copy()
            kp[..., 0] = w - 1 - kp[..., 0]
            ch["keypoints"] = kp
            if sample.keypoints_visible is not None:
                ch["keypoints_visible"] = np.asarray(sample.keypoints_visible)[
                    ..., self.flip_indices
                ]
        if sample.bbox is not None:
            b = np.asarray(sample.bbox, dtype=np.float64).copy()
            b[..., [0, 2]] = w - 1 - b[..., [2, 0]]
            ch["bbox"] = b
        if sample.center is not None:
            c = np.asarray(sample.center, dtype=np.float64).copy()
            c[..., 0] = w - 1 - c[..., 0]
            ch["center"] = c
        return sample.replace(**ch)

    def __repr__(self) -> str:
        return f"HorizontalFlip(p={self.p})"


# --------------------------------------------------------------------------------------------------
# Resizing, cropping, rotation (dense tasks)


class RandomScale:
    """Resize the whole sample by a random factor with probability ``p`` (aspect kept).

    Without ``base_hw`` the factor is ``U(scale_range)``. With ``base_hw`` (segmentation style) the
    image is rescaled to fit ``ratio * base_hw`` (long side to long side, short to short) with
    ``ratio ~ U(scale_range)``.
    """

    def __init__(
        self,
        p: float = 0.3,
        scale_range: tuple[float, float] = (0.5, 2.0),
        base_hw: tuple[int, int] | None = None,
    ):
        self.p, self.scale_range, self.base_hw = p, scale_range, base_hw

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if not _apply_prob(self.p, rng):
            return sample
        f = rng.uniform(*self.scale_range)
        h, w = sample.hw
        if self.base_hw is not None:
            long_b, short_b = max(self.base_hw), min(self.base_hw)
            f = f * min(long_b / max(h, w), short_b / min(h, w))
        new_hw = (max(1, round(h * f)), max(1, round(w * f)))
        return sample.replace(**_resize_sample(sample, new_hw, cv2.INTER_LINEAR))

    def __repr__(self) -> str:
        return f"RandomScale(p={self.p}, scale_range={self.scale_range})"


class RandomCropContinuous:
    """Crop a random window of area fraction in ``area_range`` and aspect (w/h) in ``aspect_range``."""

    def __init__(
        self,
        p: float = 0.3,
        area_range: tuple[float, float] = (0.4, 1.0),
        aspect_range: tuple[float, float] = (0.5, 2.0),
        attempts: int = 8,
    ):
        self.p, self.area_range, self.aspect_range, self.attempts = (
            p,
            area_range,
            aspect_range,
            attempts,
        )

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if not _apply_prob(self.p, rng):
            return sample
        h, w = sample.hw
        for _ in range(self.attempts):
            area = h * w * rng.uniform(*self.area_range)
            log_r = rng.uniform(math.log(self.aspect_range[0]), math.log(self.aspect_range[1]))
            r = math.exp(log_r)
            cw, ch = round(math.sqrt(area * r)), round(math.sqrt(area / r))
            if 1 <= cw <= w and 1 <= ch <= h:
                x0 = int(rng.integers(0, w - cw + 1))
                y0 = int(rng.integers(0, h - ch + 1))
                return sample.replace(**_crop_sample(sample, x0, y0, cw, ch))
        return sample

    def __repr__(self) -> str:
        return (
            f"RandomCropContinuous(p={self.p}, area={self.area_range}, aspect={self.aspect_range})"
        )


class RandomCrop:
    """Crop a fixed ``size_hw`` window (segmentation style), padding first if the image is smaller.

    Padding goes to the bottom/right: image ``image_pad``, part labels ``seg_pad`` (ignore), mask 0.
    With ``cat_max_ratio < 1`` up to ``attempts`` windows are tried until no single part label
    (ignoring 255) covers more than that fraction of the labelled pixels.
    """

    def __init__(
        self,
        size_hw: tuple[int, int],
        p: float = 1.0,
        cat_max_ratio: float = 1.0,
        attempts: int = 10,
        image_pad: int = 0,
        seg_pad: int = 255,
    ):
        self.size_hw, self.p, self.cat_max_ratio, self.attempts = (
            size_hw,
            p,
            cat_max_ratio,
            attempts,
        )
        self.image_pad, self.seg_pad = image_pad, seg_pad

    def _pad(self, sample: Sample) -> Sample:
        h, w = sample.hw
        th, tw = self.size_hw
        ph, pw = max(0, th - h), max(0, tw - w)
        if ph == 0 and pw == 0:
            return sample
        ch: dict[str, Any] = {}
        pads = {
            "image": self.image_pad,
            "albedo": 0,
            "alpha": 0,
            "foreground": 0,
            "mask": 0,
            "seg": self.seg_pad,
            "normal": 0,
            "pointmap": 0,
        }
        for name, val in pads.items():
            arr = getattr(sample, name)
            if arr is not None:
                ch[name] = cv2.copyMakeBorder(
                    arr, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(val,) * 4
                )
        return sample.replace(**ch)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if not _apply_prob(self.p, rng):
            return sample
        sample = self._pad(sample)
        h, w = sample.hw
        th, tw = self.size_hw
        x0 = y0 = 0
        for _ in range(max(1, self.attempts)):
            x0 = int(rng.integers(0, w - tw + 1))
            y0 = int(rng.integers(0, h - th + 1))
            if self.cat_max_ratio >= 1.0 or sample.seg is None:
                break
            counts = np.bincount(sample.seg[y0 : y0 + th, x0 : x0 + tw].ravel(), minlength=256)[
                :255
            ]
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
        return sample.replace(**_crop_sample(sample, x0, y0, tw, th))

    def __repr__(self) -> str:
        return f"RandomCrop(size_hw={self.size_hw}, p={self.p}, cat_max_ratio={self.cat_max_ratio})"


class RandomRotate:
    """Rotate about the image centre by an angle uniform in ``[-max_deg, max_deg]`` (probability ``p``).

    Image bilinear (pad ``image_pad``), mask/labels nearest (pad ``mask_pad`` / ``seg_pad``; the
    official seg pipeline pads labels with 0 = background). Normals are resampled and their x/y
    components rotated with the image (exact for a roll about the principal point). Pointmaps and
    intrinsics are refused (an in-plane rotation is not a pinhole re-projection in general).
    """

    def __init__(
        self,
        p: float = 0.5,
        max_deg: float = 60.0,
        image_pad: int = 0,
        mask_pad: int = 0,
        seg_pad: int = 0,
    ):
        self.p, self.max_deg = p, max_deg
        self.image_pad, self.mask_pad, self.seg_pad = image_pad, mask_pad, seg_pad

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if not _apply_prob(self.p, rng):
            return sample
        return self.apply(sample, float(rng.uniform(-self.max_deg, self.max_deg)))

    def apply(self, sample: Sample, angle_deg: float) -> Sample:
        """Rotate by ``angle_deg`` (counter-clockwise as displayed)."""
        if sample.pointmap is not None or sample.K is not None:
            raise ValueError("RandomRotate: rotating pointmaps / intrinsics is not supported")
        h, w = sample.hw
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle_deg, 1.0)
        ch: dict[str, Any] = {}

        def warp(arr: np.ndarray, interp: int, val: float) -> np.ndarray:
            return cv2.warpAffine(
                arr, m, (w, h), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=val
            )

        for name in _IMAGE_FIELDS:
            arr = getattr(sample, name)
            if arr is not None:
                ch[name] = warp(arr, cv2.INTER_LINEAR, self.image_pad if name == "image" else 0)
        if sample.mask is not None:
            ch["mask"] = warp(sample.mask, cv2.INTER_NEAREST, self.mask_pad)
        if sample.seg is not None:
            ch["seg"] = warp(sample.seg, cv2.INTER_NEAREST, self.seg_pad)
        if sample.normal is not None:
            n = warp(sample.normal, cv2.INTER_NEAREST, 0).copy()
            n[..., :2] = n[..., :2] @ m[:, :2].T
            ch["normal"] = n
        ch.update(_map_points(sample, lambda p: geometry.transform_points(p, m), (h, w)))
        return sample.replace(**ch)

    def __repr__(self) -> str:
        return f"RandomRotate(p={self.p}, max_deg={self.max_deg})"


class Resize:
    """Stretch to ``size_hw`` (no aspect preservation), the official seg test resize.

    The image uses INTER_AREA when the new width is smaller than the old one, else INTER_CUBIC; labels
    and maps are nearest. With ``labels=False`` only the image (and K / points) change, as in
    evaluation where the labels stay at full resolution.
    """

    def __init__(self, size_hw: tuple[int, int], labels: bool = True):
        self.size_hw, self.labels = size_hw, labels

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        interp = cv2.INTER_AREA if self.size_hw[1] < sample.hw[1] else cv2.INTER_CUBIC
        if self.labels:
            return sample.replace(**_resize_sample(sample, self.size_hw, interp))
        # dense maps stay at full resolution; the image, K, keypoints and boxes are resized
        maps = {
            name: None
            for name in ("mask", "seg", "normal", "pointmap", "albedo", "alpha", "foreground")
        }
        return sample.replace(**_resize_sample(sample.replace(**maps), self.size_hw, interp))

    def __repr__(self) -> str:
        return f"Resize(size_hw={self.size_hw}, labels={self.labels})"


class Letterbox:
    """Aspect-preserving resize into ``size_hw`` with centred padding (normal/pointmap/albedo).

    Sizes truncate as in the official code (see :func:`~sapiens2.data.geometry.letterbox_params`).
    Image, albedo, alpha and foreground bilinear, the image padded with ``image_pad``, the others
    with 0; mask/normal/pointmap nearest padded 0; part
    labels nearest padded ``seg_pad``. ``K`` is scaled and shifted by the padding so that projecting
    a 3-D point lands on its letterboxed pixel. The parameters are stored in ``meta["letterbox"]``.
    """

    def __init__(self, size_hw: tuple[int, int], image_pad: int = 0, seg_pad: int = 255):
        self.size_hw, self.image_pad, self.seg_pad = size_hw, image_pad, seg_pad

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        params = geometry.letterbox_params(sample.hw, self.size_hw)
        ch = _resize_sample(sample, params.new_hw, cv2.INTER_LINEAR)
        pads = {
            "image": self.image_pad,
            "albedo": 0,
            "alpha": 0,
            "foreground": 0,
            "mask": 0,
            "seg": self.seg_pad,
            "normal": 0,
            "pointmap": 0,
        }
        for name, val in pads.items():
            arr = ch.get(name)
            if arr is not None:
                ch[name] = cv2.copyMakeBorder(
                    arr, params.top, params.bottom, params.left, params.right,
                    cv2.BORDER_CONSTANT, value=(val,) * 4,
                )  # fmt: skip
        if sample.K is not None:
            ch["K"] = geometry.letterbox_intrinsics(sample.K, params)
        ch.update(_map_points(sample, params.image_to_letterbox, params.out_hw))
        out = sample.replace(**ch)
        out.meta["letterbox"] = params
        return out

    def __repr__(self) -> str:
        return f"Letterbox(size_hw={self.size_hw})"


# --------------------------------------------------------------------------------------------------
# Top-down pose


class TopdownBoxFromBBox:
    """Set ``center``/``scale`` from the (4,) xyxy ``bbox`` with ``padding`` (official 1.25)."""

    def __init__(self, padding: float = 1.25):
        self.padding = padding

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        if sample.bbox is None:
            raise ValueError(f"TopdownBoxFromBBox: sample {sample.key!r} has no bbox")
        center, scale = geometry.bbox_xyxy_to_center_scale(
            np.asarray(sample.bbox).reshape(4), self.padding
        )
        return sample.replace(center=center, scale=scale)

    def __repr__(self) -> str:
        return f"TopdownBoxFromBBox(padding={self.padding})"


class RandomHalfBody:
    """Zoom the crop onto the upper or lower body (probability ``p``; official
    ``PoseRandomHalfBody``).

    Needs at least ``min_total`` labelled keypoints and ``min_upper`` labelled "upper" or ``min_lower``
    labelled "lower" keypoints (types from the metadata); picks the upper body with probability
    ``upper_prob`` when both qualify. The new crop centre is the mean of the chosen keypoints and its
    extent their bounding extent times ``padding``.
    """

    def __init__(
        self,
        p: float = 0.3,
        min_total: int = 9,
        min_upper: int = 2,
        min_lower: int = 3,
        upper_prob: float = 0.7,
        padding: float = 1.5,
        types: Sequence[str] | None = None,
    ):
        self.p, self.min_total, self.min_upper, self.min_lower = p, min_total, min_upper, min_lower
        self.upper_prob, self.padding = upper_prob, padding
        t = np.asarray(keypoints308().types if types is None else types)
        self.upper = t == "upper"
        self.lower = t == "lower"

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if sample.keypoints is None or sample.keypoints_visible is None or sample.center is None:
            raise ValueError("RandomHalfBody: needs keypoints, keypoints_visible, center and scale")
        if not _apply_prob(self.p, rng):
            return sample
        vis = np.asarray(sample.keypoints_visible).reshape(-1) > 0
        if vis.shape[0] != self.upper.shape[0]:
            raise ValueError(
                f"RandomHalfBody: {vis.shape[0]} keypoints but {self.upper.shape[0]} types"
            )
        if vis.sum() < self.min_total:
            return sample
        up, low = vis & self.upper, vis & self.lower
        ok_up, ok_low = up.sum() >= self.min_upper, low.sum() >= self.min_lower
        if not ok_up and not ok_low:
            return sample
        if ok_up and ok_low:
            chosen = up if rng.random() < self.upper_prob else low
        else:
            chosen = up if ok_up else low
        pts = np.asarray(sample.keypoints, dtype=np.float64).reshape(-1, 2)[chosen]
        center = pts.mean(axis=0)
        extent = (pts.max(axis=0) - pts.min(axis=0)) * self.padding
        if np.any(extent <= 0):
            return sample
        return sample.replace(center=center, scale=extent)

    def __repr__(self) -> str:
        return f"RandomHalfBody(p={self.p})"


class RandomBBoxTransform:
    """Jitter the crop box: shift, scale and rotation from truncated normals (official
    ``PoseRandomBBoxTransform``).

    shift: ``truncnorm[-1,1] * shift_factor * scale`` (probability ``shift_prob``); scale factor:
    ``1 + truncnorm * (scale_range width / 2)`` (``scale_prob``); rotation:
    ``truncnorm * rotate_factor`` degrees (``rotate_prob``).
    """

    def __init__(
        self,
        shift_factor: float = 0.16,
        shift_prob: float = 0.3,
        scale_range: tuple[float, float] = (0.5, 1.5),
        scale_prob: float = 1.0,
        rotate_factor: float = 80.0,
        rotate_prob: float = 0.6,
    ):
        self.shift_factor, self.shift_prob = shift_factor, shift_prob
        self.scale_range, self.scale_prob = scale_range, scale_prob
        self.rotate_factor, self.rotate_prob = rotate_factor, rotate_prob

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if sample.center is None or sample.scale is None:
            raise ValueError(
                "RandomBBoxTransform: needs center and scale (run TopdownBoxFromBBox first)"
            )
        center = np.asarray(sample.center, dtype=np.float64).copy()
        scale = np.asarray(sample.scale, dtype=np.float64).copy()
        rotation = sample.rotation
        if _apply_prob(self.shift_prob, rng):
            center = center + _truncnorm(rng, 2) * self.shift_factor * scale
        if _apply_prob(self.scale_prob, rng):
            lo, hi = self.scale_range
            scale = scale * (0.5 * (lo + hi) + float(_truncnorm(rng)) * 0.5 * (hi - lo))
        if _apply_prob(self.rotate_prob, rng):
            rotation = rotation + float(_truncnorm(rng)) * self.rotate_factor
        return sample.replace(center=center, scale=scale, rotation=rotation)

    def __repr__(self) -> str:
        return "RandomBBoxTransform()"


class TopdownAffine:
    """UDP affine crop of the person box to ``input_hw`` (official ``PoseTopdownAffine``).

    Fixes the aspect ratio of ``scale`` to ``W/H``, warps the image (INTER_AREA if shrinking else
    INTER_CUBIC, zero border; mask and part labels nearest with borders 0 / 255), moves keypoints with
    the same matrix and marks those that leave the crop unlabelled (their coordinates set to 0).
    The matrix is stored in ``meta["warp_matrix"]``.
    """

    def __init__(self, input_hw: tuple[int, int] = (1024, 768)):
        self.input_hw = input_hw

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        if sample.center is None or sample.scale is None:
            raise ValueError("TopdownAffine: needs center and scale (run TopdownBoxFromBBox first)")
        if sample.normal is not None or sample.pointmap is not None:
            raise ValueError("TopdownAffine: normals / pointmaps cannot be cropped top-down")
        out_h, out_w = self.input_hw
        scale = geometry.fix_aspect_ratio(sample.scale, out_w / out_h)
        image, m = geometry.warp_topdown(
            sample.image, sample.center, scale, self.input_hw, sample.rotation
        )
        ch: dict[str, Any] = {"image": image, "scale": scale, "K": None}
        for name, val in (("mask", 0), ("seg", 255)):
            arr = getattr(sample, name)
            if arr is not None:
                ch[name] = cv2.warpAffine(
                    arr, m, (out_w, out_h), flags=cv2.INTER_NEAREST,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=val,
                )  # fmt: skip
        if sample.albedo is not None:
            ch["albedo"] = cv2.warpAffine(sample.albedo, m, (out_w, out_h), flags=cv2.INTER_LINEAR)
        if sample.keypoints is not None:
            kp = geometry.transform_points(sample.keypoints, m)
            # in the crop: 0 <= x < W and 0 <= y < H (as PoseTopdownAffine in
            # sapiens/pose/src/datasets/transforms/pose_transforms.py)
            inside = (
                (kp[..., 0] >= 0) & (kp[..., 0] < out_w) & (kp[..., 1] >= 0) & (kp[..., 1] < out_h)
            )
            ch["keypoints"] = np.where(inside[..., None], kp, 0.0)
            if sample.keypoints_visible is not None:
                ch["keypoints_visible"] = np.where(inside, sample.keypoints_visible, 0).astype(
                    np.float32
                )
        out = sample.replace(**ch)
        out.meta["warp_matrix"] = m
        return out

    def __repr__(self) -> str:
        return f"TopdownAffine(input_hw={self.input_hw})"


class GenerateUDPHeatmaps:
    """Set ``heatmaps`` (K, h, w) and ``keypoint_weights`` (K,) from crop keypoints (official
    ``PoseGenerateTarget`` with ``UDPHeatmap``)."""

    def __init__(
        self,
        input_hw: tuple[int, int] = (1024, 768),
        heatmap_hw: tuple[int, int] | None = None,
        sigma: float = 6.0,
    ):
        self.input_hw = input_hw
        self.heatmap_hw = heatmap_hw or (input_hw[0] // 4, input_hw[1] // 4)
        self.sigma = sigma

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        if sample.keypoints is None or sample.keypoints_visible is None:
            raise ValueError("GenerateUDPHeatmaps: sample has no keypoints")
        if sample.hw != tuple(self.input_hw):
            raise ValueError(
                f"GenerateUDPHeatmaps: image is {sample.hw}, expected {tuple(self.input_hw)}"
            )
        hm, w = udp_encode(
            np.asarray(sample.keypoints).reshape(-1, 2),
            np.asarray(sample.keypoints_visible).reshape(-1),
            self.input_hw,
            self.heatmap_hw,
            self.sigma,
        )
        return sample.replace(heatmaps=hm, keypoint_weights=w)

    def __repr__(self) -> str:
        return f"GenerateUDPHeatmaps(input_hw={self.input_hw}, heatmap_hw={self.heatmap_hw}, sigma={self.sigma})"


# --------------------------------------------------------------------------------------------------
# Photometric (image only)


def _clip_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 255).astype(np.uint8)


_VALUES = np.arange(256, dtype=np.float64)


def _lut(values: np.ndarray) -> np.ndarray:
    """(256,) uint8 lookup table from float values (clipped to 0..255, truncated)."""
    return np.clip(values, 0, 255).astype(np.uint8)


class PhotoMetricDistortion:
    """Random brightness, contrast, saturation and hue (each with 50%), applied with probability ``p``.

    Brightness adds ``U(-brightness_delta, brightness_delta)``; contrast multiplies by
    ``U(contrast_range)``, either before or after the HSV steps (at random); saturation multiplies the
    HSV S channel by ``U(saturation_range)``; hue shifts H (OpenCV's 0..179 scale) by
    ``U(-hue_delta, hue_delta)``. Each step rounds back to uint8.
    """

    def __init__(
        self,
        p: float = 1.0,
        brightness_delta: float = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: float = 18,
    ):
        self.p, self.brightness_delta = p, brightness_delta
        self.contrast_range, self.saturation_range, self.hue_delta = (
            contrast_range,
            saturation_range,
            hue_delta,
        )

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if not _apply_prob(self.p, rng):
            return sample
        # every step maps uint8 values to uint8 values, so each is a 256-entry lookup table
        img = np.ascontiguousarray(sample.image)
        if rng.random() < 0.5:
            delta = rng.uniform(-self.brightness_delta, self.brightness_delta)
            img = cv2.LUT(img, _lut(_VALUES + delta))
        contrast_first = rng.random() < 0.5

        def contrast(x: np.ndarray) -> np.ndarray:
            if rng.random() < 0.5:
                return cv2.LUT(x, _lut(_VALUES * rng.uniform(*self.contrast_range)))
            return x

        if contrast_first:
            img = contrast(img)
        sat = rng.uniform(*self.saturation_range) if rng.random() < 0.5 else None
        hue = rng.uniform(-self.hue_delta, self.hue_delta) if rng.random() < 0.5 else None
        if sat is not None or hue is not None:
            h, s, v = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))
            if sat is not None:
                s = cv2.LUT(s, _lut(_VALUES * sat))
            if hue is not None:  # OpenCV's uint8 hue is 0..179
                h = cv2.LUT(h, np.mod(_VALUES + hue, 180).astype(np.uint8))
            img = cv2.cvtColor(cv2.merge([h, s, v]), cv2.COLOR_HSV2RGB)
        if not contrast_first:
            img = contrast(img)
        return sample.replace(image=img)

    def __repr__(self) -> str:
        return f"PhotoMetricDistortion(p={self.p})"


class RandomGaussianBlur:
    """Gaussian blur of the image with a ``kernel`` × ``kernel`` kernel and σ ~ U(sigma_range)."""

    def __init__(
        self, p: float = 0.3, kernel: int = 3, sigma_range: tuple[float, float] = (0.1, 2.0)
    ):
        self.p, self.kernel, self.sigma_range = p, kernel, sigma_range

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if not _apply_prob(self.p, rng):
            return sample
        s = rng.uniform(*self.sigma_range)
        return sample.replace(image=cv2.GaussianBlur(sample.image, (self.kernel, self.kernel), s))

    def __repr__(self) -> str:
        return f"RandomGaussianBlur(p={self.p}, kernel={self.kernel})"


class _RandomOddKernelBlur:
    """A blur with an odd kernel size drawn from ``kernel_range``; subclasses give ``_blur``."""

    def __init__(self, p: float = 0.1, kernel_range: tuple[int, int] = (3, 7)):
        self.p, self.kernel_range = p, kernel_range

    def _blur(self, image: np.ndarray, k: int) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if not _apply_prob(self.p, rng):
            return sample
        k = int(rng.choice(np.arange(self.kernel_range[0], self.kernel_range[1] + 1, 2)))
        return sample.replace(image=self._blur(sample.image, k))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class RandomBoxBlur(_RandomOddKernelBlur):
    """Box (mean) blur with an odd kernel size drawn from ``kernel_range``."""

    def _blur(self, image: np.ndarray, k: int) -> np.ndarray:
        return cv2.blur(image, (k, k))


class RandomMedianBlur(_RandomOddKernelBlur):
    """Median blur with an odd kernel size drawn from ``kernel_range``."""

    def _blur(self, image: np.ndarray, k: int) -> np.ndarray:
        return cv2.medianBlur(np.ascontiguousarray(image), k)


class RandomGaussianNoise:
    """Add zero-mean Gaussian noise with variance ~ U(var_range) (0-255 scale) to the image."""

    def __init__(self, p: float = 0.3, var_range: tuple[float, float] = (5.0, 20.0)):
        self.p, self.var_range = p, var_range

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if not _apply_prob(self.p, rng):
            return sample
        std = math.sqrt(rng.uniform(*self.var_range))
        noise = rng.standard_normal(sample.image.shape, dtype=np.float32) * np.float32(std)
        return sample.replace(image=_clip_u8(sample.image.astype(np.float32) + noise))

    def __repr__(self) -> str:
        return f"RandomGaussianNoise(p={self.p}, var_range={self.var_range})"


class RandomCoarseDropout:
    """Fill ``holes`` rectangles (each side a fraction ``size_range`` of the image side) with ``fill``."""

    def __init__(
        self,
        p: float = 1.0,
        holes: int = 1,
        size_range: tuple[float, float] = (0.2, 0.4),
        fill: int = 0,
    ):
        self.p, self.holes, self.size_range, self.fill = p, holes, size_range, fill

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if not _apply_prob(self.p, rng):
            return sample
        img = sample.image.copy()
        h, w = sample.hw
        for _ in range(self.holes):
            hh = max(1, round(h * rng.uniform(*self.size_range)))
            ww = max(1, round(w * rng.uniform(*self.size_range)))
            y0 = int(rng.integers(0, h - hh + 1))
            x0 = int(rng.integers(0, w - ww + 1))
            img[y0 : y0 + hh, x0 : x0 + ww] = self.fill
        return sample.replace(image=img)

    def __repr__(self) -> str:
        return f"RandomCoarseDropout(p={self.p}, holes={self.holes})"


class RandomSolarize:
    """Invert image values ``>= threshold`` (``v -> 255 - v``)."""

    def __init__(self, p: float = 0.3, threshold: int = 128):
        self.p, self.threshold = p, threshold

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if not _apply_prob(self.p, rng):
            return sample
        img = sample.image
        return sample.replace(
            image=np.where(img >= self.threshold, 255 - img, img).astype(np.uint8)
        )

    def __repr__(self) -> str:
        return f"RandomSolarize(p={self.p}, threshold={self.threshold})"


class RandomDownUpSample:
    """Degrade resolution: downsample the image by a factor ~ U(factor_range) and upsample back,
    each direction with a random interpolation."""

    _INTERPS = (cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA)

    def __init__(self, p: float = 0.2, factor_range: tuple[float, float] = (0.1, 0.7)):
        self.p, self.factor_range = p, factor_range

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if not _apply_prob(self.p, rng):
            return sample
        h, w = sample.hw
        f = rng.uniform(*self.factor_range)
        small = (max(1, round(w * f)), max(1, round(h * f)))
        down = cv2.resize(sample.image, small, interpolation=int(rng.choice(self._INTERPS)))
        up = cv2.resize(down, (w, h), interpolation=int(rng.choice(self._INTERPS)))
        return sample.replace(image=up)

    def __repr__(self) -> str:
        return f"RandomDownUpSample(p={self.p}, factor_range={self.factor_range})"

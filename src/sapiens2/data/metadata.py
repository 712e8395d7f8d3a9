"""Keypoint (308, Goliath layout) and body-part (29 classes) metadata shipped with the package."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np


def _load(name: str) -> dict:
    return json.loads(resources.files("sapiens2.data").joinpath(name).read_text())


@dataclass(frozen=True)
class KeypointMeta:
    """The 308-keypoint layout (``sapiens/pose/configs/_base_/keypoints308.py``). Arrays are read-only numpy arrays."""

    names: tuple[str, ...]
    types: tuple[str, ...]  # "upper", "lower" or ""
    flip_indices: np.ndarray  # (K,) int, an involution
    flip_pairs: np.ndarray  # (P, 2)
    skeleton: np.ndarray  # (L, 2) index pairs
    link_colors: np.ndarray  # (L, 3) uint8 RGB
    colors: np.ndarray  # (K, 3) uint8 RGB
    sigmas: np.ndarray  # (K,) float64, OKS sigmas
    joint_weights: np.ndarray  # (K,)
    groups: dict[
        str, tuple[int, ...]
    ]  # body 17, foot 6, face 238, left_hand 20, right_hand 20, ...
    coco_wholebody_to_goliath: dict[int, int]  # COCO-WholeBody-133 index -> 308 index

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.names.index(name)


@dataclass(frozen=True)
class SegMeta:
    """The 29 body-part classes (``sapiens/dense/src/datasets/seg/seg_utils.py``)."""

    names: tuple[str, ...]
    palette: np.ndarray  # (C, 3) uint8 RGB
    flip_pairs: np.ndarray  # (P, 2) left/right class pairs
    class_weight: np.ndarray  # (C,) training CE weights

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def flip_lut(self) -> np.ndarray:
        """(256,) uint8 lookup table mapping each label to its mirror label (255 stays 255)."""
        lut = np.arange(256, dtype=np.uint8)
        for a, b in self.flip_pairs:
            lut[a], lut[b] = b, a
        return lut


def _ro(a, dtype) -> np.ndarray:
    arr = np.asarray(a, dtype=dtype)
    arr.setflags(write=False)
    return arr


@cache
def keypoints308() -> KeypointMeta:
    d = _load("keypoints308.json")
    return KeypointMeta(
        names=tuple(d["names"]),
        types=tuple(d["types"]),
        flip_indices=_ro(d["flip_indices"], np.int64),
        flip_pairs=_ro(d["flip_pairs"], np.int64),
        skeleton=_ro(d["skeleton_links"], np.int64),
        link_colors=_ro(d["skeleton_link_colors_rgb"], np.uint8),
        colors=_ro(d["keypoint_colors_rgb"], np.uint8),
        sigmas=_ro(d["sigmas"], np.float64),
        joint_weights=_ro(d["joint_weights"], np.float64),
        groups={k: tuple(v) for k, v in d["groups"].items()},
        coco_wholebody_to_goliath={
            int(k): int(v) for k, v in d["coco_wholebody_to_goliath_mapping"].items()
        },
    )


@cache
def seg29() -> SegMeta:
    d = _load("seg29.json")
    return SegMeta(
        names=tuple(d["names"]),
        palette=_ro(d["palette_rgb"], np.uint8),
        flip_pairs=_ro(d["flip_swap_pairs"], np.int64),
        class_weight=_ro(d["train_class_weight"], np.float32),
    )

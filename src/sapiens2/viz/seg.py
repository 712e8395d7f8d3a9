"""Segmentation pictures: palette colouring, overlay and a legend of the classes present."""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from sapiens2.data.metadata import seg29
from sapiens2.viz.layout import side_by_side


@functools.cache
def _palette_lut() -> np.ndarray:
    """The (256, 1, 3) palette table for ``cv2.LUT`` (built once; read only)."""
    lut = np.zeros((256, 1, 3), np.uint8)
    pal = seg29().palette
    lut[: len(pal), 0] = pal
    return lut


def seg_to_rgb(labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` class ids → ``(H, W, 3)`` uint8 palette colours (ids outside the palette are black)."""
    ids = np.ascontiguousarray(np.asarray(labels).astype(np.uint8, copy=False))
    if ids.ndim != 2:
        raise ValueError(f"expected (H, W) class ids, got shape {ids.shape}")
    # a per-channel table lookup: ~10x faster than fancy indexing a (256, 3) palette
    return cv2.LUT(cv2.merge([ids, ids, ids]), _palette_lut())


def seg_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 - alpha) * image + alpha * palette colour`` (the official overlay with alpha 0.5),
    rounded to the nearest integer.

    Args:
        image: ``(H, W, 3)`` uint8 RGB; labels: ``(H, W)`` class ids.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels {labels.shape} do not match the image {image.shape[:2]}")
    image = np.ascontiguousarray(image, dtype=np.uint8)
    return cv2.addWeighted(image, 1 - alpha, seg_to_rgb(labels), alpha, 0.0)


def _legend_layout(names: list[str], height: int) -> tuple[int, int, int, float, int]:
    """Row height, rows per column, columns, font scale and column width of a legend listing
    ``names`` in a panel ``height`` pixels high."""
    row = int(np.clip(height // max(len(names), 1), 12, 28))
    per_col = max(1, height // row)
    cols = math.ceil(len(names) / per_col)
    scale = row / 40
    text_w = max(cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for n in names)
    return row, per_col, cols, scale, row + 6 + text_w + 8


def seg_legend(
    labels: np.ndarray, height: int, include_background: bool = False, fixed: bool = False
) -> np.ndarray:
    """A legend panel of the classes present in ``labels``: colour swatch + class name per row.

    Args:
        labels: ``(H, W)`` class ids; height: panel height in pixels.
        include_background: also list class 0.
        fixed: lay the panel out as if every class were present, so that its size depends on
            ``height`` only (the frames of a video must all have one size); the classes present
            are listed in that layout.

    Returns:
        ``(height, W_legend, 3)`` uint8 RGB on white (a narrow blank strip if no class is present
        and ``fixed`` is off).
    """
    meta = seg29()
    counts = np.bincount(np.asarray(labels).ravel(), minlength=meta.num_classes)
    first = 0 if include_background else 1
    present = [c for c in np.flatnonzero(counts[: meta.num_classes]).tolist() if c >= first]
    if fixed:
        layout_names = list(meta.names[first : meta.num_classes])
    elif present:
        layout_names = [meta.names[c] for c in present]
    else:
        return np.full((height, 8, 3), 255, np.uint8)
    row, per_col, cols, scale, col_w = _legend_layout(layout_names, height)
    panel = np.full((height, cols * col_w, 3), 255, np.uint8)
    for i, c in enumerate(present):
        x0 = (i // per_col) * col_w + 4
        y0 = (i % per_col) * row
        color = tuple(int(v) for v in meta.palette[c])
        cv2.rectangle(panel, (x0, y0 + 2), (x0 + row - 4, y0 + row - 3), color, -1)
        cv2.putText(panel, meta.names[c], (x0 + row + 2, y0 + int(row * 0.72)), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
    return panel


def seg_picture(
    image: np.ndarray, labels: np.ndarray, legend: bool = True, fixed_legend: bool = False
) -> np.ndarray:
    """``[image | overlay | legend]`` as one ``uint8`` RGB picture; with ``fixed_legend`` (video
    frames) its size depends on the image size only (see :func:`seg_legend`)."""
    panels = [image, seg_overlay(image, labels)]
    if legend:
        panels.append(seg_legend(labels, image.shape[0], fixed=fixed_legend))
    return side_by_side(*panels)

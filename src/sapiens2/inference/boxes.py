"""Person boxes for top-down pose: user boxes (Python or JSON), boxes from a person mask, whole image.

Boxes are ``(N, 4)`` float32 ``x1, y1, x2, y2`` in pixels, inclusive of the last pixel (the whole
image is ``[0, 0, W - 1, H - 1]``, as in the official pose tool).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def whole_image_box(height: int, width: int) -> np.ndarray:
    """``(1, 4)`` box covering the image: ``[0, 0, W - 1, H - 1]``."""
    return np.array([[0, 0, width - 1, height - 1]], dtype=np.float32)


def as_boxes(boxes, name: str = "boxes") -> tuple[np.ndarray, np.ndarray]:
    """Validate user boxes: ``(N, 4)`` xyxy or ``(N, 5)`` xyxy + score.

    Returns:
        boxes ``(N, 4)`` float32 and scores ``(N,)`` float32 (1 when not given).

    Raises:
        ValueError: wrong shape, non-finite values, or x2 < x1 / y2 < y1.
    """
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] not in (4, 5):
        raise ValueError(
            f"{name}: expected boxes of shape (N, 4) xyxy or (N, 5) xyxy+score, got {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: boxes contain NaN or infinite values")
    xyxy = arr[:, :4].copy()
    if (xyxy[:, 2] < xyxy[:, 0]).any() or (xyxy[:, 3] < xyxy[:, 1]).any():
        raise ValueError(f"{name}: boxes must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1")
    scores = arr[:, 4].copy() if arr.shape[1] == 5 else np.ones(len(arr), np.float32)
    return xyxy, scores


def load_boxes_json(path: str | Path) -> dict[str, np.ndarray]:
    """Read person boxes from a JSON file.

    Format: an object mapping an image key to a list of boxes, each ``[x1, y1, x2, y2]`` or
    ``[x1, y1, x2, y2, score]``. The key is the image's file name (``"a.jpg"``) or stem (``"a"``);
    video frames use ``"<video stem>_<frame index, 6 digits>"`` (``"clip_000012"``).

    Returns:
        Mapping from key to an ``(N, 4 or 5)`` float32 array.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"boxes file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object mapping image names to lists of boxes")
    out = {}
    for key, value in data.items():
        where = f"{path}[{key!r}]"
        if not isinstance(value, list) or not all(isinstance(b, list) for b in value):
            raise ValueError(f"{where}: expected a list of boxes [[x1, y1, x2, y2(, score)], ...]")
        rows = [[*b, 1.0] if len(b) == 4 else b for b in value]  # rows may mix 4 and 5 numbers
        xyxy, scores = as_boxes(rows if rows else np.zeros((0, 4)), name=where)
        out[str(key)] = np.concatenate([xyxy, scores[:, None]], axis=1)
    return out


def lookup_boxes(table: dict[str, np.ndarray], name: str) -> np.ndarray | None:
    """Boxes for an image named ``name`` (file name or stem), or None when the table has none."""
    if name in table:
        return table[name]
    stem = Path(name).stem
    return table.get(stem)


def boxes_from_mask(
    mask: np.ndarray, min_relative_area: float = 0.05, min_area: int = 16
) -> np.ndarray:
    """One box per connected component of a person mask (8-connectivity).

    Components smaller than ``min_relative_area`` × the largest component or than ``min_area``
    pixels are dropped (detached fingers, noise).

    Args:
        mask: ``(H, W)`` bool / uint8 foreground.

    Returns:
        ``(N, 4)`` float32 inclusive xyxy boxes, largest component first.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"person mask must be (H, W), got {mask.shape}")
    count, _, stats, _ = cv2.connectedComponentsWithStats(
        (mask > 0).astype(np.uint8), connectivity=8
    )
    if count <= 1:
        return np.zeros((0, 4), np.float32)
    stats = stats[1:]
    areas = stats[:, cv2.CC_STAT_AREA]
    keep = (areas >= min_relative_area * areas.max()) & (areas >= min_area)
    stats = stats[keep][np.argsort(-areas[keep], kind="stable")]
    x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    w, h = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    return np.stack([x, y, x + w - 1, y + h - 1], axis=1).astype(np.float32)

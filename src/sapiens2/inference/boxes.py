"""Person boxes for top-down pose: user boxes (Python or JSON), boxes from a person mask, whole image.

Boxes are ``(N, 4)`` float32 ``x1, y1, x2, y2`` in pixels, inclusive of the last pixel (the whole
image is ``[0, 0, W - 1, H - 1]``, as in the official pose tool).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np

from sapiens2.errors import BoxesError


def whole_image_box(height: int, width: int) -> np.ndarray:
    """``(1, 4)`` box covering the image: ``[0, 0, W - 1, H - 1]``."""
    return np.array([[0, 0, width - 1, height - 1]], dtype=np.float32)


#: Default limit on the person boxes of one image (the detector keeps at most 100).
MAX_BOXES = 500
#: Coordinates beyond this many pixels are not an image's (and overflow float32 arithmetic).
MAX_COORDINATE = 1e7


def as_boxes(
    boxes, name: str = "boxes", max_boxes: int | None = MAX_BOXES
) -> tuple[np.ndarray, np.ndarray]:
    """Validate user boxes: ``(N, 4)`` xyxy or ``(N, 5)`` xyxy + score.

    Args:
        max_boxes: at most this many boxes (None: no limit).

    Returns:
        boxes ``(N, 4)`` float32 and scores ``(N,)`` float32 (1 when not given).

    Raises:
        BoxesError (a DataError, a ValueError): wrong shape, non-numbers, non-finite or huge
        values, a box without positive width and height (x2 > x1 and y2 > y1 are required), or
        more than ``max_boxes`` boxes.
    """
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as err:
        raise BoxesError(f"{name}: boxes must be numbers ({err})") from None
    if arr.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] not in (4, 5):
        raise BoxesError(
            f"{name}: expected boxes of shape (N, 4) xyxy or (N, 5) xyxy+score, got {arr.shape}"
        )
    if max_boxes is not None and len(arr) > max_boxes:
        raise BoxesError(
            f"{name}: {len(arr)} boxes for one image; at most {max_boxes} (raise the limit with "
            "--max-boxes / max_boxes=)"
        )
    if not np.isfinite(arr).all():
        raise BoxesError(f"{name}: boxes contain NaN or infinite values")
    if (np.abs(arr[:, :4]) > MAX_COORDINATE).any():
        raise BoxesError(f"{name}: box coordinates beyond +-{MAX_COORDINATE:g} pixels")
    xyxy = arr[:, :4].astype(np.float32)
    bad = np.flatnonzero((xyxy[:, 2] <= xyxy[:, 0]) | (xyxy[:, 3] <= xyxy[:, 1]))
    if len(bad):
        raise BoxesError(
            f"{name}: boxes must be x1, y1, x2, y2 with x2 > x1 and y2 > y1; box {bad[0]} is "
            f"{xyxy[bad[0]].tolist()}"
        )
    scores = arr[:, 4].astype(np.float32) if arr.shape[1] == 5 else np.ones(len(arr), np.float32)
    return xyxy, scores


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def load_boxes_json(
    path: str | Path, max_boxes: int | None = MAX_BOXES, image_names: dict[int, str] | None = None
) -> dict[str, np.ndarray]:
    """Read person boxes from a JSON file.

    Format: an object mapping an image key to a list of boxes, each ``[x1, y1, x2, y2]`` or
    ``[x1, y1, x2, y2, score]`` (finite numbers, x2 > x1, y2 > y1). The key is the image's file
    name (``"a.jpg"``) or stem (``"a"``); video frames use ``"<video stem>_<frame index, 6
    digits>"`` (``"clip_000012"``).

    Or COCO detection results: a list of ``{image_id, category_id, bbox [x, y, w, h], score}``
    (:func:`sapiens2.inference.coco.coco_detection_boxes`), with ``image_names`` (image id ->
    file name, from ``--coco-gt``) or else keyed by the image id.

    Returns:
        Mapping from key to an ``(N, 5)`` float32 array (scores 1 where not given).

    Raises:
        BoxesError (a DataError): the file is not such an object; the message names the key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"boxes file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise BoxesError(f"{path}: not valid JSON ({err})") from None
    if isinstance(data, list):
        from sapiens2.inference.coco import coco_detection_boxes

        return coco_detection_boxes(data, path, image_names, max_boxes=max_boxes)
    if not isinstance(data, dict):
        raise BoxesError(
            f"{path}: expected an object mapping image names to lists of boxes, or a list of "
            "COCO detection results"
        )
    out = {}
    for key, value in data.items():
        where = f"{path}[{key!r}]"
        if not isinstance(value, list) or not all(
            isinstance(b, list) and len(b) in (4, 5) and all(_is_number(v) for v in b)
            for b in value
        ):
            raise BoxesError(
                f"{where}: expected a list of boxes [[x1, y1, x2, y2(, score)], ...] of numbers"
            )
        rows = [[*b, 1.0] if len(b) == 4 else b for b in value]  # rows may mix 4 and 5 numbers
        xyxy, scores = as_boxes(rows if rows else np.zeros((0, 4)), name=where, max_boxes=max_boxes)
        out[str(key)] = np.concatenate([xyxy, scores[:, None]], axis=1)
    return out


def lookup_boxes(table: dict[str, np.ndarray], name: str) -> np.ndarray | None:
    """Boxes for an image named ``name`` (file name or stem), or None when the table has none."""
    if name in table:
        return table[name]
    stem = Path(name).stem
    if stem in table:
        return table[stem]
    key = _numeric_key(stem)
    return table.get(key) if key else None


def _numeric_key(stem: str) -> str | None:
    """A COCO-style numeric file stem as an image id key (``"000000397133"`` -> ``"397133"``)."""
    return str(int(stem)) if stem.isascii() and stem.isdigit() else None


_FRAME_KEY = re.compile(r"^(?P<video>.+)_\d{6}$")


def unmatched_keys(table: dict[str, np.ndarray], items) -> tuple[list[str], list[str]]:
    """The keys of a boxes table that match no input, and the images that have no key.

    Args:
        items: the media items of the run (``expand_media``); an image matches its file name or
            stem, a video any ``<video stem>_<6 digits>`` key.

    Returns:
        ``(keys matching no input, image file names without boxes)``.
    """
    names, videos = set(), set()
    for item in items:
        if item.kind == "video":
            videos.add(item.name)
        else:
            names.update((item.path.name, item.path.stem, _numeric_key(item.path.stem)))
    unknown = []
    for key in table:
        m = _FRAME_KEY.match(key)
        if key not in names and not (m and m["video"] in videos):
            unknown.append(key)
    missing = [
        item.path.name
        for item in items
        if item.kind == "image" and lookup_boxes(table, item.path.name) is None
    ]
    return unknown, missing


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


def people_from_depth(
    mask: np.ndarray,
    depth: np.ndarray,
    *,
    max_jump: float = 0.08,
    min_area_fraction: float = 0.015,
    grid: int = 128,
) -> tuple[np.ndarray, np.ndarray]:
    """Person instances from a person mask and a depth map: one per connected region of the mask
    that no depth step crosses (people overlapping in the image are apart in depth).

    The mask and depth are first reduced to at most ``grid`` pixels on the long side (nearest), so
    that a step blurred over a few pixels of a dense prediction still shows: two 4-neighbours of
    that grid whose depths differ by more than ``max_jump`` × the nearer depth are not connected.
    Regions smaller than ``min_area_fraction`` of the image are dropped (a hand at the border).

    Args:
        mask: ``(H, W)`` bool / uint8 person mask.
        depth: ``(H, W)`` depth in any unit (non-positive or non-finite = unknown).

    Returns:
        ``(labels, boxes)``: ``(H, W)`` int32 person index 1..N (0 elsewhere, incl. the dropped
        regions and the step pixels) and ``(N, 4)`` float32 inclusive xyxy boxes, largest first.
    """
    mask, depth = np.asarray(mask), np.asarray(depth, dtype=np.float32)
    if mask.ndim != 2 or depth.shape != mask.shape:
        raise ValueError(f"need an (H, W) mask and depth, got {mask.shape} and {depth.shape}")
    h, w = mask.shape
    f = min(1.0, grid / max(h, w))
    gh, gw = max(1, round(h * f)), max(1, round(w * f))
    small_m = cv2.resize((mask > 0).astype(np.uint8), (gw, gh), interpolation=cv2.INTER_NEAREST)
    small_d = cv2.resize(np.nan_to_num(depth, nan=0.0), (gw, gh), interpolation=cv2.INTER_NEAREST)
    ok = (small_m > 0) & (small_d > 0)
    d = np.where(ok, small_d, np.nan)
    with np.errstate(invalid="ignore"):
        jump_x = np.abs(d[:, 1:] - d[:, :-1]) > max_jump * np.fmin(d[:, 1:], d[:, :-1])
        jump_y = np.abs(d[1:] - d[:-1]) > max_jump * np.fmin(d[1:], d[:-1])
    step = np.zeros_like(ok)
    step[:, 1:] |= jump_x
    step[:, :-1] |= jump_x
    step[1:] |= jump_y
    step[:-1] |= jump_y
    # both sides of a step are cut: a line of pixels that no region crosses
    count, small_labels, stats, _ = cv2.connectedComponentsWithStats(
        (ok & ~step).astype(np.uint8), connectivity=4
    )
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64) / (gh * gw)
    keep = np.flatnonzero(areas >= min_area_fraction) + 1
    keep = keep[np.argsort(-areas[keep - 1], kind="stable")]
    relabel = np.zeros(count, np.int32)
    relabel[keep] = np.arange(1, len(keep) + 1)
    labels = cv2.resize(relabel[small_labels], (w, h), interpolation=cv2.INTER_NEAREST)
    labels = np.where(mask > 0, labels, 0).astype(np.int32)
    boxes = []
    for i in range(1, len(keep) + 1):
        ys, xs = np.nonzero(labels == i)
        if len(xs):
            boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
    return labels, np.asarray(boxes, np.float32).reshape(-1, 4)

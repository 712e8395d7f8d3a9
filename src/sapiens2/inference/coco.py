"""COCO files as inputs of ``sapiens2 predict``: the image ids (and person boxes) of a COCO
annotation file (``--coco-gt``), and COCO detection results as person boxes (``--boxes``).

Images are matched by file name: an input ``photo.jpg`` is the annotation file's image whose
``file_name`` ends in ``photo.jpg`` (folders in ``file_name`` are ignored). Boxes come out as the
tables of :func:`sapiens2.inference.boxes.load_boxes_json`: ``{key: (N, 5) xyxy + score}``, with
COCO's ``[x, y, w, h]`` turned into ``[x, y, x + w, y + h]`` (the inverse of ``coco_results.json``'s
``bbox``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from sapiens2.errors import BoxesError, DataError
from sapiens2.inference.boxes import MAX_BOXES, as_boxes

logger = logging.getLogger(__name__)

#: COCO's category id of a person.
PERSON_CATEGORY = 1


@dataclass(frozen=True)
class CocoImages:
    """What ``sapiens2 predict`` takes from a COCO annotation file.

    Attributes:
        ids: image key (the ``file_name`` without folders) -> COCO image id.
        names: COCO image id -> image key.
        boxes: image key -> ``(N, 5)`` float32 xyxy + score (1) of its person annotations that are
            not crowds and have a positive size (``(0, 5)`` for an image without any).
    """

    ids: dict[str, int]
    names: dict[int, str]
    boxes: dict[str, np.ndarray] = field(default_factory=dict)


def _read_json(path: Path, what: str):
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _xywh(bbox, where: str) -> list[float]:
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        raise BoxesError(f"{where}: bbox must be [x, y, w, h] (4 numbers), got {bbox!r}")
    return [float(v) for v in bbox]


def load_coco_images(path: str | Path, max_boxes: int | None = MAX_BOXES) -> CocoImages:
    """Read the images (ids, file names) and person boxes of a COCO annotation file.

    Raises:
        DataError: not a COCO annotation file (no ``images`` list, an image without an integer
            ``id`` or a ``file_name``, a repeated id or file name), or a bad ``bbox``; the message
            names the file and the entry.
    """
    path = Path(path)
    data = _read_json(path, "COCO annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not a COCO annotation file (no 'images' list)")
    ids: dict[str, int] = {}
    names: dict[int, str] = {}
    for i, img in enumerate(data["images"]):
        if not (isinstance(img, dict) and _is_int(img.get("id"))):
            raise DataError(f"{path}: images[{i}] has no integer 'id'")
        name = img.get("file_name")
        if not isinstance(name, str) or not PurePosixPath(name).name:
            raise DataError(f"{path}: images[{i}] (id {img['id']}) has no 'file_name'")
        key = PurePosixPath(name.replace("\\", "/")).name
        if img["id"] in names:
            raise DataError(f"{path}: image id {img['id']} appears twice")
        if key in ids:
            raise DataError(
                f"{path}: two images are named {key!r} (ids {ids[key]} and {img['id']}); "
                "inputs are matched by file name"
            )
        ids[key], names[img["id"]] = img["id"], key
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise DataError(f"{path}: 'annotations' must be a list")
    rows: dict[str, list[list[float]]] = {}
    for i, ann in enumerate(anns):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict) or not _is_int(ann.get("image_id")):
            raise DataError(f"{where} has no integer 'image_id'")
        if ann.get("category_id", PERSON_CATEGORY) != PERSON_CATEGORY or ann.get("iscrowd", 0):
            continue
        if ann["image_id"] not in names:
            raise DataError(
                f"{where} refers to image id {ann['image_id']}, which is not in 'images'"
            )
        if "bbox" not in ann:
            continue
        x, y, w, h = _xywh(ann["bbox"], where)
        if w > 0 and h > 0:
            rows.setdefault(names[ann["image_id"]], []).append([x, y, x + w, y + h, 1.0])
    boxes = {}
    for key in ids:  # an image without person annotations has no people to predict
        r = rows.get(key, [])
        xyxy, scores = as_boxes(r or np.zeros((0, 4)), name=f"{path}: boxes of {key}", max_boxes=max_boxes)  # fmt: skip
        boxes[key] = np.concatenate([xyxy, scores[:, None]], axis=1)
    return CocoImages(ids, names, boxes)


def is_coco_detections(data) -> bool:
    """Whether parsed JSON is a COCO detection-results list (rather than our boxes object)."""
    return isinstance(data, list)


def coco_detection_boxes(
    data: list,
    source: str | Path,
    names: dict[int, str] | None = None,
    max_boxes: int | None = MAX_BOXES,
) -> dict[str, np.ndarray]:
    """Person boxes from COCO detection results ``[{image_id, category_id, bbox [x, y, w, h],
    score}, ...]`` (the person category only; every box is kept, whatever its score).

    Args:
        names: image id -> image key (from :func:`load_coco_images`); without it an image's key is
            its id as text, which matches inputs named by the id (``397133.jpg`` or COCO's
            ``000000397133.jpg``, see :func:`~sapiens2.inference.boxes.lookup_boxes`).

    Raises:
        BoxesError: an entry that is not such a dict (the message names it).
    """
    rows: dict[str, list[list[float]]] = {}
    unknown: set[int] = set()
    for i, det in enumerate(data):
        where = f"{source}[{i}]"
        if not isinstance(det, dict) or not _is_int(det.get("image_id")):
            raise BoxesError(
                f"{where}: expected a COCO detection {{image_id, category_id, bbox, score}} "
                "with an integer image_id"
            )
        if det.get("category_id", PERSON_CATEGORY) != PERSON_CATEGORY:
            continue
        x, y, w, h = _xywh(det.get("bbox"), where)
        score = det.get("score", 1.0)
        if not _is_number(score):
            raise BoxesError(f"{where}: score must be a number, got {score!r}")
        if names is None:
            key = str(det["image_id"])
        elif det["image_id"] in names:
            key = names[det["image_id"]]
        else:
            unknown.add(det["image_id"])
            continue
        rows.setdefault(key, []).append([x, y, x + w, y + h, float(score)])
    if unknown:
        logger.warning("%s: detections of %d image id(s) not in the COCO annotation file are not "
                       "used: %s", source, len(unknown), ", ".join(map(str, sorted(unknown)[:10])))  # fmt: skip
    out = {}
    for key, r in rows.items():
        xyxy, scores = as_boxes(r, name=f"{source}: boxes of image {key}", max_boxes=max_boxes)
        out[key] = np.concatenate([xyxy, scores[:, None]], axis=1)
    return out


def lookup_image_id(ids: dict[str, int], name: str) -> int | None:
    """The COCO id of an input named ``name`` (a file name, or a video frame's name), else None."""
    if name in ids:
        return ids[name]
    return None

"""Stage 1, read and validate: decode each image and drop the unusable ones, saying why.

Drop reasons: ``fetch_error`` / ``unreadable_tar`` / ``too_large`` / ``not_regular_file`` (from
reading), ``too_many_pixels`` (the header declares more than ``max_pixels``; never decoded),
``unreadable`` (not a decodable 8-bit image), ``tiny`` (short side below ``min_side``), ``extreme_aspect`` (long/short side
above ``max_aspect``). Kept images also get their SHA-256 and 64-bit perceptual hash here (cheap, and
decoded once).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from sapiens2.curate.config import ReadConfig
from sapiens2.curate.phash import phash64
from sapiens2.curate.sources import Item
from sapiens2.data.formats import DataError, decode_image
from sapiens2.errors import ImageTooLargeError

DROP_REASONS = (
    "fetch_error",
    "unreadable_tar",
    "too_large",
    "not_regular_file",
    "too_many_pixels",
    "unreadable",
    "tiny",
    "extreme_aspect",
)


@dataclass(frozen=True)
class Validated:
    """What stage 1 knows of one image (``drop`` is "" for kept images)."""

    drop: str
    width: int = 0
    height: int = 0
    sha256: str = ""
    phash: int = 0


def check_size(height: int, width: int, cfg: ReadConfig) -> str:
    """The drop reason for an image of this size under ``cfg`` ("" when fine)."""
    short, long = min(height, width), max(height, width)
    if short < cfg.min_side:
        return "tiny"
    if long / short > cfg.max_aspect:
        return "extreme_aspect"
    return ""


def validate_item(item: Item, cfg: ReadConfig) -> tuple[Validated, np.ndarray | None]:
    """Decode and check one item.

    Returns:
        The verdict and the decoded (H, W, 3) uint8 RGB image (None when dropped as unreadable).
    """
    if item.error:
        return Validated(item.error), None
    try:
        rgb = decode_image(item.data, item.uid, max_pixels=cfg.max_pixels)
    except ImageTooLargeError:  # known from the header, before decoding
        return Validated("too_many_pixels"), None
    except DataError:
        return Validated("unreadable"), None
    h, w = rgb.shape[:2]
    drop = check_size(h, w, cfg)
    if drop:
        return Validated(drop, w, h), rgb
    return Validated("", w, h, hashlib.sha256(item.data).hexdigest(), phash64(rgb)), rgb

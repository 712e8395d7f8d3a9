"""What every layer shares about images: the Sapiens2 mean/std, the RGB check, and the one
image-file reader (defined here once; inference, datasets, pretraining and the detector use it)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sapiens2.errors import DataError
from sapiens2.limits import DEFAULT, check_image_header

__all__ = ["IMAGE_MEAN", "IMAGE_STD", "check_rgb", "decode_image_bytes", "read_image"]

# RGB order, 0-255 scale (the official configs' ImagePreprocessor / data_preprocessor).
IMAGE_MEAN = (123.675, 116.28, 103.53)
IMAGE_STD = (58.395, 57.12, 57.375)


def check_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate an RGB image; returns it as a contiguous ``uint8`` array ``(H, W, 3)``.

    Raises:
        TypeError: not an array.
        ValueError: not ``(H, W, 3)``, empty, or not ``uint8``.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: expected an RGB array of shape (H, W, 3), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name}: empty image of shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8 (0-255), got {image.dtype}")
    return np.ascontiguousarray(image)


def read_image(path: str | Path, max_pixels: int | None = DEFAULT) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB, as the official demos' ``cv2.imread``
    (EXIF orientation applied, grey expanded, alpha dropped).

    Args:
        max_pixels: refuse images whose header declares more pixels, before decoding (default:
            the limit of :mod:`sapiens2.limits`, 100 MP; None for none).

    Raises:
        FileNotFoundError: missing file; DataError (a ValueError): not a regular file, over the
        pixel limit (:class:`~sapiens2.errors.ImageTooLargeError`), or a file OpenCV cannot decode.
    """
    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise DataError(f"{path}: not a regular file (a FIFO, device or socket)")
        raise FileNotFoundError(f"image not found: {path}")
    return decode_image_bytes(np.fromfile(str(path), dtype=np.uint8), str(path), max_pixels)


def decode_image_bytes(
    data: bytes | np.ndarray, name: str, max_pixels: int | None = DEFAULT
) -> np.ndarray:
    """Decode the bytes of an image file exactly as :func:`read_image` reads the file (for
    images that are no local files: shard members, fsspec URLs); ``name`` is used in errors.

    Raises:
        DataError: over the pixel limit, or bytes OpenCV cannot decode.
    """
    if not isinstance(data, np.ndarray):
        data = np.frombuffer(data, dtype=np.uint8)
    check_image_header(data, name, max_pixels)
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error as err:  # e.g. over OpenCV's own 2**30-pixel limit
        raise DataError(
            f"cannot decode image {name}: {str(err).strip().splitlines()[-1]}"
        ) from None
    if bgr is None:
        raise DataError(f"cannot decode image {name}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

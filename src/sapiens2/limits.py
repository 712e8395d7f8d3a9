"""Resource limits on what is read from disk: the image pixel limit and header sniffing.

A compressed image can declare any size: a 2.6 MB PNG of 30000 x 30000 pixels decodes to 2.7 GB
and makes every later step (resize, full-size outputs) allocate in proportion. The size is read
from the file header (PNG, JPEG, BMP, GIF, WebP, TIFF, PNM) before anything is decoded, and an
image over the limit is refused with :class:`~sapiens2.errors.ImageTooLargeError` (a
``DataError``): the callers skip it with that reason and go on with the other images.

The limit is :data:`DEFAULT_MAX_PIXELS` (100 megapixels) unless the environment variable
``SAPIENS2_MAX_PIXELS`` sets another one (``0`` for none); ``max_pixels=`` arguments (``None`` for
no limit), ``sapiens2 predict --max-megapixels`` and the curation config's ``read.max_pixels``
override it for one call. OpenCV refuses images over 2**30 pixels whatever the limit says.
"""

from __future__ import annotations

import os
import struct

from sapiens2.errors import ImageTooLargeError, UsageError

#: 100 megapixels: a 1B model's dense outputs for such an image fit a workstation's memory.
DEFAULT_MAX_PIXELS = 100_000_000
#: ``max_pixels=DEFAULT`` means "the default limit" (:func:`default_max_pixels`).
DEFAULT = -1
ENV_VAR = "SAPIENS2_MAX_PIXELS"


def default_max_pixels() -> int | None:
    """The limit in effect when none is given: ``$SAPIENS2_MAX_PIXELS`` (0 = none) or 100 MP."""
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        raise UsageError(f"{ENV_VAR}={text!r} is not a number of pixels") from None
    return value if value > 0 else None


def resolve_max_pixels(max_pixels: int | None) -> int | None:
    """``DEFAULT`` -> :func:`default_max_pixels`; ``None`` or ``0`` -> no limit; else itself."""
    if max_pixels == DEFAULT:
        return default_max_pixels()
    if max_pixels is None or max_pixels == 0:
        return None
    if max_pixels < 0:
        raise UsageError(f"max_pixels must be positive (or None for no limit), got {max_pixels}")
    return int(max_pixels)


def check_pixels(height: int, width: int, name: str, max_pixels: int | None = DEFAULT) -> None:
    """Raise :class:`ImageTooLargeError` when ``height * width`` is over the limit."""
    limit = resolve_max_pixels(max_pixels)
    if limit is not None and height * width > limit:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} pixels ({height * width / 1e6:.1f} MP) is over the limit of "
            f"{limit / 1e6:g} MP (raise it with --max-megapixels, max_pixels= or ${ENV_VAR})"
        )


def check_image_header(
    data: bytes | memoryview, name: str, max_pixels: int | None = DEFAULT
) -> tuple[int, int] | None:
    """The ``(H, W)`` an encoded image declares (None for a format or header not recognised),
    after checking it against the pixel limit; nothing is decoded."""
    size = image_size(data)
    if size is not None:
        check_pixels(*size, name, max_pixels)
    return size


def image_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """``(H, W)`` from the header of a PNG, JPEG, BMP, GIF, WebP, TIFF or PNM image; None when the
    format is not one of those or the header is cut short."""
    b = bytes(data[:32])
    try:
        if b.startswith(b"\x89PNG\r\n\x1a\n") and b[12:16] == b"IHDR":
            w, h = struct.unpack(">II", b[16:24])
            return h, w
        if b.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
        if b.startswith((b"GIF87a", b"GIF89a")):
            w, h = struct.unpack("<HH", b[6:10])
            return h, w
        if b.startswith(b"BM"):
            if struct.unpack("<I", b[14:18])[0] == 12:  # OS/2 core header
                w, h = struct.unpack("<HH", b[18:22])
            else:
                w, h = struct.unpack("<ii", b[18:26])
            return abs(h), abs(w)
        if b.startswith(b"RIFF") and b[8:12] == b"WEBP":
            return _webp_size(bytes(data[:64]))
        if b.startswith((b"II*\x00", b"MM\x00*")):
            return _tiff_size(data)
        if b[:1] == b"P" and b[1:2] in b"123456" and len(b) > 2:
            return _pnm_size(bytes(data[:1024]))
    except struct.error:  # header cut short
        return None
    return None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xDA)):  # no length field
            i += 2
            continue
        (length,) = struct.unpack(">H", bytes(data[i + 2 : i + 4]))
        if marker in _SOF:
            h, w = struct.unpack(">HH", bytes(data[i + 5 : i + 9]))
            return h, w
        if length < 2:
            return None
        i += 2 + length
    return None


def _webp_size(b: bytes) -> tuple[int, int] | None:
    chunk = b[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", b[26:30])
        return h & 0x3FFF, w & 0x3FFF
    if chunk == b"VP8L":
        (bits,) = struct.unpack("<I", b[21:25])
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X":
        w = int.from_bytes(b[24:27], "little") + 1
        h = int.from_bytes(b[27:30], "little") + 1
        return h, w
    return None


def _tiff_size(data) -> tuple[int, int] | None:
    end = "<" if bytes(data[:2]) == b"II" else ">"
    (ifd,) = struct.unpack(end + "I", bytes(data[4:8]))
    (count,) = struct.unpack(end + "H", bytes(data[ifd : ifd + 2]))
    found: dict[int, int] = {}
    for k in range(count):
        entry = bytes(data[ifd + 2 + 12 * k : ifd + 14 + 12 * k])
        tag, kind = struct.unpack(end + "HH", entry[:4])
        if tag in (256, 257):
            fmt = "H" if kind == 3 else "I"
            found[tag] = struct.unpack(end + fmt, entry[8 : 10 if kind == 3 else 12])[0]
    if 256 in found and 257 in found:
        return found[257], found[256]
    return None


def _pnm_size(b: bytes) -> tuple[int, int] | None:
    tokens: list[int] = []
    for line in b[2:].split(b"\n"):
        for tok in line.split(b"#", 1)[0].split():
            if not tok.isdigit():
                return None
            tokens.append(int(tok))
            if len(tokens) == 2:
                return tokens[1], tokens[0]
    return None


__all__ = [
    "DEFAULT",
    "DEFAULT_MAX_PIXELS",
    "check_image_header",
    "check_pixels",
    "default_max_pixels",
    "image_size",
    "resolve_max_pixels",
]

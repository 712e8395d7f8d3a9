"""Hostile files for the tests of issue 24, made small: headers that declare huge sizes, special
files (test-only helpers)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def huge_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A valid-looking PNG whose header declares ``width`` x ``height`` RGB pixels, a few hundred
    bytes long (its image data is cut short: decoding it would allocate the whole image first)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 4096)
    blob = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data)
    path.write_bytes(blob + _chunk(b"IEND", b""))
    return path


def fifo(path: Path) -> Path:
    """A named pipe: reading it blocks forever."""
    os.mkfifo(path)
    return path

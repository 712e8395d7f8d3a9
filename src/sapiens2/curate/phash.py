"""64-bit DCT perceptual hash and Hamming distances.

``phash64``: grey image, area-resized to 32x32, 2-D DCT, the 8x8 lowest frequencies, one bit per
coefficient that is above their median (row-major, most significant bit first). Near-exact copies
(re-encoding, small resizes, mild colour changes) land within a few bits of each other.
"""

from __future__ import annotations

import cv2
import numpy as np


def phash64(rgb: np.ndarray) -> int:
    """Perceptual hash of an (H, W, 3) uint8 RGB image as a signed 64-bit integer."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].reshape(-1)
    bits = low > np.median(low)
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    return int(np.array(value, dtype=np.uint64).view(np.int64))


def hash_bytes(hashes: np.ndarray) -> np.ndarray:
    """(N,) int64 hashes -> (N, 8) uint8 big-endian bytes (the layout of FAISS binary indexes)."""
    return np.asarray(hashes, dtype=np.int64).astype(">i8").view(np.uint8).reshape(-1, 8)


def hamming(a: int, b: int) -> int:
    """Number of differing bits of two 64-bit hashes."""
    return int(bin((a ^ b) & 0xFFFFFFFFFFFFFFFF).count("1"))

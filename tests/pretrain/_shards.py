"""Small image-only shards of smooth random images of varied sizes (test data)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sapiens2.data.formats import encode_png
from sapiens2.data.shards import ShardWriter


def write_image_shards(out: Path, num: int, seed: int = 0, size=(150, 120)) -> Path:
    rng = np.random.default_rng(seed)
    with ShardWriter(out, "train", samples_per_shard=4) as w:
        for i in range(num):
            h = int(rng.integers(size[0], size[0] + 60))
            wd = int(rng.integers(size[1], size[1] + 50))
            img = (rng.random((h // 16 + 1, wd // 16 + 1, 3)) * 255).astype(np.uint8)
            img = cv2.resize(img, (wd, h), interpolation=cv2.INTER_CUBIC)
            w.write(f"{i:06d}", {"png": encode_png(img)})
    return out

"""A generated test pool with known contents, for tests and benchmarks of the pipeline.

``make_pool`` writes synthetic humans (``sapiens2.data.synth``) and planted cases: non-human images
(noise, gradients, shapes), exact copies, near-duplicates (re-encoded, brightened), crops of humans,
broken files, tiny and extreme-aspect images, a small person, blurred / over-exposed / text-covered
humans, and a tar shard. It returns what it planted and a :class:`PlantedDetector` that knows the true
person boxes of every generated image (looked up by a hash of the decoded pixels), so the counts
expected from each stage are exact.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sapiens2.curate.phash import hamming, phash64
from sapiens2.data.synth.render import SynthConfig, render_sample


def pixel_key(rgb: np.ndarray) -> str:
    """SHA-1 of an image's shape and pixels."""
    return hashlib.sha1(str(rgb.shape).encode() + np.ascontiguousarray(rgb).tobytes()).hexdigest()


class PlantedDetector:
    """A :class:`~sapiens2.detect.protocol.Detector` that returns the planted boxes of known images
    (none for anything else)."""

    def __init__(self, boxes: dict[str, np.ndarray]) -> None:
        self.boxes = boxes

    def __call__(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = self.boxes.get(pixel_key(image_rgb), np.zeros((0, 4), np.float32))
        return b, np.ones(len(b), np.float32)


@dataclass
class Pool:
    """What :func:`make_pool` planted: ``counts[kind]``, the detector, and the duplicate pairs
    ``(file name, file name of the image it copies, expected reason)``."""

    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    pairs: list[tuple[str, str, str]] = field(default_factory=list)
    detector: PlantedDetector = field(default_factory=lambda: PlantedDetector({}))


def _png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def _jpg(rgb: np.ndarray, q: int = 92) -> bytes:
    return cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q]
    )[1].tobytes()


def _decoded(data: bytes) -> np.ndarray:
    return cv2.cvtColor(
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )


def _person_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([[xs.min(), ys.min(), xs.max(), ys.max()]], np.float32)


def _human(rng: np.random.Generator, h: int, w: int, min_box: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic one-person image whose person box short side is >= ``min_box``."""
    while True:
        # soft_edges off: the pool needs no matte, and it keeps the images it always had
        s = render_sample(rng, SynthConfig(h, w, people_max=1, noise=4.0, soft_edges=False))
        if s.mask.any():
            box = _person_box(s.mask)
            if min(box[0, 2] - box[0, 0] + 1, box[0, 3] - box[0, 1] + 1) >= min_box:
                return s.image, box


def _nonhuman(rng: np.random.Generator, h: int, w: int, kind: int) -> np.ndarray:
    if kind == 0:  # coloured noise, smoothed a little
        img = rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
    if kind == 1:  # gradient plus noise
        a, b = rng.integers(30, 220, 3), rng.integers(30, 220, 3)
        t = np.linspace(0, 1, w)[None, :, None]
        img = a * (1 - t) + b * t + rng.normal(0, 6, (h, w, 3))
        return np.clip(img, 0, 255).astype(np.uint8)
    img = np.full((h, w, 3), rng.integers(40, 200, 3), np.uint8)  # shapes
    for _ in range(5):
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), int(rng.integers(8, w // 3)), c, -1)
        else:
            cv2.rectangle(
                img,
                (x, y),
                (x + int(rng.integers(10, w // 2)), y + int(rng.integers(10, h // 2))),
                c,
                -1,
            )
    return np.clip(img.astype(np.int16) + rng.integers(-5, 6, img.shape), 0, 255).astype(np.uint8)


def make_pool(
    root: str | Path,
    *,
    seed: int = 0,
    size: tuple[int, int] = (160, 128),
    humans: int = 16,
    nonhumans: int = 6,
    min_box: int = 64,
    in_tar: int = 4,
) -> Pool:
    """Write the planted pool under ``root``.

    Args:
        root: output folder (created).
        seed: generator seed.
        size: (H, W) of the generated images.
        humans: distinct synthetic humans (each has a person box short side >= ``min_box``).
        nonhumans: noise / gradient / shape images.
        min_box: person size guaranteed for humans (use it as ``person.min_box_short_side``).
        in_tar: how many of the distinct humans go into ``shard.tar`` instead of loose files.

    Returns:
        :class:`Pool` whose ``counts`` name what each stage must find: ``unreadable``, ``tiny``,
        ``extreme_aspect``, ``no_person``, ``small_person``, ``low_sharpness``, ``high_clipped``,
        ``high_text``, ``exact_duplicate``, ``near_duplicate``, ``embedding_duplicate``, ``kept``,
        ``files`` (images listed, including broken ones and tar members).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    boxes: dict[str, np.ndarray] = {}
    files: dict[str, bytes] = {}
    tar_files: dict[str, bytes] = {}

    def add(name: str, data: bytes, box: np.ndarray | None, into_tar: bool = False) -> None:
        (tar_files if into_tar else files)[name] = data
        if box is not None:
            boxes[pixel_key(_decoded(data))] = box

    people = [_human(rng, h, w, min_box) for _ in range(humans)]
    for i, (img, box) in enumerate(people):
        add(f"human_{i:03d}.png", _png(img), box, into_tar=i < in_tar)
    for i in range(nonhumans):
        add(f"other_{i:03d}.png", _png(_nonhuman(rng, h, w, i % 3)), None)

    # exact copies (other names), near duplicates (re-encoded / brightened), crops
    def name(i: int) -> str:
        return f"human_{i % humans:03d}.png"

    pairs = []
    for i in range(3):
        add(f"copy_{i:03d}.png", _png(people[-1 - i][0]), people[-1 - i][1])
        pairs.append((f"copy_{i:03d}.png", name(-1 - i), "exact_duplicate"))
    pairs += [
        ("near_000.jpg", name(-4), "near_duplicate"),
        ("near_001.png", name(-4), "near_duplicate"),
    ]
    pairs += [("near_002.jpg", name(-5), "near_duplicate")]
    pairs += [
        ("crop_000.png", name(-6), "embedding_duplicate"),
        ("crop_001.png", name(-7), "embedding_duplicate"),
    ]
    img, box = people[-4]
    add("near_000.jpg", _jpg(img, 90), box)
    add("near_001.png", _png(np.clip(img.astype(np.int16) + 6, 0, 255).astype(np.uint8)), box)
    img, box = people[-5]
    add("near_002.jpg", _jpg(cv2.GaussianBlur(img, (3, 3), 0.6), 85), box)
    n_crops = 0
    for i in (-6, -7):
        img, box = people[i]
        for frac in (0.04, 0.05, 0.06, 0.08):  # the mildest crop the perceptual hash misses
            dy, dx = int(h * frac), int(w * frac)
            crop = cv2.resize(img[dy:, dx : w - dx], (w, h), interpolation=cv2.INTER_AREA)
            if hamming(phash64(crop), phash64(img)) >= 8:
                break
        b = box.copy()
        b[:, [0, 2]] = (b[:, [0, 2]] - dx) * w / (w - 2 * dx)
        b[:, [1, 3]] = (b[:, [1, 3]] - dy) * h / (h - dy)
        add(f"crop_{n_crops:03d}.png", _png(crop), b)
        n_crops += 1

    # broken, tiny, extreme aspect
    add("broken_empty.jpg", b"", None)
    add("broken_bytes.jpg", rng.integers(0, 256, 500, dtype=np.uint8).tobytes(), None)
    full = _png(people[0][0])
    add("broken_truncated.png", full[: len(full) // 2], None)
    add("tiny.png", _png(cv2.resize(people[1][0], (w // 4, h // 4))), None)
    add("wide.png", _png(np.tile(people[2][0], (1, 4, 1))), None)

    # a small person: a human shrunk onto a large background
    img, box = _human(rng, h // 3, w // 3, 4)
    canvas = _nonhuman(rng, h, w, 1)
    canvas[: img.shape[0], : img.shape[1]] = img
    add("small_person.png", _png(canvas), box)

    # quality failures (on distinct humans, so they are not duplicates of kept ones)
    extra = [_human(rng, h, w, min_box) for _ in range(3)]
    img, box = extra[0]
    add("blurred.png", _png(cv2.GaussianBlur(img, (0, 0), 6.0)), box)
    img, box = extra[1]
    add(
        "overexposed.png",
        _png(np.clip(img.astype(np.int16) * 3 + 120, 0, 255).astype(np.uint8)),
        box,
    )
    img, box = extra[2]
    txt = img.copy()
    for r in range(5):  # outlined caption lines
        y = int(h * (0.14 + 0.18 * r))
        for colour, thick in (((255, 255, 255), 3), ((0, 0, 0), 1)):
            cv2.putText(
                txt,
                "SALE 50% OFF",
                (6, y),
                cv2.FONT_HERSHEY_SIMPLEX,
                h / 400,
                colour,
                thick,
                cv2.LINE_AA,
            )
    add("text.png", _png(txt), box)

    for name, data in files.items():
        (root / name).write_bytes(data)
    with tarfile.open(root / "shard.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in tar_files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))

    counts = {
        "files": len(files) + len(tar_files),
        "unreadable": 3,
        "tiny": 1,
        "extreme_aspect": 1,
        "no_person": nonhumans,
        "small_person": 1,
        "low_sharpness": 1,
        "high_clipped": 1,
        "high_text": 1,
        "exact_duplicate": 3,
        "near_duplicate": 3,
        "embedding_duplicate": n_crops,
        "kept": humans,
    }
    return Pool(root, counts, pairs, PlantedDetector(boxes))

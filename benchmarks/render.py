"""CPU cost of drawing and writing one prediction: what ``sapiens2 predict``'s writer pays per photo.

On a GPU the forward of a 0.4B model takes ~12 ms per photo, so the pictures and data files each
photo needs (``PredictionWriter.render``: the ``[input | result]`` picture as JPEG, the label PNG,
the normal ``.npy`` and PNG, ...) decide whether the writer keeps up. This measures that work on
one thread, per task, on synthetic results of a photo's size (a smooth random photo, a blob of
body-part labels, smooth unit normals, ...), and reports milliseconds per photo (median over
``--repeats`` rounds of ``--frames`` photos each).

Examples::

    python benchmarks/render.py                                   # all tasks, 1080x1440
    python benchmarks/render.py --tasks normal seg --json render.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import cpu_name, photo
from sapiens2.inference.media import Frame, MediaItem
from sapiens2.inference.results import (
    AlbedoResult,
    NormalResult,
    PointmapResult,
    PoseResult,
    SegResult,
)
from sapiens2.inference.writer import PredictionWriter

TASKS = ("seg", "normal", "albedo", "pointmap", "pose")


def person_mask(h: int, w: int) -> np.ndarray:
    """An upright ellipse covering about a third of the image: the foreground."""
    yy, xx = np.mgrid[:h, :w]
    return ((yy - h / 2) / (0.45 * h)) ** 2 + ((xx - w / 2) / (0.25 * w)) ** 2 < 1


def result_for(task: str, rng: np.random.Generator, h: int, w: int):
    mask = person_mask(h, w)
    if task == "seg":
        bands = (np.arange(h)[:, None] * 28 // h + 1).astype(np.uint8)  # 28 horizontal parts
        return SegResult(np.where(mask, bands, 0).astype(np.uint8))
    smooth = cv2.resize(rng.standard_normal((h // 64, w // 64, 3)).astype(np.float32), (w, h))
    if task == "normal":
        n = smooth / np.linalg.norm(smooth, axis=-1, keepdims=True)
        return NormalResult(n.astype(np.float32), mask)
    if task == "albedo":
        return AlbedoResult(np.clip(smooth * 0.2 + 0.5, 0, 1).astype(np.float32), mask)
    if task == "pointmap":
        yy, xx = np.mgrid[:h, :w].astype(np.float32)
        z = 3.0 + 0.1 * smooth[..., 0]
        points = np.stack([(xx - w / 2) / w * z, (yy - h / 2) / w * z, z], -1)
        return PointmapResult(points.astype(np.float32), 768 / w, mask)
    k = 308
    kpts = rng.uniform([0.3 * w, 0.1 * h], [0.7 * w, 0.9 * h], (1, k, 2)).astype(np.float32)
    return PoseResult(
        kpts,
        rng.uniform(0, 1, (1, k)).astype(np.float32),
        np.array([[0.2 * w, 0.05 * h, 0.8 * w, 0.95 * h]], np.float32),
        np.ones(1, np.float32),
        (h, w),
    )


def measure(task: str, args, out: Path) -> dict:
    rng = np.random.default_rng(0)
    h, w = args.size
    frames, results = [], []
    for i in range(args.frames):
        item = MediaItem(Path(f"photo{i}.jpg"), "image", f"photo{i}")
        frames.append(Frame(item, item.name, rgb=photo(rng, h, w)))
        results.append(result_for(task, rng, h, w))
    writer = PredictionWriter(task, out / task)
    rounds = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for frame, result in zip(frames, results, strict=True):
            writer.render(frame, result)
        rounds.append((time.perf_counter() - t0) / args.frames * 1000)
    return {"task": task, "ms_per_photo": statistics.median(rounds), "rounds_ms": rounds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--size", type=int, nargs=2, default=(1080, 1440), metavar=("H", "W"))
    p.add_argument("--frames", type=int, default=8, help="photos per round")
    p.add_argument("--repeats", type=int, default=5, help="rounds (median reported)")
    p.add_argument("--json", type=Path, help="write the rows here")
    args = p.parse_args()
    cv2.setNumThreads(1)  # one render worker = one core, as in predict's render processes
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            rows.append(measure(task, args, Path(tmp)))
            print(
                f"{task:9s} {rows[-1]['ms_per_photo']:7.1f} ms per {args.size[0]}x{args.size[1]} photo"
            )
    if args.json:
        header = {"machine": cpu_name(), "size": args.size,
                  "frames": args.frames, "repeats": args.repeats, "date": time.strftime("%F %T")}  # fmt: skip
        args.json.write_text(json.dumps({"header": header, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

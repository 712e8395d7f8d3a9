"""Images/s of ``sapiens2 predict --engine ray`` with 1 and 2 model actors against local
``predict`` on the same machine, and the per-stage costs that predict its multi-node scaling.

One folder of ``--images`` JPEG photos of ``--image-size`` and one random-weight model
(``--arch``, ``--task``) are predicted on:

- **local**: :func:`sapiens2.inference.engine.predict_items` (the engine of ``sapiens2 predict``)
  with the model loaded, torch on every core;
- **ray-1**, **ray-2**: :func:`sapiens2.inference.ray_engine.predict_ray` in a local Ray started
  once (its start is timed apart), 1 actor with every core or 2 actors with half the cores each.
  Each Ray run starts its actors and loads the model in them, so its time includes a fixed
  start-up cost (a first untimed run on ``--warm-images`` images has already started Ray's
  worker processes); the steady rate counts from the first results to the last.

Per-stage costs (one process, one image at a time, medians): read + decode, resize for the
network, forward (per image, in batches of ``--batch-size``), drawing and writing the outputs.
Example::

    python benchmarks/ray_predict.py                      # CPU: tiny seg, 160 images 512x384
    python benchmarks/ray_predict.py --json benchmarks/results/cpu_ray_predict_tiny_seg.json
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import sapiens2
from sapiens2.inference import Predictor
from sapiens2.inference.engine import predict_items
from sapiens2.inference.media import FrameReader, expand_media
from sapiens2.inference.ray_engine import (
    RayOptions,
    decode_input,
    list_inputs,
    predict_ray,
)
from sapiens2.inference.writer import PredictionWriter

log = logging.getLogger("benchmarks.ray_predict")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def make_images(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> None:
    """Smooth random photos (JPEG decodes at a realistic cost, unlike white noise)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    h, w = size
    for i in range(n):
        small = rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"img{i:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])


def load_predictor(model_path: str, task: str, batch_size: int, threads: int) -> Predictor:
    """What each Ray actor builds (module level: picklable)."""
    torch.set_num_threads(threads)
    return Predictor(task, sapiens2.load_model(model_path), batch_size=batch_size)


def stage_costs(predictor: Predictor, writer: PredictionWriter, folder: Path, batch: int) -> dict:
    refs = list_inputs([folder])[: 4 * batch]
    t = {"read_decode": [], "prepare": [], "forward": [], "write": []}
    rgbs, prepared = [], []
    for ref in refs:
        t0 = time.perf_counter()
        rgb = decode_input(ref)
        t1 = time.perf_counter()
        p = predictor.prepare(rgb)
        t2 = time.perf_counter()
        t["read_decode"].append(t1 - t0)
        t["prepare"].append(t2 - t1)
        rgbs.append(rgb)
        prepared.append(p)
    predictor.predict(prepared[:batch])  # warm-up
    results = []
    for s in range(0, len(prepared), batch):
        t0 = time.perf_counter()
        results.extend(predictor.predict(prepared[s : s + batch]))
        t["forward"].append((time.perf_counter() - t0) / batch)
    frames = list(FrameReader(expand_media([folder])[: len(results)]))
    for frame, result in zip(frames, results, strict=True):
        t0 = time.perf_counter()
        writer.render(frame, result)
        t["write"].append(time.perf_counter() - t0)
    return {k: 1000 * statistics.median(v) for k, v in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="sapiens2_tiny")
    ap.add_argument("--task", default="seg")
    ap.add_argument("--images", type=int, default=160)
    ap.add_argument("--warm-images", type=int, default=8)
    ap.add_argument("--image-size", type=int, nargs=2, default=(512, 384), metavar=("H", "W"))
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cores = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="sapiens2-raybench-"))
    try:
        make_images(tmp / "imgs", args.images, tuple(args.image_size))
        make_images(tmp / "warm", args.warm_images, tuple(args.image_size), seed=1)
        model_path = str(tmp / "model.safetensors")
        torch.manual_seed(0)
        sapiens2.save_model(sapiens2.create_model(args.arch, task=args.task), model_path)
        predictor = load_predictor(model_path, args.task, args.batch_size, cores)
        stages = stage_costs(
            predictor, PredictionWriter(args.task, tmp / "stages"), tmp / "imgs", args.batch_size
        )
        log.info("per image, ms: %s", {k: round(v, 1) for k, v in stages.items()})

        items = expand_media([tmp / "imgs"])
        t0 = time.perf_counter()
        predict_items(predictor, items, PredictionWriter(args.task, tmp / "local"),
                      batch_size=args.batch_size, io_workers=1, progress=False)  # fmt: skip
        local_s = time.perf_counter() - t0
        rows = {"local": {"seconds": local_s, "images_per_s": args.images / local_s}}
        log.info("local: %.2f img/s", args.images / local_s)

        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=cores + 1, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - t0
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        # a first run starts Ray's worker processes (imports): not timed
        warm = functools.partial(PredictionWriter, args.task, tmp / "warm-out")
        make = functools.partial(load_predictor, model_path, args.task, args.batch_size, 1)
        predict_ray(list_inputs([tmp / "warm"]), make, warm, options=RayOptions(num_workers=2,
                    cpus_per_worker=cores / 2), progress=False)  # fmt: skip
        for workers in (1, 2):
            threads = max(1, cores // workers)
            options = RayOptions(
                num_workers=workers, cpus_per_worker=cores / workers, batch_size=args.batch_size
            )
            make = functools.partial(
                load_predictor, model_path, args.task, args.batch_size, threads
            )
            out = tmp / f"ray{workers}"
            writer = functools.partial(PredictionWriter, args.task, out)
            t0 = time.perf_counter()
            stats = predict_ray(list_inputs([tmp / "imgs"]), make, writer, options=options,
                                progress=False)  # fmt: skip
            seconds = time.perf_counter() - t0
            assert stats.done == args.images, stats
            rows[f"ray-{workers}"] = {
                "seconds": seconds,
                "images_per_s": args.images / seconds,
                "steady_images_per_s": stats.steady_images_per_second,
                "startup_s": stats.startup_seconds,
            }
            log.info("ray-%d: %.2f img/s end to end, %.2f img/s after the first results "
                     "(%.1f s to them)", workers, args.images / seconds,
                     stats.steady_images_per_second, stats.startup_seconds)  # fmt: skip
        ray.shutdown()
        local_rate = rows["local"]["images_per_s"]
        for row in rows.values():
            row["x_local"] = row["images_per_s"] / local_rate
            if "steady_images_per_s" in row:
                row["steady_x_local"] = row["steady_images_per_s"] / local_rate
        result = {
            "cpu": cpu_name(),
            "cores": cores,
            "arch": args.arch,
            "task": args.task,
            "images": args.images,
            "image_size": list(args.image_size),
            "input_size": list(predictor.input_size),
            "batch_size": args.batch_size,
            "ray_start_s": ray_start,
            "stage_ms_per_image": stages,
            "runs": rows,
        }
        print(json.dumps(result, indent=1))  # the result table on stdout
        if args.json:
            args.json.write_text(json.dumps(result, indent=1) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

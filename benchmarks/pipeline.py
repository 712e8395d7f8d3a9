"""End-to-end prediction speed: where ``sapiens2 predict`` spends its time, and pose people/s.

Two measurements, each interleaved in one process over ``--repeats`` rounds (medians reported):

1. **Overhead of the pipeline** (``--task``, default seg): a folder of ``--images`` JPEG photos of
   ``--image-size`` goes through ``sapiens2.inference.engine.predict_items`` (background decoding,
   pre-processing, forward, post-processing, background writing of the pictures and data files),
   against the bare forward passes of the same model on the already pre-processed batches. The
   overhead is ``1 - forward / end-to-end``: what decoding, pre/post-processing and writing add.
2. **Pose with several people** (``--people 1 4 16``): one image with N person boxes, all crops
   in one batched forward (flip test on, as the official demo) against one forward per person.

Random weights (``create_model``); timings do not depend on them. Examples::

    python benchmarks/pipeline.py                                   # CPU: 0.1B, seg + pose
    python benchmarks/pipeline.py --device cuda --arch sapiens2_0.4b --res 1024x768 --images 64
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import sapiens2
from sapiens2.inference import Predictor
from sapiens2.inference.engine import default_io_workers, predict_items
from sapiens2.inference.media import expand_media
from sapiens2.inference.preprocess import letterbox, stretch_resize, to_tensor
from sapiens2.inference.writer import PredictionWriter

log = logging.getLogger("benchmarks.pipeline")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random colour image (compresses like a photo, unlike white noise)."""
    small = rng.integers(0, 255, (max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(-8, 9, img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_photos(folder: Path, n: int, h: int, w: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(
            str(folder / f"img_{i:04d}.jpg"), photo(rng, h, w), [cv2.IMWRITE_JPEG_QUALITY, 90]
        )


class NullWriter:
    """A writer that writes nothing (diagnostic: the pipeline without drawing and encoding)."""

    def render(self, frame, result):
        return None

    def commit(self, frame, result, rendered):
        pass

    def close(self):
        pass


def overhead(args, device: torch.device, dtype: torch.dtype, root: Path) -> dict:
    """Round-robin: bare forwards on pre-processed batches, then the full pipeline."""
    torch.manual_seed(0)
    model = sapiens2.create_model(args.arch, task=args.task, device=device, dtype=dtype).eval()
    predictor = Predictor(args.task, model, input_size=args.res, batch_size=args.batch_size)
    folder = args.photos or root / "photos"
    if len(list(folder.glob("img_*.jpg"))) != args.images:
        write_photos(folder, args.images, *args.image_size)
    items = expand_media([str(folder)])
    rgbs = [cv2.imread(str(p.path))[..., ::-1].copy() for p in items]
    prep = stretch_resize if args.task == "seg" else (lambda r, s: letterbox(r, s)[0])
    batches = [
        np.stack([prep(r, args.res) for r in rgbs[i : i + args.batch_size]])
        for i in range(0, len(rgbs), args.batch_size)
    ]

    def bare() -> float:
        sync(device)
        t = time.perf_counter()
        with torch.inference_mode():
            for b in batches:
                model(to_tensor(b, device=device, dtype=dtype))
        sync(device)
        return time.perf_counter() - t

    def full(i: int):
        out = root / f"out_{i}"
        writer = (
            NullWriter()
            if args.null_writer
            else PredictionWriter(args.task, out, pictures=args.pictures)
        )
        sync(device)
        t = time.perf_counter()
        stats = predict_items(predictor, items, writer, batch_size=args.batch_size, progress=False,
                              io_workers=args.io_workers, in_flight=args.in_flight,
                              render_processes=False if args.null_writer else args.render_processes,
                              render_workers=args.render_workers)  # fmt: skip
        sync(device)
        return time.perf_counter() - t, stats

    for _ in range(args.warmup):
        bare()
        full(-1)
    rows = []
    for r in range(args.repeats):
        fwd = bare()
        total, stats = full(r)
        rows.append(
            {
                "forward_s": fwd,
                "end_to_end_s": total,
                "overhead": 1 - fwd / total,
                "predict_s": stats.predict_seconds,
                "read_wait_s": stats.read_wait_seconds,
                "write_wait_s": stats.write_wait_seconds,
                "write_s": stats.write_seconds,
            }
        )
        log.info("round %d: %s", r, {k: round(v, 3) for k, v in rows[-1].items()})
    med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    return {"rounds": rows, "median": med}


def pose_people(args, device: torch.device, dtype: torch.dtype) -> dict:
    torch.manual_seed(0)
    model = sapiens2.create_model(args.pose_arch or args.arch, task="pose", device=device,
                                  dtype=dtype).eval()  # fmt: skip
    predictor = Predictor("pose", model, input_size=args.pose_res or args.res)
    h, w = args.image_size
    rgb = photo(np.random.default_rng(1), h, w)
    rng = np.random.default_rng(2)
    out = {}
    for n in args.people:
        x1 = rng.uniform(0, w * 0.8, n)
        y1 = rng.uniform(0, h * 0.5, n)
        boxes = np.stack([x1, y1, x1 + w * 0.15, y1 + h * 0.45], axis=1).astype(np.float32)
        predictor.predict(rgb, boxes=boxes[:1])  # warm-up
        batched, single = [], []
        for _ in range(args.repeats):
            sync(device)
            t = time.perf_counter()
            res = predictor.predict(rgb, boxes=boxes)
            sync(device)
            batched.append(time.perf_counter() - t)
            assert res.num_people == n
            t = time.perf_counter()
            for b in boxes:
                predictor.predict(rgb, boxes=b[None])
            sync(device)
            single.append(time.perf_counter() - t)
        tb, ts = statistics.median(batched), statistics.median(single)
        out[n] = {"batched_s": tb, "per_person_s": ts, "people_per_s": n / tb,
                  "people_per_s_one_at_a_time": n / ts, "speedup": ts / tb}  # fmt: skip
        log.info("pose %d people: %s", n, {k: round(v, 3) for k, v in out[n].items()})
    return out


def size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="seg", choices=("seg", "normal", "albedo", "pose", "pointmap"))
    p.add_argument("--arch", default="sapiens2_0.1b")
    p.add_argument("--res", type=size, default=(512, 384), help="network input HxW")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--image-size", type=size, default=(1080, 1440), help="photo HxW")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=tuple(DTYPES))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--people", type=int, nargs="*", default=[1, 4, 16])
    p.add_argument("--pose-arch", default=None, help="default: --arch")
    p.add_argument("--pose-res", type=size, default=None, help="default: --res")
    p.add_argument(
        "--io-workers",
        type=int,
        default=default_io_workers(),
        help="decode / write threads of the pipeline (default: as sapiens2 predict)",
    )
    p.add_argument("--in-flight", type=int, default=None,
                   help="batches predicted at once (default: as sapiens2 predict)")  # fmt: skip
    p.add_argument("--cv2-threads", type=int, default=None,
                   help="cv2.setNumThreads for the run (default: OpenCV's own)")  # fmt: skip
    p.add_argument("--render-processes", action=argparse.BooleanOptionalAction, default=None,
                   help="draw and write in processes (default: as sapiens2 predict)")  # fmt: skip
    p.add_argument("--render-workers", type=int, default=None,
                   help="render threads or processes (default: --io-workers)")  # fmt: skip
    p.add_argument("--no-pictures", dest="pictures", action="store_false",
                   help="write the data files only (sapiens2 predict --no-pictures)")  # fmt: skip
    p.add_argument("--null-writer", action="store_true",
                   help="diagnostic: draw and write nothing")  # fmt: skip
    p.add_argument("--switch-interval", type=float, default=None,
                   help="sys.setswitchinterval in seconds (diagnostic; Python's default 0.005)")  # fmt: skip
    p.add_argument("--photos", type=Path, default=None,
                   help="folder for the test photos, kept for the next run (default: temporary)")  # fmt: skip
    p.add_argument("--json", type=Path)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(message)s")  # fmt: skip
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    if args.cv2_threads is not None:
        cv2.setNumThreads(args.cv2_threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": str(device), "device_name": name, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                     for k, v in vars(args).items()},
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        if args.images:
            report["overhead"] = overhead(args, device, dtype, Path(tmp))
    if args.people:
        report["pose_people"] = pose_people(args, device, dtype)

    print(f"{name}, torch {torch.__version__}, {report['threads']} threads, {args.dtype}")
    if "overhead" in report:
        m = report["overhead"]["median"]
        print(f"\n{args.task} {args.arch} at {args.res[0]}x{args.res[1]}, {args.images} photos "
              f"{args.image_size[0]}x{args.image_size[1]}, batch {args.batch_size} "
              f"(median of {args.repeats} rounds)\n")  # fmt: skip
        print("| forward only s | end to end s | overhead | in predict s | waiting for frames s "
              "| waiting for writer s | writing (background) s |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        print(f"| {m['forward_s']:.2f} | {m['end_to_end_s']:.2f} | {100 * m['overhead']:.1f}% "
              f"| {m['predict_s']:.2f} | {m['read_wait_s']:.2f} | {m['write_wait_s']:.2f} "
              f"| {m['write_s']:.2f} |")  # fmt: skip
    if args.people:
        pr = args.pose_res or args.res
        print(f"\npose {args.pose_arch or args.arch} at {pr[0]}x{pr[1]}, flip test on\n")
        print("| people | batched s | people/s | one at a time s | people/s | speed-up |")
        print("|---|---|---|---|---|---|")
        for n, row in report["pose_people"].items():
            print(f"| {n} | {row['batched_s']:.2f} | {row['people_per_s']:.2f} "
                  f"| {row['per_person_s']:.2f} | {row['people_per_s_one_at_a_time']:.2f} "
                  f"| {row['speedup']:.2f}x |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

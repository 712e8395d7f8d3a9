"""Speed of the built-in RTMDet person detector (``sapiens2.detect``) at 640x640.

Times the whole call (letterbox + normalize + network + decoding) on a 640x640 RGB image, for the
tiny golden-fixture model (if the repo's fixture is present) and an RTMDet-m-sized model with random
weights (same architecture and cost as the official ``rtmdet_m.pth``).

    python benchmarks/bench_detector.py [--device cuda] [--repeats 20] [--batch 8]

Prints one line per model: median ms/image for single-image calls, and for ``detect_batch`` calls of
``--batch`` images.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from sapiens2.detect import RTMDET_M, RTMDET_TINY, RTMDet, RTMDetDetector, load_detector

FIXTURE = (
    Path(__file__).resolve().parents[1]
    / "tests"
    / "fixtures"
    / "rtmdet"
    / "rtmdet_tiny_person_random.pth"
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn, n: int, device: torch.device, per: int = 1) -> float:
    times = []
    for _ in range(n):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000 / per)
    return statistics.median(times)


def bench(name: str, detector: RTMDetDetector, repeats: int, batch: int) -> None:
    device = detector.device
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(640, 640, 3), dtype=np.uint8)
    frames = [image] * batch
    for _ in range(3):  # warm-up (oneDNN / cuDNN kernel selection)
        detector(image)
        detector.detect_batch(frames, batch_size=batch)
    single = _median_ms(lambda: detector(image), repeats, device)
    batched = _median_ms(
        lambda: detector.detect_batch(frames, batch_size=batch), max(3, repeats // 4), device, batch
    )
    params = sum(p.numel() for p in detector.model.parameters())
    print(
        f"{name:8s} {params / 1e6:6.2f} M params  device={device}  threads={torch.get_num_threads()}"
        f"  single: {single:8.1f} ms/image  batch {batch}: {batched:8.1f} ms/image"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    if FIXTURE.is_file():
        tiny = load_detector(FIXTURE, device=args.device)
    else:
        tiny = RTMDetDetector(RTMDet(RTMDET_TINY), device=args.device)
    bench("tiny", tiny, args.repeats, args.batch)
    bench("m", RTMDetDetector(RTMDet(RTMDET_M), device=args.device), args.repeats, args.batch)


if __name__ == "__main__":
    main()

"""Speed of the built-in RTMDet person detector (``sapiens2.detect``) at 640x640.

Times the whole call (letterbox + normalize + network + decoding) on a 640x640 RGB image, for the
tiny golden-fixture model (if the repo's fixture is present) and an RTMDet-m-sized model with random
weights (same architecture and cost as the official ``rtmdet_m.pth``).

    python benchmarks/bench_detector.py [--device cuda] [--repeats 20] [--batch 8]

Prints one line per model: ms/image for single-image calls and for ``detect_batch`` calls of
``--batch`` images (median and minimum wall time, and the process's CPU time, which is less
sensitive to other load on a shared machine).
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


def _time_ms(fn, n: int, device: torch.device, per: int = 1) -> tuple[float, float, float]:
    """(median wall ms, min wall ms, median process CPU ms) per image over ``n`` calls."""
    wall, cpu = [], []
    for _ in range(n):
        _sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        wall.append((time.perf_counter() - start) * 1000 / per)
        cpu.append((time.process_time() - start_cpu) * 1000 / per)
    return statistics.median(wall), min(wall), statistics.median(cpu)


def bench(name: str, detector: RTMDetDetector, repeats: int, batch: int) -> None:
    device = detector.device
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(640, 640, 3), dtype=np.uint8)
    frames = [image] * batch
    for _ in range(2):  # warm-up (oneDNN / cuDNN kernel selection)
        detector(image)
        detector.detect_batch(frames, batch_size=batch)
    single = _time_ms(lambda: detector(image), repeats, device)
    batched = _time_ms(
        lambda: detector.detect_batch(frames, batch_size=batch), max(3, repeats // 3), device, batch
    )
    params = sum(p.numel() for p in detector.model.parameters())
    print(
        f"{name}: {params / 1e6:.2f} M params, device {device}, {torch.get_num_threads()} threads; "
        f"ms/image (median wall / min wall / median CPU time): "
        f"single {single[0]:.1f} / {single[1]:.1f} / {single[2]:.1f}; "
        f"batch {batch} {batched[0]:.1f} / {batched[1]:.1f} / {batched[2]:.1f}",
        flush=True,
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

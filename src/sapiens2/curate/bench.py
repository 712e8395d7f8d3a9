"""Throughput of the curation stages on this machine: ``python -m sapiens2.curate.bench --out DIR``.

Two parts. (1) Each stage's work in-process on one thread (images/s; what one worker does when Ray
overhead is amortised). (2) The whole pipeline on Ray in local mode with 1 and then 2 workers on
the same generated pool (seconds per materialised stage). Results go to ``DIR/bench.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def _rate(fn, items, repeat: int = 1) -> dict:
    """Items per second of wall time and per second of this process's CPU time."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        for x in items:
            fn(x)
    n = len(items) * repeat
    return {"wall": n / (time.perf_counter() - t0), "cpu": n / (time.process_time() - c0)}


def _timed(fn) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


def stage_rates(pool_root: Path, size: tuple[int, int], n_vectors: int, dim: int) -> dict:
    """Images/s of every per-image stage on one thread, and seconds of the global steps."""
    import torch

    from sapiens2.curate.balance import balance
    from sapiens2.curate.config import BalanceConfig, DedupConfig, QualityConfig, ReadConfig
    from sapiens2.curate.dedup import deduplicate
    from sapiens2.curate.embed import BackboneEmbedder
    from sapiens2.curate.person import SegmentationDetector, person_verdict
    from sapiens2.curate.quality import builtin_checks, score_image
    from sapiens2.curate.sources import iter_unit, list_units
    from sapiens2.curate.validate import validate_item
    from sapiens2.data.shards import ShardWriter

    torch.set_num_threads(1)
    items = [i for u in list_units(str(pool_root)) for i in iter_unit(u, 1 << 26)]
    rc = ReadConfig(min_side=16)
    rgbs = [rgb for rgb in (validate_item(i, rc)[1] for i in items) if rgb is not None]
    rgbs = [r for r in rgbs if r.shape[:2] == size]
    det = SegmentationDetector("demo:seg", input_size=size)
    emb = BackboneEmbedder("demo:seg", "mean", size)
    det(rgbs[0]), emb(rgbs[0])  # load the models
    checks = builtin_checks(QualityConfig())
    out = {
        "images": len(rgbs),
        "image_size": list(size),
        "read_validate_hash_per_s": _rate(lambda i: validate_item(i, rc), items, 3),
        "person_seg_demo_per_s": _rate(lambda r: person_verdict(det, r, 64), rgbs),
        "quality_per_s": _rate(lambda r: score_image(r, checks), rgbs, 3),
        "embed_demo_per_s": _rate(emb, rgbs),
    }
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(n_vectors, dim)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    sha = [str(i) for i in range(n_vectors)]
    ph = rng.integers(-(2**63), 2**63 - 1, n_vectors, dtype=np.int64)
    out["dedup_flat"] = _timed(lambda: deduplicate(sha, ph, vec, DedupConfig(min_similarity=0.95)))
    ivf = DedupConfig(min_similarity=0.95, index="IVF64,Flat", nprobe=8)
    out["dedup_ivf64"] = _timed(lambda: deduplicate(sha, ph, vec, ivf))
    km = BalanceConfig(clusters=100, iterations=20, restarts=1)
    out["kmeans100"] = _timed(lambda: balance(sha, vec, km, seed=0))
    out["global_vectors"], out["global_dim"] = n_vectors, dim
    datas = [i.data for i in items if not i.error][:64]
    tmp = pool_root.parent / "bench_shards"

    def write() -> None:
        with ShardWriter(tmp, "b", 1000) as w:
            for k, d in enumerate(datas * 4):
                w.write(f"{k:09d}", {"png": d, "json": b"{}"})

    t = _timed(write)
    out["write_per_s"] = {"wall": len(datas) * 4 / t["wall_s"], "cpu": len(datas) * 4 / t["cpu_s"]}
    out["jpeg_1024x768"] = _large_image_rates()
    return out


def _large_image_rates() -> dict:
    """Decode / hash / quality of a 1024x768 JPEG (a typical pool image), one thread."""
    import cv2

    from sapiens2.curate.config import QualityConfig
    from sapiens2.curate.phash import phash64
    from sapiens2.curate.quality import builtin_checks, score_image

    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (1024, 768, 3), dtype=np.uint8), (0, 0), 2)
    data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
    rgb = cv2.imdecode(data, cv2.IMREAD_COLOR)
    checks = builtin_checks(QualityConfig())
    return {
        "kbytes": len(data) / 1024,
        "decode_per_s": _rate(lambda d: cv2.imdecode(d, cv2.IMREAD_COLOR), [data] * 20),
        "phash_per_s": _rate(phash64, [rgb] * 20),
        "quality_per_s": _rate(lambda r: score_image(r, checks), [rgb] * 20),
    }


def pipeline_runs(
    pool_root: Path, out_root: Path, size: tuple[int, int], workers: list[int]
) -> dict:
    """Seconds per stage of full Ray runs (built-in seg detector and backbone, demo models)."""
    import ray

    from sapiens2.curate.config import config_from_dict
    from sapiens2.curate.pipeline import curate

    runs = {}
    ray.init(num_cpus=max(workers) + 1, include_dashboard=False, log_to_driver=False)
    try:
        for w in workers:
            cfg = config_from_dict(
                {
                    "read": {"min_side": 96},
                    "person": {
                        "min_box_short_side": 64,
                        "seg_model": "demo:seg",
                        "input_size": list(size),
                    },
                    "embed": {"model": "demo:seg", "pool": "mean", "input_size": list(size)},
                    "balance": {"clusters": 8},
                    "workers": w,
                    "batch_size": 8,
                    "rows_per_part": 16,
                }
            )
            t0, load0 = time.perf_counter(), os.getloadavg()[0]
            r = curate(str(pool_root), out_root / f"run_w{w}", cfg)
            runs[f"workers_{w}"] = {
                "total_s": time.perf_counter() - t0,
                "load_before": load0,
                "stage_s": r.timings,
                "images": r.report["images"],
                "analysed": r.report["stages"]["person"]["in"],
                "written": r.report["output"]["samples"],
            }
    finally:
        ray.shutdown()
    return runs


def main(argv: list[str] | None = None) -> int:
    from sapiens2.curate.pool import make_pool

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--humans", type=int, default=120)
    p.add_argument("--size", type=int, nargs=2, default=(256, 192))
    p.add_argument("--vectors", type=int, default=20000)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--skip-stages", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    size = tuple(args.size)
    pool = make_pool(args.out / "pool", seed=1, size=size, humans=args.humans, min_box=64)
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load": os.getloadavg(),
        },
        "pool_files": pool.counts["files"],
    }
    if not args.skip_stages:
        result["stages_one_thread"] = stage_rates(args.out / "pool", size, args.vectors, args.dim)
    result["ray"] = pipeline_runs(args.out / "pool", args.out, size, args.workers)
    result["machine"]["load_after"] = os.getloadavg()
    (args.out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``sapiens2 curate``: filter, deduplicate and balance a raw image pool into pretraining shards."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from sapiens2.cli.common import add_hidden_alias

NAME = "curate"
HELP = "curate a raw image pool into balanced human-centric pretraining shards (Ray Data)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        metavar="POOL",
        help="the raw image pool: image folder, .tar shard, glob or fsspec URL (s3://...), or a "
        ".txt list of image/tar URIs",
    )
    add_hidden_alias(parser, "--input", "--data")  # the earlier name still works
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (shards, manifest, report)"
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="a .json or .toml CurateConfig file"
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to use ('auto' for the running one); default: a local Ray with `workers` CPUs",
    )
    parser.add_argument("--workers", type=int, default=None, help="override config `workers`")
    parser.add_argument("--seed", type=int, default=None, help="override config `seed`")
    parser.epilog = (
        "Writes <out>/<split>-%06d.tar (+ index), manifest.jsonl, drops.jsonl, report.json, "
        "report.md and grids/cluster_*.png; stage outputs under <out>/_work make reruns resume."
    )


def run(args: argparse.Namespace) -> int:
    from sapiens2.curate.config import load_config

    cfg = load_config(args.config)
    overrides = {k: v for k, v in (("workers", args.workers), ("seed", args.seed)) if v is not None}
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    try:
        import faiss  # noqa: F401
        import ray  # noqa: F401
    except ImportError as e:
        raise ValueError(
            f"sapiens2 curate needs the 'curate' extra (pip install 'sapiens2[curate]'): {e}"
        ) from e
    from sapiens2.curate.pipeline import curate

    result = curate(args.data, args.out, cfg, ray_address=args.ray_address)
    summary = {
        "out": str(result.out),
        "samples": result.report["output"]["samples"],
        "shards": result.report["output"]["shards"],
        "ran": result.ran,
        "skipped": result.skipped,
        "stages": {s: [c["in"], c["out"]] for s, c in result.report["stages"].items()},
    }
    print(json.dumps(summary, indent=2))
    return 0

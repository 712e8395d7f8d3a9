"""``sapiens2 synth``: render a procedural synthetic-human dataset with labels for all five tasks."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

NAME = "synth"
HELP = "render synthetic humans with pose/seg/normal/pointmap/albedo labels (train + val splits)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="dataset root to create")
    parser.add_argument("--num", type=int, required=True, help="number of images (train + val)")
    parser.add_argument(
        "--size", type=int, nargs=2, default=(256, 192), metavar=("H", "W"), help="image size"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="master seed: the same seed writes the same bytes"
    )
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of images in val/")
    parser.add_argument("--shards", action="store_true", help="write <split>-%%06d.tar shards")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per tar shard")
    parser.add_argument("--people-max", type=int, default=3, help="at most K people per image")
    parser.add_argument(
        "--simple",
        action="store_true",
        help="simple scenes: people facing the camera in everyday poses, plain colours and "
        "backgrounds (for quick checks of a training pipeline)",
    )
    parser.add_argument(
        "--preview",
        type=Path,
        default=None,
        help="also save a PNG grid of the first --preview-rows samples with all their labels",
    )
    parser.add_argument("--preview-rows", type=int, default=4, help="rows of the preview grid")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="render processes; the output does not depend on them",
    )


def run(args: argparse.Namespace) -> int:
    from sapiens2.data.synth.render import SynthConfig
    from sapiens2.data.synth.writer import WriteConfig, write_dataset

    h, w = args.size
    cfg = WriteConfig(
        out=args.out,
        num=args.num,
        seed=args.seed,
        val_fraction=args.val_fraction,
        shards=args.shards,
        shard_size=args.shard_size,
        workers=args.workers,
        render=SynthConfig(height=h, width=w, people_max=args.people_max, simple=args.simple),
    )
    if args.preview is not None and not 1 <= args.preview_rows <= args.num:
        raise ValueError(f"--preview-rows must be in [1, --num], got {args.preview_rows}")
    summary = write_dataset(cfg)
    if args.preview is not None:
        import cv2

        from sapiens2.data.synth.preview import preview_grid
        from sapiens2.data.synth.render import render_sample
        from sapiens2.data.synth.writer import sample_rng

        samples = [
            render_sample(sample_rng(cfg.seed, i), cfg.render) for i in range(args.preview_rows)
        ]
        args.preview.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(
            str(args.preview), cv2.cvtColor(preview_grid(samples), cv2.COLOR_RGB2BGR)
        ):
            raise ValueError(f"could not write the preview image {args.preview}")
    print(json.dumps(summary))
    return 0

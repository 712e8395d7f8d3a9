"""``sapiens2 demo``: all six tasks on a synthetic scene with the bundled models, offline."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sapiens2.cli.common import add_device_argument

NAME = "demo"
HELP = "run the six bundled demo models on a synthetic scene (no network) and write a contact sheet"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("sapiens2_demo"), help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="which synthetic scene")
    parser.add_argument(
        "--image",
        type=Path,
        help="use this image instead of a synthetic scene (the demo models know only synthetic "
        "figures: use the official checkpoints for photos)",
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="a folder of <task>.safetensors demo models to use instead of the bundled ones "
        "(what tools/train_demo_models.py writes)",
    )
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    from sapiens2.demo import PHOTO_NOTICE, run_demo
    from sapiens2.device import resolve_device

    device = resolve_device(args.device)
    image = None
    if args.image is not None:
        from sapiens2.inference.media import read_image

        image = read_image(args.image)
        print(f"note: {PHOTO_NOTICE}")
    result = run_demo(args.out, image=image, seed=args.seed, device=device, model_dir=args.models)
    s = result.summary
    if s["people_in_scene"] is not None:
        print(f"people found: {s['people_found']} (in the scene: {s['people_in_scene']})")
    print(f"contact sheet: {result.sheet}\nHTML page:     {result.page}")
    if image is None:
        print(
            "note: the demo models were trained on synthetic figures only; for real images use "
            "the official checkpoints (see README)"
        )
    return 0

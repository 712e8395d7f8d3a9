"""``sapiens2 demo``: all five tasks on a synthetic scene with the bundled models, offline."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sapiens2.cli.common import add_device_argument

NAME = "demo"
HELP = (
    "run the five bundled demo models on a synthetic scene (no network) and write a contact sheet"
)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("sapiens2_demo"), help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="which synthetic scene")
    parser.add_argument("--image", type=Path, help="use this image instead of a synthetic scene")
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    from sapiens2.demo import run_demo
    from sapiens2.device import resolve_device

    device = resolve_device(args.device)
    image = None
    if args.image is not None:
        from sapiens2.inference.media import read_image

        image = read_image(args.image)
    result = run_demo(args.out, image=image, seed=args.seed, device=device)
    print(f"contact sheet: {result.sheet}\nHTML page:     {result.page}")
    print(
        "note: the demo models were trained on synthetic figures only; for real images use the "
        "official checkpoints (see README)"
    )
    return 0

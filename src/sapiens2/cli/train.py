"""``sapiens2 train``: fine-tune a task model with a recipe (single process or under torchrun)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from sapiens2.cli.common import add_device_argument

NAME = "train"
HELP = "fine-tune a task model: sapiens2 train --recipe seg-1b --data DIR --out DIR"

logger = logging.getLogger(__name__)


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; a missing ``=`` is an error."""
    from sapiens2.overrides import split_item

    return dict(split_item(item) for item in items or [])


def add_run_arguments(parser: argparse.ArgumentParser, init_help: str) -> None:
    """The flags that ``train`` and ``pretrain`` share (after their ``--recipe`` and ``--data``)."""
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--init", help=init_help)
    parser.add_argument(
        "--resume",
        default="auto",
        metavar="auto|none|DIR",
        help="auto (default): continue from the newest complete checkpoint in OUT, if any; "
        "none: start fresh (OUT must hold no checkpoints); DIR: that checkpoint folder",
    )
    parser.add_argument(
        "--no-resume", dest="resume", action="store_const", const="none", help=argparse.SUPPRESS
    )
    add_device_argument(parser)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field (repeatable)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, help="<task>-<size>, see `sapiens2 recipes`")
    parser.add_argument(
        "--data",
        required=True,
        help="dataset root (train/ and val/) or shards (a folder, .tar files, or an fsspec URL "
        "such as s3://bucket/shards)",
    )
    add_run_arguments(
        parser, "pretrain or task checkpoint (file or hub id) to start from (unless resuming)"
    )


def run(args: argparse.Namespace) -> int:
    from sapiens2.device import resolve_device
    from sapiens2.train.recipes import get_recipe
    from sapiens2.train.trainer import train

    device = resolve_device(args.device)  # an unavailable device is one line, up front
    recipe = get_recipe(args.recipe).with_overrides(parse_sets(args.overrides))
    result = train(recipe, args.data, args.out, init=args.init, resume=args.resume, device=device)
    if result.val:
        flat = {k: v for k, v in result.val.items() if isinstance(v, int | float)}
        print(json.dumps({"steps": result.steps, "val": flat}, indent=1))
    logger.info("model written to %s", result.out / "model.safetensors")
    return 0

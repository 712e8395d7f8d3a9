"""``sapiens2 pretrain``: masked reconstruction + self-distillation pretraining from image shards.

Single process with ``sapiens2 pretrain ...``; several with
``torchrun --nproc_per_node N -m sapiens2.cli.main pretrain ... --set strategy=fsdp2``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

NAME = "pretrain"
HELP = "pretrain a Sapiens2 backbone (MAE + self-distillation) on image-only shards"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sapiens2.cli.train import add_run_arguments

    parser.add_argument(
        "--recipe",
        required=True,
        help="recipe named by arch: tiny, tiny-4k, 0.1b, 0.4b, 0.8b, 1b, 5b, 1b-4k",
    )
    parser.add_argument(
        "--data",
        required=True,
        help="image-only shards (a folder of <split>-*.tar or a .tar) or an image folder",
    )
    add_run_arguments(
        parser, "backbone checkpoint (file or hub id) to start student and teacher from"
    )
    parser.add_argument("--show", action="store_true", help="print the recipe and exit")


def run(args: argparse.Namespace) -> int:
    import json

    from sapiens2.device import resolve_device
    from sapiens2.pretrain.recipes import get_recipe

    recipe = get_recipe(args.recipe, args.overrides)
    if args.show:
        print(json.dumps(recipe.to_dict(), indent=1))
        return 0
    # --device wins over --set device=...; an unavailable one is one line, up front
    device = args.device if args.device != "auto" else recipe.device
    resolve_device(device)
    from sapiens2.pretrain.trainer import Pretrainer
    from sapiens2.train.distributed import shutdown_distributed

    if not Path(args.data).exists():
        raise FileNotFoundError(f"--data {args.data} does not exist")
    trainer = Pretrainer(
        recipe, args.data, args.out, init=args.init, device=None if device == "auto" else device
    )
    trainer.train(resume=args.resume)
    paths = trainer.export()
    if paths is not None:
        logger.info("wrote %s and %s", *paths)
    shutdown_distributed()
    return 0

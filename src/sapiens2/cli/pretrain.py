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
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. max_steps=100, optim.lr=3e-4, loss.mae=0 (repeatable)",
    )
    parser.add_argument(
        "--no-resume",
        action="store_true",
        help="start from scratch even if OUT holds checkpoints",
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
    resolve_device(recipe.device)  # --set device=...: an unavailable one is one line, up front
    from sapiens2.pretrain.trainer import Pretrainer
    from sapiens2.train.distributed import shutdown_distributed

    if not Path(args.data).exists():
        raise FileNotFoundError(f"--data {args.data} does not exist")
    trainer = Pretrainer(recipe, args.data, args.out)
    if trainer.info.is_main:
        (args.out / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=1))
    trainer.train(resume=not args.no_resume)
    paths = trainer.export()
    if paths is not None:
        logger.info("wrote %s and %s", *paths)
    shutdown_distributed()
    return 0

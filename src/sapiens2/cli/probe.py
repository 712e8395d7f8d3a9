"""``sapiens2 probe``: frozen-backbone dense probing of a checkpoint (seg mIoU / pose keypoint AP)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from sapiens2.cli.common import add_device_argument, add_hidden_alias

NAME = "probe"
HELP = "train a light head on a frozen backbone (seg or pose) and report its metric"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=("seg", "pose"), help="probe task")
    parser.add_argument(
        "--data", required=True, type=Path, help="dataset root with train/ and val/"
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="backbone or task checkpoint (.safetensors, hub id)")
    src.add_argument("--random-init", metavar="ARCH", help="probe a randomly initialised arch")
    parser.add_argument(
        "--input-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        default=(256, 192),
        help="network input size",
    )
    add_hidden_alias(parser, "--size", "--input-size")  # the earlier name still works
    parser.add_argument("--steps", type=int, default=400, help="head training steps")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="head learning rate")
    parser.add_argument(
        "--hidden", type=int, default=0, help="hidden width of the head; 0 = linear"
    )
    parser.add_argument(
        "--no-class-balance",
        action="store_true",
        help="seg: plain cross-entropy (default: class weights freq**-0.5)",
    )
    parser.add_argument("--max-train", type=int, default=0, help="at most N train items; 0 = all")
    parser.add_argument("--max-val", type=int, default=0, help="at most N val items; 0 = all")
    parser.add_argument("--seed", type=int, default=0, help="seed of the head and the data order")
    add_device_argument(parser)
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")


def run(args: argparse.Namespace) -> int:
    import torch

    from sapiens2.checkpoints import load_model
    from sapiens2.device import resolve_device
    from sapiens2.models import TaskModel, create_model
    from sapiens2.pretrain.probe import ProbeConfig, run_probe

    device = resolve_device(args.device)
    if not args.data.is_dir():
        raise FileNotFoundError(f"--data {args.data} is not a folder")
    cfg = ProbeConfig(
        task=args.task,
        input_size=tuple(args.input_size),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        hidden=args.hidden,
        class_balanced=not args.no_class_balance,
        max_train=args.max_train,
        max_val=args.max_val,
        seed=args.seed,
    )
    if args.model:
        model = load_model(args.model, device=device)
        backbone = model.backbone if isinstance(model, TaskModel) else model
    else:
        torch.manual_seed(args.seed)
        backbone = create_model(args.random_init, device=device)
    res = run_probe(backbone.float(), args.data, cfg)
    res["model"] = args.model or f"random:{args.random_init}"
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0

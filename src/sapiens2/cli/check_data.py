"""``sapiens2 check-data``: read every sample of a dataset for a task and report bad files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sapiens2.cli.common import add_task_argument

NAME = "check-data"
HELP = (
    "validate a dataset folder or shards for a task (missing files, sizes, labels, NaNs, keypoints)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="dataset root or folder of shards")
    add_task_argument(parser, help="which task's labels to check")
    parser.add_argument("--split", default="train", help="split name")
    parser.add_argument("--max-errors", type=int, default=20, help="stop after this many problems")


def run(args: argparse.Namespace) -> int:
    from sapiens2.data.datasets import validate_dataset

    if not args.data.exists():
        raise FileNotFoundError(f"{args.data} does not exist")
    n, errors = validate_dataset(args.data, args.split, args.task, args.max_errors)
    for e in errors:
        print(f"error: {e}")
    print(json.dumps({"task": args.task, "split": args.split, "checked": n, "errors": len(errors)}))
    return 1 if errors else 0

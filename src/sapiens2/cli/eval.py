"""``sapiens2 eval``: the paper's metrics of a task model on a dataset split."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from sapiens2.cli.common import add_device_argument, add_hidden_alias, add_task_argument

NAME = "eval"
HELP = (
    "evaluate a task model on a dataset: sapiens2 eval --task seg --model M --data DIR --out R.json"
)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_argument(parser, help="the model's task (metrics are chosen by it)")
    parser.add_argument("--model", required=True, help="task checkpoint file or hub id")
    parser.add_argument(
        "--data",
        required=True,
        help="dataset root (with SPLIT/) or shards (a folder, .tar files, or an fsspec URL)",
    )
    parser.add_argument(
        "--out", type=Path, help="report path (.json; a .md table is written beside)"
    )
    parser.add_argument("--split", default="val", help="dataset split")
    parser.add_argument(
        "--input-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="network input size (default: the model's native size)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward")
    parser.add_argument(
        "--max-samples", type=int, default=0, help="evaluate the first N samples; 0 = all"
    )
    parser.add_argument(
        "--no-flip-test",
        dest="flip_test",
        action="store_false",
        help="pose: skip the flipped second pass",
    )
    add_hidden_alias(parser, "--no-flip", "--no-flip-test")  # the earlier name still works
    parser.add_argument(
        "--pointmap-normal-full-window",
        action="store_true",
        help="pointmap: score the pointmap normals only where the whole 5x5 Sobel window is "
        "valid (a deviation, docs/metrics.md; default: every valid pixel, as official)",
    )
    add_device_argument(parser)
    parser.add_argument(
        "--dtype", default="fp32", help="weight and compute dtype: fp32, bf16 or fp16"
    )


def flat_metrics(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def markdown(task: str, model: str, metrics: dict) -> str:
    lines = [f"# {task} evaluation of `{model}`", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in flat_metrics(metrics).items()]
    for name, table in metrics.items():
        if (
            isinstance(table, dict)
            and table
            and all(isinstance(v, int | float) for v in table.values())
        ):
            lines += ["", f"## {name}", "", "| | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4f} |" for k, v in table.items()]
        elif isinstance(table, dict) and table and all(isinstance(v, dict) for v in table.values()):
            cols = list(next(iter(table.values())))
            lines += [
                "",
                f"## {name}",
                "",
                "| | " + " | ".join(cols) + " |",
                "|---" * (len(cols) + 1) + "|",
            ]
            for row, vals in table.items():
                lines.append(
                    f"| {row} | " + " | ".join(f"{float(vals[c]):.4f}" for c in cols) + " |"
                )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from sapiens2.checkpoints import load_model
    from sapiens2.device import resolve_device
    from sapiens2.evaluation import evaluate
    from sapiens2.models import TaskModel
    from sapiens2.models.task import a_task

    model = load_model(args.model, device=resolve_device(args.device), dtype=args.dtype)
    if not isinstance(model, TaskModel):
        raise ValueError(f"{args.model} is a backbone checkpoint; eval needs a task model")
    if model.task != args.task:
        raise ValueError(
            f"{args.model} is {a_task(model.task)} model, not {a_task(args.task)} model"
        )
    size = tuple(args.input_size) if args.input_size else (model.input_size or model.arch.img_size)
    device = next(model.parameters()).device
    metrics = evaluate(
        model,
        args.task,
        args.data,
        split=args.split,
        input_size=size,
        batch_size=args.batch_size,
        device=device,
        flip_test=args.flip_test,
        max_samples=args.max_samples,
        progress=True,
        pointmap_normal_full_window=args.pointmap_normal_full_window,
    )
    report = {
        "task": args.task,
        "model": str(args.model),
        "split": args.split,
        "input_size": size,
        "metrics": metrics,
    }
    text = markdown(args.task, str(args.model), metrics)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, default=float))
        args.out.with_suffix(".md").write_text(text)
        logger.info("wrote %s and %s", args.out, args.out.with_suffix(".md"))
    return 0

"""Trains the five small demo models shipped in ``sapiens2/demo/`` (the ones ``sapiens2 demo`` uses).

Renders a synthetic-humans dataset, fine-tunes ``<task>-tiny`` for each task with the trainer,
evaluates each model before and after training on the held-out split, and writes
``<task>.safetensors`` (official layout, bfloat16) plus ``report.json``. The demo models know only
synthetic figures.

    python tools/train_demo_models.py --out OUT [--device cuda] [--steps 1000] [--num 3000]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path

TASKS = ("seg", "pose", "normal", "pointmap", "albedo")


def headline(task: str, metrics: dict) -> dict:
    keys = {"seg": ("mIoU", "aAcc"), "pose": ("AP", "AR"), "normal": ("mean", "median"),
            "pointmap": ("l2_mean", "rmse"), "albedo": ("mae", "psnr")}[task]  # fmt: skip
    return {k: float(metrics[k]) for k in keys if k in metrics}


def train_one(
    task: str, data: str, out: str, steps: int, batch: int, workers: int, device: str
) -> dict:
    import torch

    import sapiens2
    from sapiens2.evaluation import evaluate
    from sapiens2.train.recipes import get_recipe
    from sapiens2.train.trainer import train

    recipe = get_recipe(f"{task}-tiny").with_overrides(
        {
            "max_steps": steps,
            "batch_size": batch,
            "num_workers": workers,
            "warmup_steps": min(100, steps // 10),
            "val_every": 0,
            "save_every": 0,
            "vis_every": max(1, steps // 2),
            "log_every": 50,
        }
    )
    torch.manual_seed(recipe.seed)
    start = sapiens2.create_model(recipe.arch, task=task, device=device)
    before = evaluate(start, task, data, input_size=recipe.input_size, batch_size=16, device=device)
    t0 = time.perf_counter()
    result = train(recipe, data, Path(out) / f"run_{task}", device=device)
    seconds = time.perf_counter() - t0
    model = sapiens2.load_model(Path(out) / f"run_{task}" / "model.safetensors", device=device)
    after = evaluate(model, task, data, input_size=recipe.input_size, batch_size=16, device=device)
    sapiens2.save_model(model.to(torch.bfloat16), Path(out) / f"{task}.safetensors")
    return {"task": task, "steps": result.steps, "train_seconds": seconds,
            "before": headline(task, before), "after": headline(task, after),
            "first_loss": result.history[0]["loss"], "last_loss": result.history[-1]["loss"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--num", type=int, default=3000, help="synthetic images (10%% held out)")
    parser.add_argument("--workers", type=int, default=2, help="data workers per task")
    parser.add_argument("--render-workers", type=int, default=mp.cpu_count())
    parser.add_argument("--parallel", action="store_true", help="train the five tasks at once")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from sapiens2.data.synth.render import SynthConfig
    from sapiens2.data.synth.writer import WriteConfig, write_dataset

    data = args.out / "synth"
    if not (data / "train" / "pose.json").is_file():
        write_dataset(WriteConfig(data, num=args.num, seed=7, val_fraction=0.1,
                                  workers=args.render_workers, render=SynthConfig(256, 192)))  # fmt: skip
    if args.parallel and len(args.tasks) > 1:
        # One process per task (DataLoader workers cannot live under a multiprocessing pool).
        procs = []
        for task in args.tasks:
            cmd = [sys.executable, __file__, "--out", str(args.out), "--device", args.device,
                   "--steps", str(args.steps), "--batch", str(args.batch), "--num", str(args.num),
                   "--workers", str(args.workers), "--tasks", task]  # fmt: skip
            procs.append(subprocess.Popen(cmd))
        codes = [p.wait() for p in procs]
        if any(codes):
            raise SystemExit(
                f"a task failed: exit codes {dict(zip(args.tasks, codes, strict=True))}"
            )
        rows = [json.loads((args.out / f"report_{t}.json").read_text()) for t in args.tasks]
    else:
        rows = []
        for task in args.tasks:
            row = train_one(
                task, str(data), str(args.out), args.steps, args.batch, args.workers, args.device
            )
            (args.out / f"report_{task}.json").write_text(json.dumps(row, indent=1))
            rows.append(row)
    report = {row["task"]: row for row in rows}
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

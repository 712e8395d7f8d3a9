"""Fine-tuning acceptance check: pretrain a tiny backbone, fine-tune it per task, evaluate before/after.

1. Renders two synthetic-humans sets at 256x192: unlabelled images for pretraining and a labelled
   set with a held-out split for fine-tuning (different seeds: no image is shared). By default
   both are the renderer's simple scenes (``SynthConfig.simple``: one whole person facing the
   camera, plain colours and backgrounds); ``--full`` renders the full distribution.
2. Pretrains ``sapiens2_tiny`` with the ``tiny`` pretraining recipe (MAE + distillation + KoLeo).
3. For each task: the task model initialised from the pretrained teacher is evaluated on the
   held-out split (``before``: pretrained backbone, fresh head), fine-tuned with ``<task>-tiny`` and
   evaluated again (``after``). Two constant predictions are baselines: ``chance`` (every pixel
   background, no keypoint, every normal facing the camera) and ``mean target`` (the average
   training target: each pixel's most frequent class, the mean heatmaps of the person crops, each
   pixel's mean normal), which scores well when the people stand alike in their frames.

    python tools/finetune_check.py --out OUT [--pretrain-steps 300] [--steps 300] [--full]

Existing sets under OUT are reused, and so is an existing ``OUT/pretrain/teacher.safetensors``
(then no pretraining set is rendered). Writes ``OUT/report.json`` and prints a table. Everything
runs on the CPU by default.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from torch import nn

HEADLINES = {"seg": ("mIoU", "aAcc"), "pose": ("AP", "AR"), "normal": ("mean", "median")}


class Constant(nn.Module):
    """A model that predicts the same output for every input (a baseline)."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("out", out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out.expand(x.shape[0], *self.out.shape).clone()


def trivial_output(task: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Every pixel background (seg), no keypoint (pose), every normal facing the camera."""
    out = torch.zeros(shape)
    if task == "seg":
        out[0] = 1.0
    elif task == "normal":
        out[2] = -1.0  # OpenCV camera frame: z forward
    return out


def mean_output(task: str, data: Path, recipe, num: int = 300) -> torch.Tensor:
    """The average training target as a constant prediction: each pixel's most frequent class
    (seg), the mean heatmaps of the person crops (pose: the average pose in its box), the mean
    normal of each pixel over the people covering it (camera-facing where none does)."""
    from sapiens2.data.metadata import seg29
    from sapiens2.evaluation import adapter_for

    adapter = adapter_for(task, pose_sigma=recipe.pose_sigma)
    ds = adapter.dataset(data, "train", False, recipe.input_size, 0)
    items = [ds[i] for i in range(min(num, len(ds)))]
    if task == "seg":
        n = seg29().num_classes
        labels = torch.stack([it["seg"].long() for it in items])
        labels = torch.where(labels < n, labels, n)  # the ignore label counts for no class
        counts = torch.nn.functional.one_hot(labels, n + 1).sum(0)[..., :n]  # (H, W, n)
        return torch.nn.functional.one_hot(counts.argmax(-1), n).permute(2, 0, 1).float()
    if task == "pose":
        return torch.stack([it["heatmaps"] for it in items]).mean(0)
    normal = torch.stack([it["normal"] * it["mask"][None] for it in items]).sum(0)
    out = trivial_output("normal", tuple(normal.shape))
    covered = normal.norm(dim=0) > 0
    out[:, covered] = torch.nn.functional.normalize(normal, dim=0)[:, covered]
    return out


def headline(task: str, metrics: dict) -> dict:
    out = {k: float(metrics[k]) for k in HEADLINES[task]}
    if task == "pose":
        out["body AP"] = float(metrics["groups"]["body"]["AP"])
        out["PCK@0.1"] = float(metrics["PCK@0.1"])
        out["PCK@0.1 body"] = float(metrics["PCK@0.1 body"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps per task")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--num", type=int, default=1000, help="labelled images (10%% held out)")
    p.add_argument("--pretrain-num", type=int, default=1000, help="unlabelled images")
    p.add_argument("--tasks", nargs="+", default=["seg", "pose", "normal"])
    p.add_argument("--full", action="store_true",
                   help="the renderer's full distribution instead of its simple scenes")  # fmt: skip
    p.add_argument("--people-max", type=int, default=1, help="at most this many people per image")
    p.add_argument("--workers", type=int, default=2, help="render processes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override for every task (repeatable), e.g. augment=False")  # fmt: skip
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    import sapiens2
    from sapiens2.data.synth.render import SynthConfig
    from sapiens2.data.synth.writer import WriteConfig, write_dataset
    from sapiens2.evaluation import evaluate
    from sapiens2.pretrain.recipes import get_recipe as pretrain_recipe
    from sapiens2.pretrain.trainer import Pretrainer
    from sapiens2.train.recipes import get_recipe
    from sapiens2.train.trainer import init_from, recipe_model, train

    render = SynthConfig(256, 192, people_max=args.people_max, simple=not args.full)
    data, pre_data = args.out / "data", args.out / "pretrain_data"
    if not (data / "val" / "pose.json").is_file():
        write_dataset(WriteConfig(data, num=args.num, seed=7, val_fraction=0.1,
                                  workers=args.workers, render=render))  # fmt: skip

    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    teacher = args.out / "pretrain" / "teacher.safetensors"
    if not teacher.is_file():  # an existing teacher is reused: no pretraining set, no pretraining
        if not (pre_data / "train").is_dir():
            write_dataset(WriteConfig(pre_data, num=args.pretrain_num, seed=11, val_fraction=0.0,
                                      workers=args.workers, render=render))  # fmt: skip
        t0 = time.perf_counter()
        recipe = pretrain_recipe("tiny", {"max_steps": args.pretrain_steps, "batch_size": 8})
        trainer = Pretrainer(recipe, pre_data, args.out / "pretrain")
        trainer.train()
        trainer.export()
        report["pretrain_seconds"] = time.perf_counter() - t0

    for task in args.tasks:
        recipe = get_recipe(f"{task}-tiny").with_overrides(
            {
                "max_steps": args.steps,
                "batch_size": args.batch,
                "val_every": 0,
                "save_every": 0,
                "vis_every": args.steps,
                "log_every": 25,
                **dict(item.split("=", 1) for item in args.set),
            }
        )
        size = recipe.input_size
        ev = {
            "input_size": size,
            "batch_size": 16,
            "flip_test": recipe.pose_flip_test,
            "pointmap_normal_full_window": recipe.pointmap_normal_full_window,
        }
        torch.manual_seed(recipe.seed)
        start = recipe_model(recipe)  # the head the recipe trains (its width)
        init_from(start, teacher)
        before = evaluate(start.eval(), task, data, **ev)
        with torch.no_grad():
            shape = tuple(start(torch.zeros(1, 3, *size))[0].shape)
        chance = evaluate(Constant(trivial_output(task, shape)), task, data, **ev)
        mean = evaluate(Constant(mean_output(task, data, recipe)), task, data, **ev)
        t0 = time.perf_counter()
        result = train(recipe, data, args.out / f"finetune_{task}", init=teacher, device="cpu")
        seconds = time.perf_counter() - t0
        model = sapiens2.load_model(args.out / f"finetune_{task}" / "model.safetensors")
        after = evaluate(model, task, data, **ev)
        report[task] = {
            "recipe": recipe.to_dict(),
            "steps": result.steps,
            "train_seconds": seconds,
            "first_loss": result.history[0]["loss"],
            "last_loss": result.history[-1]["loss"],
            "chance": headline(task, chance),
            "mean_target": headline(task, mean),
            "before": headline(task, before),
            "after": headline(task, after),
        }
        (args.out / "report.json").write_text(json.dumps(report, indent=1))

    print("| task | metric | chance | mean target | before (pretrained backbone, new head) | after "
          "| train s |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for task in args.tasks:
        r = report[task]
        for k in r["after"]:
            print(f"| {task} | {k} | {r['chance'][k]:.4g} | {r['mean_target'][k]:.4g} "
                  f"| {r['before'][k]:.4g} | {r['after'][k]:.4g} | {r['train_seconds']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()

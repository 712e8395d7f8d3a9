"""Trains the five small demo models shipped in ``sapiens2/assets/demo/`` (the ones ``sapiens2 demo``
uses) on synthetic humans, and measures them on a held-out set of full-distribution scenes.

One small backbone is trained jointly for the five tasks (segmentation, normals, pointmap and albedo
on the whole 256x192 image, pose on 256x192 top-down crops of the same images), each task with its
own head and its official loss terms (``sapiens2.train.losses``). Each task's loss is divided by a
running mean of itself, so that the five tasks pull on the shared backbone with comparable force.
Each task model (the shared backbone plus its head) is then saved alone in the official layout, in
bfloat16, and evaluated with ``sapiens2.evaluation.evaluate`` on the held-out split.

    python tools/train_demo_models.py --data SYNTH_ROOT --out OUT [--minutes 90]

``SYNTH_ROOT`` is written by ``sapiens2 synth --out SYNTH_ROOT --num 10500 --val-fraction 0.0477
--seed 2026`` (10,000 training and 500 held-out scenes at 256x192, the full distribution).
``OUT`` receives ``<task>.safetensors``, ``log.jsonl`` (the learning curves) and ``report.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

TASKS = ("seg", "pose", "normal", "pointmap", "albedo", "matting")
JOINT = ("seg", "pose", "normal", "pointmap", "albedo")
COUNT_SEED = 1_000_000  # demo scenes for the people count: seeds far from the demo's default 0
DENSE = ("seg", "normal", "pointmap", "albedo")
INPUT = (256, 192)
# The demo backbone (``sapiens2.models.configs.SAPIENS2_DEMO``): 6 full-attention blocks of width 192.
ARCH = "sapiens2_demo"

logger = logging.getLogger("train_demo_models")


def demo_heads(arch) -> dict:
    """Heads narrowing as they upsample, predicting at half the input size (three x2 stages from the
    16x12 token grid; the losses and the predictor upsample bilinearly to full size)."""
    from sapiens2.models.heads import (
        DenseHeadConfig,
        PointmapHeadConfig,
        PoseHeadConfig,
        SegHeadConfig,
    )

    dense = {"upsample_channels": (64, 32, 16), "conv_channels": (16, 16), "conv_kernels": (3, 3)}
    grid = (INPUT[0] // arch.patch_size, INPUT[1] // arch.patch_size)
    pointmap = PointmapHeadConfig(
        **dense, scale_conv_channels=(32, 16), scale_hidden=(32, 16), token_grid=grid
    )
    return {
        "seg": SegHeadConfig((96, 64, 32), (4, 4, 4), (32, 32)),
        "pose": PoseHeadConfig((96, 64), (4, 4), (64, 64, 64)),
        "normal": DenseHeadConfig(**dense),
        "albedo": DenseHeadConfig(**dense),
        "pointmap": pointmap,
        "matting": DenseHeadConfig(**dense, out_channels=4),
    }


def build_models(seed: int):
    """The task models, sharing one backbone module."""
    import sapiens2
    from sapiens2.models.factory import init_weights
    from sapiens2.models.task import TaskModel, build_head

    torch.manual_seed(seed)
    backbone = sapiens2.create_model(ARCH)
    heads = demo_heads(backbone.cfg)
    models = {}
    for task in TASKS:
        head = build_head(task, backbone.cfg.embed_dim, heads[task])
        init_weights(head)
        models[task] = TaskModel(backbone, head, task)
    return backbone, models


def init_from(models: dict, folder: Path) -> None:
    """Continues from earlier demo models: each task model (the shared backbone and its head) takes
    the weights of ``<folder>/<task>.safetensors`` (bfloat16 files are widened to float32). The
    stage-1 models share one backbone, so every file must hold the same backbone weights."""
    import sapiens2

    backbone_state = None
    for task in JOINT:
        loaded = sapiens2.load_model(folder / f"{task}.safetensors", dtype="fp32")
        state = loaded.backbone.state_dict()
        if backbone_state is None:
            backbone_state = state
        elif any(not torch.equal(state[k], backbone_state[k]) for k in state):
            raise ValueError(f"{folder}: the {task} model's backbone differs from the others'")
        models[task].load_state_dict(loaded.state_dict(), strict=True)
    logger.info("initialised from %s", folder)


class DenseJoint(Dataset):
    """The four dense tasks' items of one scene (the same image, no augmentation)."""

    def __init__(self, data, split: str):
        from sapiens2.data.datasets import dataset_class

        self.parts = {
            t: dataset_class(t)(data, split, train=False, input_hw=INPUT, seed=0) for t in DENSE
        }
        self.n = len(self.parts["seg"])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {t: ds[i] for t, ds in self.parts.items()}


def collate_joint(items: list[dict]) -> dict:
    from sapiens2.data.datasets import collate

    return {t: collate([it[t] for it in items]) for t in items[0]}


def forever(loader):
    for epoch in itertools.count():
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)
        yield from loader


class Balancer:
    """Divides each task's loss by a running mean of itself (detached)."""

    def __init__(self, momentum: float = 0.98):
        self.m = momentum
        self.mean: dict[str, float] = {}

    def __call__(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        v = float(loss.detach())
        old = self.mean.get(task, v)
        self.mean[task] = self.m * old + (1 - self.m) * v if task in self.mean else v
        return loss / max(self.mean[task], 1e-8)


def step_losses(models, losses, dense_batch, pose_batch) -> dict[str, torch.Tensor]:
    x = dense_batch["seg"]["image"]
    feats = models["seg"].backbone(x)
    out = {}
    for t in DENSE:
        pred = models[t].decode_head(feats)
        out[t] = losses[t](pred, dense_batch[t])["loss"]
    pred = models["pose"](pose_batch["image"])
    out["pose"] = losses["pose"](pred, pose_batch)["loss"]
    return out


def headline(task: str, m: dict) -> dict:
    if task == "pose":
        body = m.get("groups", {}).get("body", {})
        return {"body_AP": body.get("AP"), "AP": m.get("AP")}
    keys = {"seg": ("mIoU", "aAcc"), "normal": ("mean", "median"), "albedo": ("mae", "psnr"),
            "pointmap": ("depth_abs_rel", "aligned_depth_abs_rel", "l2_mean"),
            "matting": ("sad", "mse", "grad", "conn")}[task]  # fmt: skip
    return {k: float(m[k]) for k in keys if k in m}


def evaluate_all(models, data, device, max_samples: int = 0) -> dict:
    from sapiens2.evaluation import evaluate

    report = {}
    for t in models:
        size = models[t].input_size or INPUT  # an older pointmap model needs its own input size
        m = evaluate(models[t], t, data, split="val", input_size=size, batch_size=16,
                     device=device, max_samples=max_samples)  # fmt: skip
        report[t] = headline(t, m)
        logger.info("eval %s: %s", t, report[t])
    return report


def count_accuracy(model_dir, scenes: int, seed: int, device, old_rule: bool = False) -> dict:
    """How often the demo counts the people of a scene right: ``scenes`` demo scenes (the full
    distribution at the demo's size, seeds ``seed``, ``seed + 1``, ...). ``old_rule``: one person
    per connected region of the predicted person mask (what the demo did before)."""
    from sapiens2.demo import (
        DEMO_INPUT,
        demo_model_path,
        find_people,
        synthetic_scene,
        visible_people,
    )
    from sapiens2.inference.boxes import boxes_from_mask
    from sapiens2.inference.predictor import Predictor

    seg = Predictor("seg", demo_model_path("seg", model_dir), device=device, dtype="fp32",
                    input_size=DEMO_INPUT)  # fmt: skip
    pointmap = Predictor("pointmap", demo_model_path("pointmap", model_dir), device=device,
                         dtype="fp32")  # fmt: skip
    right, errors = 0, []
    for i in range(scenes):
        scene = synthetic_scene(seed + i)
        labels = seg.predict(scene.image).labels
        if old_rule:
            found = len(boxes_from_mask(labels > 0))
        else:
            depth = pointmap.predict(scene.image, masks=labels > 0).points[..., 2]
            found = len(find_people(labels, depth)[1])
        truth = visible_people(scene.instance)
        right += found == truth
        if found != truth:
            errors.append({"seed": seed + i, "found": found, "in_scene": truth})
    logger.info("people counted right on %d of %d scenes", right, scenes)
    return {"scenes": scenes, "right": right, "accuracy": right / scenes, "errors": errors}


def held_out(model_dir: Path, data, device, count_scenes: int, old_rule: bool = False) -> dict:
    import sapiens2

    loaded = {
        t: sapiens2.load_model(model_dir / f"{t}.safetensors", dtype="fp32")
        for t in TASKS
        if (model_dir / f"{t}.safetensors").is_file()
    }
    report = evaluate_all(loaded, data, device)
    if count_scenes:
        report["count"] = count_accuracy(model_dir, count_scenes, COUNT_SEED, device, old_rule)
    return report


def cosine_lr(base: float, step: int, progress: float, warmup: int = 100) -> float:
    return base * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * progress))


def save_task_model(model, out: Path, task: str) -> None:
    """``<task>_fp32.safetensors`` (for further training) and ``<task>.safetensors`` in bfloat16."""
    import sapiens2

    sapiens2.save_model(model.eval(), out / f"{task}_fp32.safetensors")
    copy = sapiens2.load_model(out / f"{task}_fp32.safetensors")
    sapiens2.save_model(copy.to(torch.bfloat16), out / f"{task}.safetensors")


def train_joint(args, device) -> dict:
    """Stage 1: the shared backbone and the five heads, for ``--minutes`` (or ``--steps``)."""
    from sapiens2.data.datasets import PoseDataset, collate
    from sapiens2.tasks import create_loss
    from sapiens2.train.losses.pose import PoseLossWeights

    backbone, models = build_models(args.seed)
    if args.init is not None:
        init_from(models, args.init)
    models = {t: models[t].to(device).train() for t in JOINT}
    params = list({id(p): p for m in models.values() for p in m.parameters()}.values())
    logger.info("parameters: %s (backbone %s)", sum(p.numel() for p in params),
                sum(p.numel() for p in backbone.parameters()))  # fmt: skip
    losses = {t: create_loss(t) for t in DENSE}
    losses["pose"] = create_loss("pose", PoseLossWeights(ohkm_topk=32))
    dense = DataLoader(DenseJoint(args.data, "train"), batch_size=args.batch, shuffle=True,
                       num_workers=args.workers, collate_fn=collate_joint, drop_last=True,
                       persistent_workers=args.workers > 0)  # fmt: skip
    pose_ds = PoseDataset(args.data, "train", input_hw=INPUT, sigma=2.0, seed=args.seed,
                          out_of_range="drop")  # fmt: skip
    pose = DataLoader(pose_ds, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                      collate_fn=collate, drop_last=True, persistent_workers=args.workers > 0)  # fmt: skip
    dense_it, pose_it = forever(dense), forever(pose)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)  # fmt: skip
    balance = Balancer()
    val_ds = DenseJoint(args.data, "val")
    val = collate_joint([val_ds[i] for i in range(min(32, len(val_ds)))])
    val_pose_ds = PoseDataset(args.data, "val", input_hw=INPUT, sigma=2.0)
    val_pose = collate([val_pose_ds[i] for i in range(min(32, len(val_pose_ds)))])

    def val_losses() -> dict:
        for m in models.values():
            m.eval()
        with torch.no_grad():
            out = {t: float(v) for t, v in step_losses(models, losses, val, val_pose).items()}
        for m in models.values():
            m.train()
        return out

    # The schedule follows the clock with --minutes (the step time changes with the machine's
    # load), or the step count with --steps: linear warm-up, then a cosine to zero.
    budget = args.minutes * 60
    log = (args.out / "log.jsonl").open("w")
    t0 = time.perf_counter()
    step = 0
    while True:
        progress = step / args.steps if args.steps else (time.perf_counter() - t0) / budget
        if progress >= 1:
            break
        lr = cosine_lr(args.lr, step, progress)
        for g in opt.param_groups:
            g["lr"] = lr
        db, pb = next(dense_it), next(pose_it)
        terms = step_losses(models, losses, db, pb)
        loss = sum(balance(t, v) for t, v in terms.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 2.0)
        opt.step()
        step += 1
        if step % 25 == 0:
            rec = {"step": step, "lr": lr, "seconds": round(time.perf_counter() - t0, 1),
                   "train": {t: float(v.detach()) for t, v in terms.items()}}  # fmt: skip
            if step % 100 == 0:
                rec["val"] = val_losses()
            log.write(json.dumps(rec) + "\n")
            log.flush()
            logger.info("step %d (%.0f%%) %s", step, 100 * progress, rec)
    seconds = time.perf_counter() - t0
    rec = {"step": step, "seconds": round(seconds, 1), "val": val_losses()}
    log.write(json.dumps(rec) + "\n")
    log.close()
    for t, m in models.items():
        save_task_model(m, args.out, t)
    return {"steps": step, "seconds": round(seconds), "batch": args.batch}


def train_heads(args, device) -> dict:
    """Stage 2, on the frozen stage-1 backbone for ``--heads-minutes``: a matting head (from scratch,
    or from ``--init``'s matting model) and more steps for the pose head (the slowest task of
    stage 1)."""
    import sapiens2
    from sapiens2.data.datasets import MattingDataset, PoseDataset, collate
    from sapiens2.models.factory import init_weights
    from sapiens2.models.task import TaskModel, build_head
    from sapiens2.tasks import create_loss
    from sapiens2.train.losses.pose import PoseLossWeights

    pose_model = sapiens2.load_model(args.out / "pose_fp32.safetensors").to(device)
    backbone = pose_model.backbone.eval()
    backbone.requires_grad_(False)
    torch.manual_seed(args.seed)
    matting_head = build_head(
        "matting", backbone.cfg.embed_dim, demo_heads(backbone.cfg)["matting"]
    )
    init_weights(matting_head)
    earlier = None if args.init is None else args.init / "matting.safetensors"
    if earlier is not None and earlier.is_file():  # the earlier run's head, on its own backbone
        matting_head.load_state_dict(
            sapiens2.load_model(earlier, dtype="fp32").decode_head.state_dict()
        )
        logger.info("matting head initialised from %s", earlier)
    heads = {"matting": matting_head.to(device).train(), "pose": pose_model.decode_head.train()}
    losses = {"matting": create_loss("matting"),
              "pose": create_loss("pose", PoseLossWeights(ohkm_topk=32))}  # fmt: skip
    loaders = {
        "matting": DataLoader(
            MattingDataset(args.data, "train", train=False, input_hw=INPUT, seed=0),
            batch_size=args.batch, shuffle=True, num_workers=args.workers, collate_fn=collate,
            drop_last=True),
        "pose": DataLoader(
            PoseDataset(args.data, "train", input_hw=INPUT, sigma=2.0, seed=args.seed + 1,
                        out_of_range="drop"),
            batch_size=args.batch, shuffle=True, num_workers=args.workers, collate_fn=collate,
            drop_last=True),
    }  # fmt: skip
    its = {t: forever(dl) for t, dl in loaders.items()}
    params = [p for h in heads.values() for p in h.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    log = (args.out / "log_heads.jsonl").open("w")
    budget = args.heads_minutes * 60
    t0 = time.perf_counter()
    step = 0
    while (progress := (time.perf_counter() - t0) / budget) < 1:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(args.lr, step, progress, warmup=20)
        terms = {}
        for t, head in heads.items():
            batch = next(its[t])
            with torch.no_grad():
                feats = backbone(batch["image"].to(device))
            terms[t] = losses[t](head(feats), batch)["loss"]
        opt.zero_grad(set_to_none=True)
        sum(terms.values()).backward()  # the heads are disjoint: Adam scales each on its own
        opt.step()
        step += 1
        if step % 25 == 0:
            rec = {"step": step, "seconds": round(time.perf_counter() - t0, 1),
                   "train": {t: float(v) for t, v in terms.items()}}  # fmt: skip
            log.write(json.dumps(rec) + "\n")
            log.flush()
            logger.info("heads step %d (%.0f%%) %s", step, 100 * progress, rec)
    log.close()
    save_task_model(TaskModel(backbone, heads["matting"], "matting"), args.out, "matting")
    save_task_model(pose_model, args.out, "pose")
    return {"steps": step, "seconds": round(time.perf_counter() - t0)}


def plot_curves(log: Path, out: Path, size: tuple[int, int] = (360, 640)) -> None:
    """The stage-1 learning curves as a PNG: each task's training loss (mean of 4 log points) and
    its held-out loss (dots), divided by the task's first training loss, on a log scale."""
    import cv2
    import numpy as np

    recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    train = [r for r in recs if "train" in r]
    if len(train) < 2:
        return
    h, w = size
    pad_l, pad_b, pad_t, pad_r = 60, 40, 28, 110
    img = np.full((h, w, 3), 255, np.uint8)
    last = max(r["step"] for r in recs)
    lo, hi = np.log10(0.1), np.log10(1.5)

    def xy(step: float, v: float) -> tuple[int, int]:
        x = pad_l + (w - pad_l - pad_r) * step / last
        y = pad_t + (h - pad_t - pad_b) * (hi - np.clip(np.log10(max(v, 1e-9)), lo, hi)) / (hi - lo)
        return round(x), round(y)

    for v in (0.1, 0.2, 0.5, 1.0):
        cv2.line(img, xy(0, v), xy(last, v), (225, 225, 225), 1)
        cv2.putText(img, f"{v:g}", (8, xy(0, v)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)  # fmt: skip
    colours = {"seg": (214, 39, 40), "pose": (31, 119, 180), "normal": (44, 160, 44),
               "pointmap": (148, 103, 189), "albedo": (255, 127, 14)}  # fmt: skip
    for i, (t, c) in enumerate(colours.items()):
        first = train[0]["train"][t]
        vals = np.array([r["train"][t] for r in train]) / first
        smooth = np.convolve(vals, np.ones(4) / 4, mode="valid")
        pts = [xy(train[j + 3]["step"], v) for j, v in enumerate(smooth)]
        cv2.polylines(img, [np.array(pts, np.int32)], False, c, 2, cv2.LINE_AA)
        for r in recs:
            if "val" in r:
                cv2.circle(img, xy(r["step"], r["val"][t] / first), 3, c, -1, cv2.LINE_AA)
        cv2.putText(img, t, (w - pad_r + 10, pad_t + 18 * i + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    c, 1, cv2.LINE_AA)  # fmt: skip
    cv2.putText(img, f"step (batch 16) 0..{last}", (pad_l, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
    cv2.putText(img, "loss / first training loss (lines: train, dots: held out)", (pad_l, 18),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
    cv2.imwrite(str(out), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a `sapiens2 synth` root")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--minutes", type=float, default=88.0, help="stage 1 time budget")
    parser.add_argument("--steps", type=int, default=0, help="stage 1 steps (0 = fit --minutes)")
    parser.add_argument("--heads-minutes", type=float, default=10.0, help="stage 2 time budget")
    parser.add_argument("--batch", type=int, default=16, help="scenes per step (and pose crops)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start stage 1 from the task models in this folder (e.g. the bundled ones)",
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--count-scenes", type=int, default=100, help="scenes for the people count")
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=("joint", "heads", "eval"),
        default=["joint", "heads", "eval"],
        help="what to run (heads and eval continue from the models in --out)",
    )
    parser.add_argument(
        "--eval-only", type=Path, default=None, help="only measure the models in this folder"
    )
    parser.add_argument(
        "--old-rule", action="store_true", help="count people as the demo did before (--eval-only)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.eval_only is not None:
        report = held_out(args.eval_only, args.data, args.device, args.count_scenes, args.old_rule)
        (args.out / "report.json").write_text(json.dumps({"held_out": report}, indent=1))
        return
    device = torch.device(args.device)
    path = args.out / "report.json"
    report = json.loads(path.read_text()) if path.is_file() else {}
    if "joint" in args.stages:
        report["joint"] = train_joint(args, device)
    if "heads" in args.stages:
        report["heads"] = train_heads(args, device)
    if "eval" in args.stages:
        report["held_out"] = held_out(args.out, args.data, device, args.count_scenes)
        if (args.out / "log.jsonl").is_file():
            plot_curves(args.out / "log.jsonl", args.out / "learning_curves.png")
    path.write_text(json.dumps(report, indent=1))
    logger.info("report: %s", report)


if __name__ == "__main__":
    main()

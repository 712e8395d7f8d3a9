"""``sapiens2 features``: PCA pictures (and optionally tensors) of backbone patch features."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sapiens2.cli.common import add_device_argument, add_hidden_alias

NAME = "features"
HELP = "write PCA-of-patch-feature pictures (and optionally the features) for images"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--model", required=True, help="backbone or task checkpoint, or hub id")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--input-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="network input size (default: the arch's)",
    )
    add_hidden_alias(parser, "--size", "--input-size")  # the earlier name still works
    parser.add_argument(
        "--save-features", action="store_true", help="also write <name>.npy (D, Hp, Wp)"
    )
    add_device_argument(parser)
    parser.add_argument(
        "--dtype", default="fp32", help="weight and compute dtype: fp32, bf16 or fp16"
    )


def run(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np
    import torch
    from tqdm import tqdm

    from sapiens2.checkpoints import load_model
    from sapiens2.device import resolve_device, resolve_dtype
    from sapiens2.inference.media import expand_media, read_image
    from sapiens2.inference.preprocess import stretch_resize, to_tensor
    from sapiens2.models import TaskModel
    from sapiens2.viz.features import feature_panel, pca_rgb

    device = resolve_device(args.device)
    items = [i for i in expand_media(args.images) if i.kind == "image"]
    if not items:
        raise ValueError("no images among the inputs (videos are not supported by 'features')")
    model = load_model(args.model, device=device, dtype=args.dtype)
    backbone = model.backbone if isinstance(model, TaskModel) else model
    size = tuple(args.input_size) if args.input_size else backbone.cfg.img_size
    if size[0] % backbone.cfg.stride or size[1] % backbone.cfg.stride:
        raise ValueError(f"--input-size {size} must be a multiple of {backbone.cfg.stride}")
    device = next(backbone.parameters()).device
    dtype = resolve_dtype(args.dtype)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for item in tqdm(items, desc="features", unit="img"):
        try:
            rgb = read_image(item.path)
        except (ValueError, FileNotFoundError) as err:
            logger.warning("skipping %s: %s", item.path, err)
            failed += 1
            continue
        x = to_tensor([stretch_resize(rgb, size)], device=device, dtype=dtype)
        with torch.inference_mode():
            feats = backbone(x)[0].float().cpu()  # (D, Hp, Wp)
        panel = feature_panel(rgb, pca_rgb(feats))
        cv2.imwrite(str(args.out / f"{item.name}_pca.png"), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        if args.save_features:
            np.save(args.out / f"{item.name}.npy", feats.numpy())
    logger.info("wrote %d of %d images to %s", len(items) - failed, len(items), args.out)
    return 1 if failed == len(items) else 0

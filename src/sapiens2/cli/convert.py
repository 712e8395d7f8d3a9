"""``sapiens2 convert``: rewrite a checkpoint as a transformers-format folder or an official file."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "convert"
HELP = "rewrite a checkpoint as a transformers folder or an official .safetensors file"

EPILOG = """\
--to transformers writes OUT/config.json and OUT/model.safetensors, which
transformers.AutoModel.from_pretrained(OUT) and the Sapiens2For<Task> classes load (transformers
computes RoPE in float32, the released models in bfloat16: outputs differ by about 0.5% of their
range, see docs/export.md). --to official writes one .safetensors file in the official key layout.
Either reads any source load_model reads: official files, transformers folders, hub ids.

examples:
  sapiens2 convert --to transformers facebook/sapiens2-pose-0.4b pose-hf/
  sapiens2 convert --to official pose-hf/ sapiens2_0.4b_pose.safetensors
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument(
        "--to", required=True, choices=("transformers", "official"),
        help="transformers: a folder for from_pretrained; official: one .safetensors file",
    )  # fmt: skip
    parser.add_argument("source", metavar="SRC", help="checkpoint: file, folder or hub id")
    parser.add_argument(
        "out", type=Path, metavar="OUT", help="folder (transformers) or .safetensors file"
    )
    parser.add_argument(
        "--official-names", action="store_true",
        help="--to transformers: keep the official parameter names (as the hub files do) instead "
        "of transformers' own; transformers' task classes load either, AutoModel finds the "
        "backbone of a task model only under transformers' names",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from sapiens2.checkpoints import load_model, save_model
    from sapiens2.checkpoints.transformers import save_pretrained

    model = load_model(args.source)
    if args.to == "transformers":
        if args.out.suffix == ".safetensors":
            raise ValueError(f"--to transformers writes a folder, got the file name {args.out}")
        layout = "official" if args.official_names else "transformers"
        save_pretrained(model, args.out, key_layout=layout)
        print(f"{args.out}: config.json + model.safetensors ({layout} names)")
    else:
        if args.official_names:
            raise ValueError("--official-names only applies to --to transformers")
        save_model(model, args.out)
        print(f"{args.out}: official layout")
    return 0

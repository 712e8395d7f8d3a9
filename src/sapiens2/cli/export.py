"""``sapiens2 export``: a task model or the person detector as a ``.pt2`` program or an ONNX file,
with its pre-processing contract (``<out>.json``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sapiens2.cli.common import add_task_argument
from sapiens2.tasks import task_names

NAME = "export"
HELP = "export a task model or the person detector to torch.export (.pt2) or ONNX"

logger = logging.getLogger(__name__)

EPILOG = """\
The file takes the normalised (B, 3, H, W) tensor the model's forward takes and returns the same
outputs in the same order; <out>.json (also stored inside the file) says how to make that tensor
(size, channel order, mean/std, resize) and names the outputs. `sapiens2 predict --model <out>`
runs it with the usual pre- and post-processing. See docs/export.md.

examples:
  sapiens2 export --task pose --model facebook/sapiens2-pose-0.4b --format onnx --out pose.onnx
  sapiens2 export --task seg --model seg.safetensors --format pt2 --out seg.pt2 --dynamic-batch
  sapiens2 export --task detector --model facebook/sapiens-pose-bbox-detector --format onnx --out det.onnx
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    add_task_argument(parser, choices=(*task_names(), "detector"), help="what the model is")
    parser.add_argument(
        "--model", required=True, metavar="SOURCE",
        help="task checkpoint (file, folder or hub id); for --task detector an RTMDet checkpoint",
    )  # fmt: skip
    parser.add_argument(
        "--format", choices=("pt2", "onnx"), default=None,
        help="pt2: a torch.export program; onnx: torch.onnx.export(dynamo=True) (needs the "
        "export extra: pip install 'sapiens2[export]'). Default: from the --out suffix",
    )  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, metavar="FILE", help="file to write")
    parser.add_argument(
        "--dtype", default="fp32", choices=("fp32", "bf16", "fp16"),
        help="weights, input and outputs (ONNX Runtime's CPU provider runs fp32 only)",
    )  # fmt: skip
    parser.add_argument(
        "--dynamic-batch", action="store_true", help="any batch size (default: batch 1)"
    )
    parser.add_argument(
        "--no-optimize", dest="optimize", action="store_false",
        help="onnx: skip onnxscript's graph optimizer (much faster for deep models; ONNX Runtime "
        "optimizes at load and runs either graph as fast)",
    )  # fmt: skip
    parser.add_argument(
        "--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
        help="the fixed input size (default: the model's native size: 1024 768 for the released "
        "models, 640 640 for the detector; a pointmap model takes only its own)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from sapiens2.export import export_model
    from sapiens2.export.contract import FILE_FORMATS

    suffix_format = FILE_FORMATS.get(args.out.suffix.lower())
    fmt = args.format or suffix_format
    if fmt is None:
        raise ValueError(f"--out {args.out}: give it a .onnx or .pt2 suffix, or --format")
    if suffix_format != fmt:
        raise ValueError(f"--format {fmt} writes a .{fmt} file, but --out is {args.out}")
    model = _load(args)
    contract = export_model(
        model,
        args.out,
        dtype=args.dtype,
        dynamic_batch=args.dynamic_batch,
        input_size=tuple(args.input_size) if args.input_size else None,
        source=args.model,
        optimize=args.optimize,
    )
    outs = ", ".join(f"{o.name} {'x'.join(map(str, o.shape))}" for o in contract.outputs)
    print(
        f"{args.out}: {contract.kind}, input {contract.input.name} "
        f"{'x'.join(map(str, contract.input.shape))} {contract.input.dtype} "
        f"({contract.channel_order}, normalised); outputs {outs}; contract in {args.out}.json"
    )
    return 0


def _load(args: argparse.Namespace):
    if args.task == "detector":
        from sapiens2.detect import load_detector

        return load_detector(args.model)
    from sapiens2.checkpoints import load_model
    from sapiens2.models.task import a_task

    model = load_model(args.model)
    task = getattr(model, "task", None)
    if task != args.task:
        what = f"{a_task(task)} checkpoint" if task else "a plain backbone checkpoint"
        raise ValueError(f"--model {args.model} is {what}, but --task {args.task} was given")
    return model

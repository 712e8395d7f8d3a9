"""``sapiens2 predict --engine ray``: the flags of the Ray engine and its run
(:mod:`sapiens2.inference.ray_engine`); every other ``predict`` flag means the same as locally."""

from __future__ import annotations

import argparse
import functools
import logging
from contextlib import nullcontext
from pathlib import Path

from sapiens2.inference.ray_outputs import OUTPUT_FORMATS

logger = logging.getLogger(__name__)

# flags that change how a run is laid out, not what it writes (left out of the resume digest;
# predict_ray adds a non-default --output-format to it itself)
_LAYOUT_FLAGS = frozenset(
    {"media", "out", "engine", "address", "num_workers", "gpus_per_worker", "cpus_per_worker",
     "io_workers", "render_processes", "batch_size", "shard_size", "output_format", "verbose",
     "quiet", "log_level"}
)  # fmt: skip


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "scale-out (docs/scale.md)",
        "--engine ray reads images, folders, globs, .tar shards and fsspec URLs (s3://, gs://, "
        "file://) on Ray workers and writes the files of local predict, or shards or Parquet "
        "(also to an fsspec URL --out); a re-run into the same --out skips the images already "
        "done",
    )
    group.add_argument(
        "--engine", choices=("local", "ray"), default="local",
        help="local: this process (default); ray: Ray Data reads and decodes, a pool of model "
        "actors predicts and writes the same files",
    )  # fmt: skip
    group.add_argument(
        "--address", metavar="ADDR", default=None,
        help="ray: the cluster to join ('auto', ray://head:10001); default: a local Ray",
    )  # fmt: skip
    group.add_argument("--num-workers", type=int, default=1, metavar="N",
                       help="ray: model actors, one model load each (default %(default)s)")  # fmt: skip
    group.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                       help="ray: GPUs per actor (default %(default)s: CPU actors)")  # fmt: skip
    group.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="C",
                       help="ray: CPUs per actor: its torch threads and its writing threads (default %(default)s)")  # fmt: skip
    group.add_argument(
        "--output-format", choices=OUTPUT_FORMATS, default="files",
        help="ray: files: the per-image files of local predict (default); shards: per batch of "
        "--shard-size images a WebDataset tar <out>/shards/<task>-NNNNNN.tar of those files "
        "(<name>_seg.png as <key>.seg.png); parquet: per batch <out>/parquet/<task>-NNNNNN.parquet, "
        "a row per image (pose keypoints, boxes, scores), and its files in a .tar beside it",
    )  # fmt: skip
    group.add_argument(
        "--shard-size", type=int, default=64, metavar="N",
        help="ray, shards/parquet: images per shard or Parquet file, each predicted by one actor "
        "call in forwards of --batch-size (default %(default)s; its decoded images are in the "
        "actor's memory at once)",
    )  # fmt: skip


def run_settings(args: argparse.Namespace) -> dict:
    """The flags that decide what is written (the resume digest): a re-run with other values
    redoes the outputs instead of reusing them."""
    settings = {}
    for key, value in sorted(vars(args).items()):
        if key in _LAYOUT_FLAGS or callable(value):
            continue
        settings[key] = str(value) if isinstance(value, Path) else value
    for key in ("model", "mask_model", "boxes"):  # a file's identity includes its size and age
        path = Path(str(settings.get(key) or ""))
        if settings.get(key) and path.is_file():
            st = path.stat()
            settings[f"{key}_file"] = [st.st_size, st.st_mtime_ns]
    return settings


def run_ray(args: argparse.Namespace) -> int:
    from sapiens2.cli.predict import _load_predictor, _max_pixels
    from sapiens2.errors import UsageError
    from sapiens2.inference.boxes import load_boxes_json
    from sapiens2.inference.ray_engine import RayOptions, list_inputs, predict_ray
    from sapiens2.inference.ray_outputs import check_out
    from sapiens2.inference.writer import PredictionWriter
    from sapiens2.outdir import OutputLock, command_line, prepare_out_dir
    from sapiens2.tasks import get_task

    options = RayOptions(
        address=args.address,
        num_workers=args.num_workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        batch_size=args.batch_size,
        max_pixels=_max_pixels(args),
        render_threads=args.io_workers or max(1, int(args.cpus_per_worker)),
        output_format=args.output_format,
        shard_size=args.shard_size,
    )
    out = args.out
    check_out(out, options.output_format)
    if isinstance(out, str) and out.startswith("file://") and options.output_format == "files":
        out = Path(out.removeprefix("file://"))  # a local folder, written as local predict does
    if args.compile and not options.gpus_per_worker:
        logger.info("--compile on CPU actors: each actor compiles its own forward")
    inputs = list_inputs(args.media)
    if not inputs:
        raise UsageError("no input to read")
    if any(r.source.startswith("memory://") for r in inputs):
        raise UsageError(
            "memory:// inputs live in this process: the Ray workers cannot read them; use "
            "files, file:// or an object store"
        )
    local = [Path(r.source.removeprefix("file://")) for r in inputs if "://" not in r.source
             or r.source.startswith("file://")]  # fmt: skip
    local_out = out if isinstance(out, Path) else None
    if isinstance(out, str) and out.startswith("file://"):
        local_out = Path(out.removeprefix("file://"))  # locked as a folder, written by fsspec
    if local_out is not None:
        prepare_out_dir(local_out, local)
    boxes_table = load_boxes_json(args.boxes, max_boxes=args.max_boxes) if args.boxes else None
    make_writer = functools.partial(
        PredictionWriter,
        args.task,
        out if options.output_format == "files" else None,  # shards: rendered in memory
        kpt_thr=args.kpt_thr,
        save_npy=args.save_npy,
        coco_layout=args.coco_layout,
        pictures=args.pictures,
        background=args.background,
    )
    logger.info("%s on Ray: %d input(s), %d worker(s) x %g GPU", args.task, len(inputs),
                options.num_workers, options.gpus_per_worker)  # fmt: skip
    if local_out is None:
        logger.info("--out %s is a URL: not locked; run one job at a time into it", out)
    with OutputLock(local_out, command_line()) if local_out is not None else nullcontext():
        stats = predict_ray(
            inputs,
            functools.partial(_load_predictor, args),
            make_writer,
            options=options,
            settings=run_settings(args),
            boxes_table=boxes_table,
            mask_dir=args.mask_dir,
            result_type=get_task(args.task).result,
            out=out,
        )
    summary = (
        f"{args.task}: {stats.done} image(s) predicted in {stats.seconds:.1f} s "
        f"({stats.images_per_second:.2f} img/s), {stats.resumed} done before"
    )
    if stats.unreadable:
        summary += f"; {len(stats.unreadable)} unreadable (in ray_report.json): " + ", ".join(
            s for s, _ in stats.unreadable[:10]
        )
    if stats.failed:
        summary += f"; prediction failed for {len(stats.failed)}: " + ", ".join(
            f"{n} ({r})" for n, r in stats.failed[:10]
        )
    print(summary + f"; outputs in {out}")
    if stats.done + stats.resumed == 0:
        logger.error("nothing was predicted")
        return 1
    return 1 if stats.failed else 0

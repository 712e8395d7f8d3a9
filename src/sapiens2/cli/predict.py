"""``sapiens2 predict``: run a task model on images, folders, globs and videos (parse the flags,
load the models, run :func:`sapiens2.inference.engine.predict_items`, report)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sapiens2.cli.common import add_device_argument, add_task_argument

NAME = "predict"
HELP = "run a task model (pose, seg, normal, ...) on images and videos"

logger = logging.getLogger(__name__)


EXAMPLES = """\
examples:
  sapiens2 predict --task pose --model facebook/sapiens2-pose-0.4b --out out/ photos/ clip.mp4
  sapiens2 predict --task seg --model facebook/sapiens2-seg-1b --out seg/ photos/
  sapiens2 predict --task normal --model facebook/sapiens2-normal-1b --mask-dir seg/ --out n/ photos/
  sapiens2 predict --task matting --model facebook/sapiens2-matting-1b --background beach.jpg --out m/ photos/
"""


def epilog() -> str:
    """The outputs table (from each task's outputs) and the examples."""
    from sapiens2.inference.outputs import outputs_help
    from sapiens2.tasks import task_names

    lines = [
        "outputs, per image <name> (video frames: <out>/<video>/<video>_<frame:06d>..., pictures "
        "in <out>/<video>.mp4):",
        "  all tasks  <name>.jpg            the picture (pose: skeletons; dense: input | result; "
        "not with --no-pictures)",
    ]
    for task in task_names():
        for i, line in enumerate(outputs_help(task)):
            lines.append(f"  {task if i == 0 else '':<10} {line}")
    return "\n".join(lines) + "\n\n" + EXAMPLES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = epilog()
    parser.add_argument(
        "media", nargs="+", metavar="MEDIA", help="images, folders, glob patterns or videos"
    )
    add_task_argument(parser, help="the model's task (what is predicted and written)")
    parser.add_argument(
        "--model",
        required=True,
        metavar="SOURCE",
        help="task checkpoint: file, folder, hub id (owner/name or hf://owner/name/file) or demo:<task>",
    )
    parser.add_argument(
        "--out", required=True, type=out_location, metavar="DIR",
        help="output folder (--engine ray --output-format shards|parquet: also an fsspec URL, "
        "s3://bucket/labels, gs://..., file://...)",
    )  # fmt: skip
    add_device_argument(parser)
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="weight and compute dtype (default auto: bf16 where the device has bf16 arithmetic, "
        "i.e. CUDA GPUs from Ampere on and CPUs with AMX or AVX512-BF16; fp32 elsewhere). fp32 "
        "reproduces the official outputs exactly",
    )
    parser.add_argument(
        "--batch-size", type=int, default=4, help="images per forward (pose: person crops)"
    )
    parser.add_argument(
        "--compile", action="store_true",
        help="run the model under torch.compile: faster forwards after the first batch of each "
        "shape compiles (logged; compiled kernels are cached on disk for later runs); outputs "
        "differ from the reference in the last bits",
    )  # fmt: skip
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="network input size (default: the model's native size; 1024 768 for the released models)")  # fmt: skip
    parser.add_argument("--no-flip-test", dest="flip_test", action="store_false",
                        help="pose: skip the flipped second pass")  # fmt: skip
    parser.add_argument("--boxes", type=Path, metavar="JSON",
                        help='pose: person boxes, {"<image name or stem>": [[x1, y1, x2, y2(, score)], ...]}, '
                        "or COCO detection results [{image_id, category_id, bbox [x, y, w, h], score}, ...] "
                        "(image ids from --coco-gt, else the input named by the id)")  # fmt: skip
    parser.add_argument("--coco-gt", type=Path, metavar="JSON",
                        help="pose: a COCO annotation file: coco_results.json gets its image ids "
                        "(inputs matched by file name; others are left out) and, without --boxes, "
                        "person boxes from its non-crowd person annotations")  # fmt: skip
    parser.add_argument("--openpose", action="store_true",
                        help="pose: also write <name>_keypoints.json in OpenPose's format")  # fmt: skip
    parser.add_argument("--mask-model", metavar="SOURCE",
                        help="segmentation checkpoint: masks the background of dense outputs; pose boxes from its person mask")  # fmt: skip
    parser.add_argument("--mask-dir", type=Path, metavar="DIR",
                        help="dense tasks: foreground masks <name>_seg.png / <name>.npy / <name>.png (nonzero = person)")  # fmt: skip
    parser.add_argument(
        "--detector",
        default="auto",
        metavar="rtmdet|seg|none|SOURCE",
        help="pose: person boxes from the built-in RTMDet (the official detector; 'auto' = rtmdet "
        "when its weights are in the hub cache, else seg with --mask-model, else none), from the "
        "--mask-model's person mask ('seg'), the whole image ('none'), or a detector checkpoint "
        "(.pth/.safetensors file or hub id)",
    )
    parser.add_argument(
        "--kpt-thr", type=float, default=0.3, help="pose: keypoint score threshold for drawing"
    )
    parser.add_argument(
        "--save-npy", action="store_true", help="seg: also save labels as <name>_seg.npy"
    )
    parser.add_argument(
        "--background", default="green", metavar="COLOUR|FILE",
        help="matting: what <name>_composite.png puts the person over: a colour (green, blue, "
        "white, black, gray, R,G,B or #RRGGBB) or an image file (resized to each image)",
    )  # fmt: skip
    parser.add_argument(
        "--coco-layout",
        default="goliath308",
        choices=("goliath308", "coco17", "coco_wholebody133"),
        help="pose: keypoint layout of coco_results.json (default: the model's 308 keypoints)",
    )
    parser.add_argument(
        "--no-pictures", dest="pictures", action="store_false",
        help="write only the data files (no <name>.jpg pictures, no rendered videos)",
    )  # fmt: skip
    parser.add_argument(
        "--io-workers", type=int, default=None, metavar="N",
        help="threads that decode inputs and, as many again, threads or processes that draw "
        "and write outputs (default: half the CPU cores, at most 8; render processes: three "
        "quarters of the cores)",
    )  # fmt: skip
    parser.add_argument(
        "--render-processes", action=argparse.BooleanOptionalAction, default=None,
        help="draw and write outputs in worker processes rather than threads (default: for "
        "seg and pose on a GPU, where it keeps the model's threads from waiting for Python's "
        "lock; not on a CPU)",
    )  # fmt: skip
    add_limit_arguments(parser)
    from sapiens2.cli.predict_ray import add_engine_arguments

    add_engine_arguments(parser)


def out_location(text: str) -> Path | str:
    """``--out``: a folder (a ``Path``), or an fsspec URL kept as text."""
    from sapiens2.data.shards import is_url

    return text if is_url(text) else Path(text)


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The resource limits and safety overrides (docs/security.md)."""
    from sapiens2.inference.boxes import MAX_BOXES
    from sapiens2.limits import DEFAULT_MAX_PIXELS

    parser.add_argument(
        "--max-megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6, metavar="MP",
        help="skip images and videos with more pixels (per frame) than this, read from the file "
        "header before decoding (default %(default)s; 0: no limit)",
    )  # fmt: skip
    parser.add_argument(
        "--max-boxes", type=int, default=MAX_BOXES, metavar="N",
        help="pose: at most this many person boxes per image (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-nonfinite", action="store_true",
        help="load weights holding NaN or infinite values (with a warning) instead of refusing them",
    )  # fmt: skip


def _load_predictor(args):
    from sapiens2.checkpoints import load_model
    from sapiens2.device import inference_dtype, resolve_device
    from sapiens2.inference import Predictor
    from sapiens2.inference.predictor import MASK_TASK
    from sapiens2.inference.runners import runner_for
    from sapiens2.models.task import a_task

    device = resolve_device(args.device)
    dtype = inference_dtype(args.dtype, device)
    if args.dtype == "auto":
        logger.info("computing in %s on %s (--dtype auto; --dtype fp32 for the reference precision)",
                    str(dtype).removeprefix("torch."), device)  # fmt: skip
    allow = args.allow_nonfinite
    model = _load_exported(args, device) or load_model(
        args.model, device=device, dtype=dtype, allow_nonfinite=allow
    )
    task = getattr(model, "task", None)
    if task is None:
        raise ValueError(
            f"--model {args.model} is a plain backbone checkpoint; --task {args.task} needs {a_task(args.task)} model"
        )
    if task != args.task:
        raise ValueError(
            f"--model {args.model} is {a_task(task)} checkpoint, but --task {args.task} was given"
        )
    mask_model = None
    if args.mask_model:
        mask_model = load_model(args.mask_model, device=device, dtype=dtype, allow_nonfinite=allow)
        mask_task = getattr(mask_model, "task", None)
        if mask_task is None or not runner_for(mask_task).foreground:  # a person-mask model
            raise ValueError(
                f"--mask-model {args.mask_model} must be a {MASK_TASK} checkpoint, got "
                f"{a_task(mask_task or 'backbone')} one"
            )
    detector = _load_detector(args, device) if runner_for(args.task).uses_boxes else None
    return Predictor(
        args.task,
        model,
        input_size=tuple(args.input_size) if args.input_size else None,
        flip_test=args.flip_test,
        mask_model=mask_model,
        detector=detector,
        batch_size=args.batch_size,
        compile=args.compile,
        max_boxes=args.max_boxes,
        max_pixels=_max_pixels(args),
    )


def _max_pixels(args) -> int | None:
    return int(args.max_megapixels * 1e6) if args.max_megapixels > 0 else None


def _load_exported(args, device):
    """The model of ``--model FILE.onnx|.pt2`` (from `sapiens2 export`), else None."""
    from sapiens2.export import is_exported, load_exported

    if not is_exported(args.model):
        return None
    if args.compile:
        raise ValueError("--compile applies to checkpoints; an exported --model is run as it is")
    from sapiens2.device import resolve_dtype

    model = load_exported(args.model, device=device)
    if args.dtype != "auto" and resolve_dtype(args.dtype) != model.anchor.dtype:
        raise ValueError(
            f"--model {args.model} was exported in {model.contract.input.dtype}; --dtype "
            f"{args.dtype} cannot change it (leave --dtype auto)"
        )
    return model


def _load_detector(args, device):
    """The pose person detector chosen by ``--detector`` (None: seg mask or whole image)."""
    from sapiens2.detect import HUB_REPO, cached_detector_path, load_detector
    from sapiens2.export import is_exported, load_exported

    choice = args.detector
    if is_exported(choice):  # a detector written by `sapiens2 export --task detector`
        return load_exported(choice, device=device)
    if choice == "auto":
        cached = cached_detector_path()
        if cached is None:
            logger.info("no RTMDet weights in the hub cache; person boxes from %s",
                        "the --mask-model" if args.mask_model else "the whole image")  # fmt: skip
            return None
        return load_detector(cached, device=device, allow_nonfinite=args.allow_nonfinite)
    if choice in ("seg", "none"):
        if choice == "seg" and not args.mask_model:
            raise ValueError("--detector seg needs a --mask-model (a seg checkpoint)")
        return None
    source = HUB_REPO if choice == "rtmdet" else choice
    return load_detector(source, device=device, allow_nonfinite=args.allow_nonfinite)


def _either(tasks: tuple[str, ...]) -> str:
    """``"pose"``, ``"normal, pointmap or albedo"``."""
    return tasks[0] if len(tasks) == 1 else f"{', '.join(tasks[:-1])} or {tasks[-1]}"


def run(args: argparse.Namespace) -> int:
    from sapiens2.device import resolve_device
    from sapiens2.errors import UsageError
    from sapiens2.inference.media import expand_media
    from sapiens2.inference.runners import runner_for, runner_tasks
    from sapiens2.outdir import OutputLock, command_line, prepare_out_dir

    if getattr(args, "engine", "local") == "local":  # Ray actors resolve it where they run
        resolve_device(args.device)  # an unavailable device is reported before anything is read
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    runner = runner_for(args.task)
    if args.boxes and not runner.uses_boxes:
        raise ValueError(
            f"--boxes is only used with --task {_either(runner_tasks(uses_boxes=True))}"
        )
    for flag, given in (("--coco-gt", args.coco_gt), ("--openpose", args.openpose)):
        if given and not runner.uses_boxes:
            raise UsageError(
                f"{flag} is only used with --task {_either(runner_tasks(uses_boxes=True))}"
            )
    if args.mask_dir and not runner.uses_masks:
        raise ValueError(
            f"--mask-dir is only used with --task {_either(runner_tasks(uses_masks=True))}"
        )
    if args.io_workers is not None and args.io_workers < 1:
        raise ValueError(f"--io-workers must be >= 1, got {args.io_workers}")
    if args.mask_dir and not args.mask_dir.is_dir():
        raise FileNotFoundError(f"--mask-dir {args.mask_dir} is not a folder")
    if args.input_size is not None and min(args.input_size) < 1:
        raise UsageError(f"--input-size must be two positive numbers, got {args.input_size}")
    if args.max_boxes < 1 or args.max_megapixels < 0:
        raise UsageError("--max-boxes must be >= 1 and --max-megapixels >= 0")
    if getattr(args, "engine", "local") == "ray":
        from sapiens2.cli.predict_ray import run_ray

        return run_ray(args)
    if isinstance(args.out, str):
        raise UsageError(
            f"--out {args.out}: local predict writes a folder; URLs are for --engine ray "
            "--output-format shards|parquet"
        )
    items = expand_media(args.media)
    if not items:
        raise UsageError("no input to read (special files are skipped)")
    prepare_out_dir(args.out, [item.path for item in items])
    with OutputLock(args.out, command_line()):
        return _run(args, items)


def _run(args: argparse.Namespace, items) -> int:
    from sapiens2.inference.boxes import load_boxes_json, unmatched_keys
    from sapiens2.inference.coco import load_coco_images
    from sapiens2.inference.engine import default_io_workers, predict_items
    from sapiens2.inference.writer import PredictionWriter

    boxes_table, coco = None, None
    if args.coco_gt:
        coco = load_coco_images(args.coco_gt, max_boxes=args.max_boxes)
        boxes_table = None if args.boxes else coco.boxes
    if args.boxes:
        names = coco.names if coco is not None else None
        boxes_table = load_boxes_json(args.boxes, max_boxes=args.max_boxes, image_names=names)
    if boxes_table is not None:
        source = args.boxes or args.coco_gt
        unknown, missing = unmatched_keys(boxes_table, items)
        if unknown and args.boxes:  # a COCO file's other images are expected
            logger.warning("%s: %d key(s) match no input and are not used: %s", source,
                           len(unknown), ", ".join(sorted(unknown)[:10]))  # fmt: skip
        if missing:
            logger.warning("%s: no boxes for %d image(s), which get the detector's or the whole "
                           "image's: %s", source, len(missing), ", ".join(missing[:10]))  # fmt: skip
    predictor = _load_predictor(args)
    writer = PredictionWriter(
        args.task,
        args.out,
        kpt_thr=args.kpt_thr,
        save_npy=args.save_npy,
        coco_layout=args.coco_layout,
        pictures=args.pictures,
        background=args.background,
        image_ids=coco.ids if coco is not None else None,
        openpose=args.openpose,
    )
    logger.info(
        "%s model on %s, input %dx%d, %d inputs",
        args.task,
        predictor.device,
        *predictor.input_size,
        len(items),
    )
    stats = predict_items(
        predictor,
        items,
        writer,
        batch_size=args.batch_size,
        boxes_table=boxes_table,
        mask_dir=args.mask_dir,
        io_workers=args.io_workers or default_io_workers(),
        render_processes=args.render_processes,
        render_workers=args.io_workers,
        max_pixels=_max_pixels(args),
    )
    logger.info(
        "time: %.1f s in predict (pre-processing, forward, decoding), %.1f s waiting for decoded "
        "frames, %.1f s waiting for the writer (%.1f s of writing in the background)",
        stats.predict_seconds,
        stats.read_wait_seconds,
        stats.write_wait_seconds,
        stats.write_seconds,
    )
    done, skipped = stats.frames, stats.skipped
    bad = {path for path, _ in skipped}
    failed = {name for name, _ in stats.failed}
    images = sum(
        item.kind == "image" and item.path not in bad and item.name not in failed for item in items
    )
    videos = sum(item.kind == "video" and item.path not in bad for item in items)
    summary = (
        f"{args.task}: {done} frame(s) ({images} image(s), {done - images} video frame(s) "
        f"from {videos} video(s)) in {stats.seconds:.1f} s"
    )
    if predictor.runner.uses_boxes:
        summary += f", {stats.people} person instance(s)"
    summary += f"; outputs in {args.out}"
    if skipped:
        summary += f"; skipped {len(skipped)} unreadable file(s): " + ", ".join(
            str(p) for p, _ in skipped
        )
    if stats.failed:
        summary += f"; prediction failed for {len(stats.failed)} frame(s): " + ", ".join(
            f"{name} ({reason})" for name, reason in stats.failed[:10]
        )
    print(summary)
    if done == 0:
        logger.error("nothing was predicted")
        return 1
    return 1 if stats.failed else 0

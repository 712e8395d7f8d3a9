"""Prediction at scale on Ray Data (``sapiens2 predict --engine ray``): resumable, and honest
about the inputs it could not read.

The driver lists the inputs (:func:`list_inputs`: image files, folders, globs, our tar shards, on
the local disk or anywhere ``fsspec`` reaches), drops those whose outputs a previous run finished,
and streams the rest through two Ray Data stages:

1. **read** (Ray tasks, CPU): fetch each image's bytes (a whole file, or one ranged read of a
   shard member) and decode them exactly as local ``predict`` does;
2. **predict** (a pool of Ray actors, one model load each): resize for the network, batched
   forward, post-processing, and the per-image files rendered by the same
   :class:`~sapiens2.inference.writer.PredictionWriter` as local ``predict``: written to the same
   layout, or packed into a WebDataset shard or a Parquet file per batch
   (:mod:`sapiens2.inference.ray_outputs`; ``--out`` may then be an fsspec URL).

After writing a batch's outputs an actor writes that batch's *manifest*
(``<out>/.sapiens2-ray/manifests/<id>.json``, ``<id>`` the shard's name for shards and Parquet):
for every row, done (with the size of each file it depends on: its own files, or its shard),
unreadable or failed (with the reason). A manifest is written last and atomically, so the work it
lists survives a crash of the driver or of a worker; a re-run skips every item whose manifest
entry is done and whose files are all still there with the recorded sizes, and removes the shards
that no manifest lists. Outputs that need the
whole run (pose ``predictions.json`` / ``coco_results.json``) are written by the driver at the end
from the results kept beside the manifests, in input order: the same bytes as local ``predict``.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.cluster import ray_session
from sapiens2.data.image import decode_image_bytes, read_image
from sapiens2.data.shards import IMAGE_EXTS as SHARD_IMAGE_EXTS
from sapiens2.data.shards import ShardIndex, is_url
from sapiens2.errors import DataError, UsageError
from sapiens2.inference.media import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Frame,
    MediaItem,
    expand_media,
    unique_names,
)
from sapiens2.inference.ray_outputs import (
    CONTAINER_DIRS,
    OUTPUT_FORMATS,
    OutputStore,
    ShardNumbers,
    batch_output,
    next_number,
)
from sapiens2.limits import DEFAULT as DEFAULT_PIXELS

logger = logging.getLogger(__name__)

__all__ = [
    "InputRef",
    "RayOptions",
    "RayPredictStats",
    "list_inputs",
    "predict_ray",
    "read_input",
]

STATE_DIR = ".sapiens2-ray"  # under --out: run.json, manifests/
REPORT_NAME = "ray_report.json"
_VERSION = 1


# ---------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class InputRef:
    """One image to predict on.

    Attributes:
        name: output name (unique in the run; the same as local ``predict`` gives a file).
        source: the image file, or the shard holding it (a path or an fsspec URL).
        key: what ``--boxes`` looks it up by: the file name, or ``<key>.<ext>`` in a shard.
        offset, size: the member's bytes in the shard (-1 for a whole file).
    """

    name: str
    source: str
    key: str
    offset: int = -1
    size: int = -1


def _is_remote(source: str) -> bool:
    return is_url(source) and not source.startswith("file://")


def _suffix(name: str) -> str:
    return Path(name.split("?", 1)[0]).suffix.lower()


def _shard_members(shards: list[str]) -> list[tuple[str, str, str, str, int, int]]:
    """``(stem, suffix, key, shard, offset, size)`` of each sample's image in our ``.tar``
    shards (read together: each shard index file is read once)."""
    index = ShardIndex(shards)
    try:
        out = []
        for entry in index.entries:
            ext = next((e for e in SHARD_IMAGE_EXTS if e in entry.members), None)
            where = index._store.display(index.paths[entry.shard])
            if ext is None:
                raise DataError(f"{where}: sample {entry.key!r} has no image member")
            offset, size = entry.members[ext]
            out.append((entry.key, "." + ext, f"{entry.key}.{ext}", where, offset, size))
        return out
    finally:
        index.close()


def _url_files(source: str) -> list[str]:
    """The image and ``.tar`` files an fsspec URL names (a file, a folder, or a glob), sorted."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(source)
    if any(ch in path for ch in "*?["):
        found = sorted(fs.glob(path))
    elif fs.isdir(path):
        found = sorted(p for p in fs.ls(path, detail=False))
    elif fs.isfile(path):
        return [source]
    else:
        raise FileNotFoundError(f"input not found: {source}")
    files = [
        fs.unstrip_protocol(p)
        for p in found
        if _suffix(p) in IMAGE_EXTENSIONS or _suffix(p) == ".tar"
    ]
    if not files:
        raise FileNotFoundError(f"no image files or .tar shards in {source}")
    return files


def list_inputs(sources: Iterable[str | Path]) -> list[InputRef]:
    """The images of ``sources``, in order: image files, folders and globs (as local
    ``predict``: not recursive, the same output names), our ``.tar`` shards (one image per
    sample, named by its key) or folders of them, and fsspec URLs of any of these (``s3://``,
    ``gs://``, ``file://``, ``memory://`` ...).

    Raises:
        FileNotFoundError: an input that does not exist or holds no images.
        UsageError: a video (the Ray engine reads images; videos run on the local engine).
    """
    rows: list[tuple[str, str, str, str, int, int]] = []  # stem, suffix, key, source, off, size
    tars: list[str] = []  # consecutive shards, listed together

    def flush_tars() -> None:
        if tars:
            rows.extend(_shard_members(tars))
            tars.clear()

    def add_file(source: str) -> None:
        name = source.rstrip("/").rsplit("/", 1)[-1]
        suffix = _suffix(name)
        if suffix in VIDEO_EXTENSIONS:
            raise UsageError(
                f"{source} is a video: --engine ray predicts on images; run videos with "
                "--engine local"
            )
        if suffix == ".tar":
            tars.append(source)
            return
        flush_tars()
        rows.append(
            (name[: len(name) - len(suffix)] if suffix else name, suffix, name, source, -1, -1)
        )

    for src in sources:
        flush_tars()  # one source's shards at a time (one file system each)
        text = str(src)
        if is_url(text):
            for f in _url_files(text):
                add_file(f)
            continue
        path = Path(text)
        if (
            path.is_dir()
            and not any(_is_media(p) for p in path.iterdir())
            and any(p.suffix == ".tar" for p in path.iterdir())
        ):
            for tar in sorted(p for p in path.iterdir() if p.suffix == ".tar"):
                add_file(str(tar))
            continue
        if path.is_file() and path.suffix.lower() == ".tar":
            add_file(text)
            continue
        if not path.exists() and glob.has_magic(text):  # images and shards, in path order
            found = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
            found = [p for p in found if _is_media(p) or p.suffix == ".tar"]
            if not found:
                raise FileNotFoundError(f"no image files or .tar shards match {text!r}")
            for p in found:
                add_file(str(p))
            continue
        for item in expand_media([text]):
            add_file(str(item.path))
    flush_tars()
    names = unique_names((stem, suffix) for stem, suffix, *_ in rows)
    return [
        InputRef(name, source, key, offset, size)
        for name, (_, _, key, source, offset, size) in zip(names, rows, strict=True)
    ]


def _is_media(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS or path.suffix.lower() in VIDEO_EXTENSIONS


def read_input(source: str, offset: int = -1, size: int = -1) -> bytes:
    """The bytes of one input: a whole file, or ``size`` bytes at ``offset`` of a shard (one
    ranged read on a remote store, a positional read on the local disk)."""
    if _is_remote(source):
        import fsspec

        fs, path = fsspec.core.url_to_fs(source)
        if offset < 0:
            return fs.cat_file(path)
        data = fs.cat_file(path, start=offset, end=offset + size)
    else:
        path = Path(source.removeprefix("file://"))
        if offset < 0:
            return path.read_bytes()
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    if len(data) != size:
        raise DataError(f"{source}: truncated shard ({len(data)} of {size} bytes at {offset})")
    return data


def decode_input(ref: InputRef, max_pixels: int | None = DEFAULT_PIXELS) -> np.ndarray:
    """One input as ``(H, W, 3)`` uint8 RGB, decoded as local ``predict`` decodes a file."""
    if ref.offset < 0 and not _is_remote(ref.source):
        return read_image(ref.source.removeprefix("file://"), max_pixels)
    where = ref.source if ref.offset < 0 else f"{ref.source}:{ref.key}"
    return decode_image_bytes(read_input(ref.source, ref.offset, ref.size), where, max_pixels)


# ---------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class RayOptions:
    """How the Ray run is laid out.

    Attributes:
        address: a Ray cluster (``"auto"``, ``"ray://head:10001"``); None starts a local Ray.
        num_workers: model actors (one model load each).
        gpus_per_worker: GPUs per actor (0: CPU actors).
        cpus_per_worker: CPUs reserved per actor (its torch threads, and its writing).
        batch_size: images per forward.
        read_batch: images per read-and-decode task.
        max_pixels: images over this many pixels are reported unreadable (None: no limit).
        render_threads: threads per actor drawing and writing the outputs.
        output_format: ``files`` (the local ``predict`` layout), ``shards`` (a WebDataset tar
            per batch) or ``parquet`` (a Parquet file and a tar per batch); see
            :mod:`sapiens2.inference.ray_outputs`.
        shard_size: images per actor batch, i.e. per shard or Parquet file (shards, parquet;
            ``batch_size`` is then the forward's batch within it).
    """

    address: str | None = None
    num_workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    batch_size: int = 4
    read_batch: int = 8
    max_pixels: int | None = DEFAULT_PIXELS
    render_threads: int = 1
    output_format: str = "files"
    shard_size: int = 64

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise UsageError(f"--num-workers must be >= 1, got {self.num_workers}")
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            raise UsageError("--gpus-per-worker must be >= 0 and --cpus-per-worker > 0")
        if self.batch_size < 1 or self.read_batch < 1 or self.render_threads < 1:
            raise UsageError("batch sizes and thread counts must be >= 1")
        if self.output_format not in OUTPUT_FORMATS:
            raise UsageError(f"unknown --output-format {self.output_format!r}; expected "
                             f"{', '.join(OUTPUT_FORMATS)}")  # fmt: skip
        if self.shard_size < 1:
            raise UsageError(f"--shard-size must be >= 1, got {self.shard_size}")

    @property
    def actor_batch(self) -> int:
        """Images per actor call: a shard's, or one forward's for the files layout."""
        return self.batch_size if self.output_format == "files" else self.shard_size


@dataclass
class RayPredictStats:
    """What a Ray run did: counts, the inputs it could not read and the frames whose prediction
    failed (with reasons), and its wall time."""

    total: int = 0
    done: int = 0
    resumed: int = 0
    people: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    startup_seconds: float = 0.0
    steady_images_per_second: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------------- manifests
MANIFESTS = f"{STATE_DIR}/manifests"


def _store(out: str | Path | OutputStore) -> OutputStore:
    return out if isinstance(out, OutputStore) else OutputStore(out)


def settings_digest(settings: dict[str, Any]) -> str:
    """A digest of what decides the outputs (task, model, sizes, writer options)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _start_state(out: str | Path | OutputStore, digest: str, settings: dict[str, Any]) -> None:
    """Make the state folder; manifests of a run with other settings are dropped (their outputs
    are redone)."""
    store = _store(out)
    run_file = f"{STATE_DIR}/run.json"
    if store.size(run_file) >= 0:
        try:
            old = json.loads(store.read(run_file)).get("digest")
        except (json.JSONDecodeError, OSError, UnicodeDecodeError):
            old = None
        if old != digest:
            stale = store.list(MANIFESTS)
            if stale:
                logger.warning("%s: the settings differ from the previous run's; redoing its "
                               "%d batch(es)", store.root, sum(p.endswith(".json") for p in stale))  # fmt: skip
            for name in stale:
                store.remove(name)
    if store.is_local:
        store.local_path(MANIFESTS).mkdir(parents=True, exist_ok=True)
    body = {"version": _VERSION, "digest": digest, "settings": settings}
    store.put(run_file, json.dumps(body, indent=1, default=str).encode())


def _row_id(name: str, source: str, key: str) -> str:
    return f"{source}\0{key}\0{name}"


def _manifests(store: OutputStore, digest: str) -> Iterable[tuple[str, dict]]:
    """``(batch id, body)`` of the readable manifests of the run with ``digest``."""
    for name in store.list(MANIFESTS):
        if not name.endswith(".json"):
            continue
        try:
            body = json.loads(store.read(name))
        except (json.JSONDecodeError, OSError, UnicodeDecodeError):
            logger.warning("%s: unreadable manifest; its items are predicted again",
                           store.location(name))  # fmt: skip
            continue
        if body.get("digest") == digest:
            yield name.rsplit("/", 1)[-1].removesuffix(".json"), body


def load_done(
    out: str | Path | OutputStore, digest: str, manifests: list[tuple[str, dict]] | None = None
) -> dict[str, dict]:
    """Entries of finished items (``{row id: entry}``) whose files (per-image files, or the shard
    or Parquet file holding them) are all still there with the recorded sizes; anything else is
    predicted again. ``manifests``: :func:`_manifests` when already read."""
    store = _store(out)
    done: dict[str, dict] = {}
    sizes: dict[str, int] = {}  # a shard's size is looked up once for all its items

    def size(name: str) -> int:
        if name not in sizes:
            sizes[name] = store.size(name)
        return sizes[name]

    for batch, body in _manifests(store, digest) if manifests is None else manifests:
        for entry in body.get("items", []):
            if entry.get("status") != "done":
                continue
            files = entry.get("files", {})
            if all(size(rel) == n for rel, n in files.items()):
                entry["manifest"] = batch
                done[_row_id(entry["name"], entry["source"], entry["key"])] = entry
    return done


def _drop_orphans(store: OutputStore, manifests: list[tuple[str, dict]]) -> None:
    """Remove the shard and Parquet files that no manifest of this run lists: left by a crash
    between a shard and its manifest, or by a run with other settings (whose images are redone)."""
    listed = {c for _, body in manifests for c in body.get("containers", [])}
    orphans = [
        name
        for folder in CONTAINER_DIRS.values()
        for name in store.list(folder)
        if name not in listed and re.search(r"-\d{6,}\.(tar|parquet)($|\.)", name)
    ]
    if orphans:
        logger.info("%s: removing %d shard(s) that no manifest lists (an earlier run's)",
                    store.root, len(orphans))  # fmt: skip
    for name in orphans:
        store.remove(name)


def _save_results(store: OutputStore, name: str, results: dict[str, Any]) -> dict[str, dict]:
    """Keep results the end-of-run files need (arrays in the ``.npz`` ``name``, the rest as JSON,
    returned per image name)."""
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, dict] = {}
    for image, result in results.items():
        scalars[image] = {}
        for f in fields(result):
            value = getattr(result, f.name)
            if isinstance(value, np.ndarray):
                arrays[f"{image}/{f.name}"] = value
            elif value is not None:
                scalars[image][f.name] = value
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    store.put(name, buf.getbuffer())
    return scalars


def _load_result(cls: type, arrays, name: str, scalars: dict) -> Any:
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        key = f"{name}/{f.name}"
        if key in arrays:
            kwargs[f.name] = arrays[key]
        elif f.name in scalars:
            v = scalars[f.name]
            kwargs[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)


# ---------------------------------------------------------------------------------- stages
def _read_batch(batch: dict[str, np.ndarray], max_pixels: int | None) -> dict[str, np.ndarray]:
    """Ray task: fetch and decode a batch of inputs; failures become rows with ``error``."""
    n = len(batch["name"])
    images: list[np.ndarray] = []
    errors: list[str] = []
    for i in range(n):
        ref = InputRef(
            str(batch["name"][i]),
            str(batch["source"][i]),
            str(batch["key"][i]),
            int(batch["offset"][i]),
            int(batch["size"][i]),
        )
        try:
            images.append(decode_input(ref, max_pixels))
            errors.append("")
        except (OSError, ValueError) as err:  # DataError is a ValueError
            images.append(np.zeros((1, 1, 3), np.uint8))
            errors.append(str(err) or type(err).__name__)
    out = dict(batch)
    rgb = np.empty(n, dtype=object)
    for i, im in enumerate(images):
        rgb[i] = im
    out["rgb"] = rgb
    out["error"] = np.asarray(errors, dtype=object)
    return out


class PredictActor:
    """Ray actor: one model, batched forward, the outputs rendered by a
    :class:`~sapiens2.inference.writer.PredictionWriter` and written by the
    :class:`~sapiens2.inference.ray_outputs.BatchOutput` of the output format, one manifest per
    batch (per shard).

    Args:
        make_predictor: builds the :class:`~sapiens2.inference.Predictor` (once, in the actor).
        make_writer: builds the writer (files: its ``out`` is where the files go).
        digest: :func:`settings_digest` of the run.
        out: the ``--out`` store's root (a folder or a URL): manifests, shards, Parquet.
        output_format: ``files``, ``shards`` or ``parquet``.
        shard_numbers: a :class:`~sapiens2.inference.ray_outputs.ShardNumbers` Ray actor
            (shards, parquet).
        boxes_table: pose: person boxes by input key.
        mask_dir: dense tasks: a folder of foreground masks.
        render_threads: threads drawing and writing outputs.
        torch_threads: torch threads of a CPU actor (None: leave as is).
    """

    def __init__(
        self,
        make_predictor: Callable[[], Any],
        make_writer: Callable[[], Any],
        digest: str,
        boxes_table: dict | None = None,
        mask_dir: Path | None = None,
        render_threads: int = 1,
        torch_threads: int | None = None,
        out: str | None = None,
        output_format: str = "files",
        shard_numbers: Any = None,
    ) -> None:
        import torch

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.predictor = make_predictor()
        self.writer = make_writer()
        self.digest = digest
        self.boxes_table, self.mask_dir = boxes_table, mask_dir
        self.keep_results = _needs_results(self.writer)
        self.pool = ThreadPoolExecutor(render_threads, thread_name_prefix="sapiens2-render")
        self.store = OutputStore(out if out is not None else self.writer.out)
        number = None
        if shard_numbers is not None:
            import ray

            number = lambda: ray.get(shard_numbers.next.remote())  # noqa: E731
        self.output = batch_output(output_format)(
            self.store, self.writer, lambda f, xs: list(self.pool.map(f, xs)), number
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from sapiens2.inference.boxes import lookup_boxes
        from sapiens2.inference.engine import _item_errors
        from sapiens2.inference.media import find_mask, read_mask

        item_errors = _item_errors()
        n = len(batch["name"])
        entries: list[dict[str, Any]] = []
        frames: list[tuple[int, Frame]] = []
        boxes, masks = [], []
        for i in range(n):
            name, source, key = str(batch["name"][i]), str(batch["source"][i]), str(batch["key"][i])
            entry: dict[str, Any] = {"name": name, "source": source, "key": key}
            entries.append(entry)
            if batch["error"][i]:
                entry.update(status="unreadable", reason=str(batch["error"][i]))
                continue
            item = MediaItem(path=Path(source), kind="image", name=name)
            # a copy: Ray's batches are read-only views of its object store
            frame = Frame(item=item, name=name, rgb=np.array(batch["rgb"][i]))
            try:
                frame.prepared = self.predictor.prepare(frame.rgb)
                box = lookup_boxes(self.boxes_table, key) if self.boxes_table is not None else None
                mask = None
                if self.mask_dir:
                    path = find_mask(self.mask_dir, frame)
                    mask = read_mask(path) if path is not None else None
            except item_errors as err:
                entry.update(status="failed", reason=str(err))
                continue
            frames.append((i, frame))
            boxes.append(box)
            masks.append(mask)
        results = self._predict(
            [f for _, f in frames], boxes, masks, [entries[i] for i, _ in frames]
        )
        done = [(i, f, r) for (i, f), r in zip(frames, results, strict=True) if r is not None]
        batch_id, containers = uuid.uuid4().hex, []
        if done:
            batch_id, containers, written = self.output.write(
                [(f, r, entries[i]) for i, f, r in done]
            )
            for (i, _, result), fields_ in zip(done, written, strict=True):
                entries[i].update(status="done", people=getattr(result, "num_people", 0), **fields_)
        kept = {frame.name: result for _, frame, result in done if self.keep_results}
        if kept:
            scalars = _save_results(self.store, f"{MANIFESTS}/{batch_id}.npz", kept)
            for i, frame, _ in done:
                entries[i]["scalars"] = scalars[frame.name]
        body = {"version": _VERSION, "digest": self.digest, "format": self.output.format,
                "containers": containers, "items": entries}  # fmt: skip
        self.store.put(f"{MANIFESTS}/{batch_id}.json", json.dumps(body).encode())
        col = lambda k, d: np.asarray([e.get(k, d) for e in entries], dtype=object)  # noqa: E731
        return {
            "name": col("name", ""),
            "source": col("source", ""),
            "key": col("key", ""),
            "status": col("status", ""),
            "reason": col("reason", ""),
            "people": np.asarray([e.get("people", 0) for e in entries], np.int64),
            "finished_at": np.full(n, time.time()),  # for the steady rate (see _run_dataset)
        }

    def _predict(self, frames: list[Frame], boxes: list, masks: list, entries: list[dict]):
        """Results of ``frames`` (None for a frame whose prediction failed: its entry says why)."""
        from sapiens2.inference.engine import _input, _item_errors

        if not frames:
            return []
        item_errors = _item_errors()

        def kwargs(sel: slice) -> dict:
            kw = {}
            if self.boxes_table is not None:
                kw["boxes"] = boxes[sel]
            if self.mask_dir:
                kw["masks"] = masks[sel]
            return kw

        try:
            return self.predictor.predict([_input(f) for f in frames], **kwargs(slice(None)))
        except item_errors:
            pass
        results = []
        for j, frame in enumerate(frames):  # one by one: one bad input costs only itself
            try:
                results.append(
                    self.predictor.predict([_input(frame)], **kwargs(slice(j, j + 1)))[0]
                )
            except item_errors as err:
                logger.warning(
                    "%s: prediction failed, going on with the others: %s", frame.name, err
                )
                entries[j].update(status="failed", reason=str(err))
                results.append(None)
        return results


def _needs_results(writer) -> bool:
    """Whether the writer's outputs keep per-frame records for end-of-run files (pose JSON)."""
    from sapiens2.inference.outputs import Outputs

    return type(writer.outputs).commit is not Outputs.commit


# ---------------------------------------------------------------------------------- driver
def _local_cpus(options: RayOptions) -> int:
    """CPUs of a local Ray: the actors' plus one for reading."""
    return math.ceil(options.num_workers * options.cpus_per_worker) + 1


def predict_ray(
    inputs: Sequence[InputRef],
    make_predictor: Callable[[], Any],
    make_writer: Callable[[], Any],
    *,
    options: RayOptions | None = None,
    settings: dict[str, Any] | None = None,
    boxes_table: dict | None = None,
    mask_dir: Path | None = None,
    result_type: type | None = None,
    progress: bool = True,
    out: str | Path | None = None,
) -> RayPredictStats:
    """Predict on ``inputs`` with a pool of Ray actors, writing with ``make_writer()``'s writer
    (built in each actor, and on the driver for the end-of-run files); resumes a previous run into
    the same folder (see the module docstring) and writes ``<out>/ray_report.json``.

    Args:
        inputs: from :func:`list_inputs`.
        make_predictor, make_writer: picklable callables (``functools.partial``), called in the
            actors.
        options: the Ray layout.
        settings: what decides the outputs (task, model, flags): outputs of a run with other
            settings are not reused.
        boxes_table: pose: person boxes by input key (``load_boxes_json``).
        mask_dir: dense tasks: foreground masks (a folder every worker can read).
        result_type: the task's result class (``sapiens2.tasks.get_task(task).result``); needed
            by tasks with end-of-run files (pose), which rebuild them from the kept results.
        out: where everything goes: a folder or an fsspec URL (shards, parquet); default the
            writer's folder.
    """

    options = options or RayOptions()
    start = time.perf_counter()
    writer = make_writer()
    if out is None and writer.out is None:
        raise UsageError("predict_ray needs out= when the writer has no output folder")
    store = OutputStore(out if out is not None else writer.out)
    fmt = options.output_format
    digest = settings_digest(
        {"settings": settings or {}, "task": writer.task}
        | ({"format": fmt} if fmt != "files" else {})
    )
    _start_state(store, digest, settings or {})
    manifests = list(_manifests(store, digest))
    if fmt != "files":
        _drop_orphans(store, manifests)
    stats = RayPredictStats(total=len(inputs))
    done_before = load_done(store, digest, manifests)
    todo = [r for r in inputs if _row_id(r.name, r.source, r.key) not in done_before]
    stats.resumed = len(inputs) - len(todo)
    if stats.resumed:
        logger.info("%d of %d input(s) already done in %s; predicting the other %d",
                    stats.resumed, len(inputs), store.root, len(todo))  # fmt: skip
    finished: dict[str, dict] = {}
    if todo:
        with ray_session(options.address, _local_cpus(options)):
            finished = _run_dataset(
                todo, make_predictor, make_writer, options, digest, boxes_table, mask_dir,
                progress, stats, store,
            )  # fmt: skip
    stats.done = sum(e["status"] == "done" for e in finished.values())
    stats.people += sum(int(e.get("people", 0)) for e in done_before.values())
    _finish_outputs(writer, inputs, store, digest, result_type)
    stats.seconds = time.perf_counter() - start
    _write_report(store, stats, options)
    return stats


def _run_dataset(todo, make_predictor, make_writer, options, digest, boxes_table, mask_dir,
                 progress, stats, store) -> dict[str, dict]:  # fmt: skip
    import ray
    from tqdm import tqdm

    rows = [
        {"name": r.name, "source": r.source, "key": r.key, "offset": r.offset, "size": r.size}
        for r in todo
    ]
    blocks = max(1, min(len(rows), max(4 * options.num_workers, len(rows) // 64)))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    ds = ds.map_batches(
        _read_batch,
        fn_kwargs={"max_pixels": options.max_pixels},
        batch_size=options.read_batch,
        batch_format="numpy",
        num_cpus=min(1.0, options.cpus_per_worker),
    )
    torch_threads = max(1, int(options.cpus_per_worker)) if not options.gpus_per_worker else None
    numbers = None
    if options.output_format != "files":  # shard numbers go on from the highest so far
        start = next_number(
            store, [n for d in (MANIFESTS, *CONTAINER_DIRS.values()) for n in store.list(d)]
        )
        numbers = ray.remote(num_cpus=0)(ShardNumbers).remote(start)
    ds = ds.map_batches(
        PredictActor,
        fn_constructor_kwargs={
            "make_predictor": make_predictor,
            "make_writer": make_writer,
            "digest": digest,
            "boxes_table": boxes_table,
            "mask_dir": mask_dir,
            "render_threads": options.render_threads,
            "torch_threads": torch_threads,
            "out": store.root,
            "output_format": options.output_format,
            "shard_numbers": numbers,
        },
        compute=ray.data.ActorPoolStrategy(size=options.num_workers),
        batch_size=options.actor_batch,
        batch_format="numpy",
        num_cpus=options.cpus_per_worker,
        num_gpus=options.gpus_per_worker or None,
    )
    finished: dict[str, dict] = {}
    t0 = last = time.perf_counter()
    started = time.time()
    finished_at: list[float] = []  # when the actors finished each row (their clocks)
    with tqdm(total=len(rows), unit="img", desc="predict (ray)", disable=not progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i in range(len(batch["name"])):
                entry = {k: batch[k][i] for k in ("name", "source", "key", "status", "reason")}
                finished[_row_id(entry["name"], entry["source"], entry["key"])] = entry
                if entry["status"] == "unreadable":
                    logger.warning("skipping %s: %s", entry["source"], entry["reason"])
                    stats.unreadable.append((str(entry["source"]), str(entry["reason"])))
                elif entry["status"] == "failed":
                    stats.failed.append((str(entry["name"]), str(entry["reason"])))
                else:
                    stats.people += int(batch["people"][i])
            bar.update(len(batch["name"]))
            now = time.perf_counter()
            finished_at.extend(float(t) for t in batch["finished_at"])
            if now - last > 30:
                n = len(finished)
                logger.info("%d/%d image(s), %.1f img/s", n, len(rows), n / (now - t0))
                last = now
    # start-up (actors started, models loaded) ends with the first finished batch; the steady
    # rate counts the rows finished after it, over the time from it to the last one
    if finished_at:
        finished_at.sort()
        stats.startup_seconds = finished_at[0] - started
        later = sum(t > finished_at[0] for t in finished_at)
        if later and finished_at[-1] > finished_at[0]:
            stats.steady_images_per_second = later / (finished_at[-1] - finished_at[0])
    return finished


def _finish_outputs(
    writer, inputs: Sequence[InputRef], store: OutputStore, digest: str, cls: type | None
) -> None:
    """The end-of-run files (pose JSON), from every finished item's kept result, in input order,
    into the store's root."""
    if not _needs_results(writer):
        writer.close(store)
        return
    if cls is None:
        raise UsageError(f"predict_ray needs the result_type of the {writer.task} task")
    done = load_done(store, digest)
    arrays: dict[str, Any] = {}
    for ref in inputs:
        entry = done.get(_row_id(ref.name, ref.source, ref.key))
        if entry is None:
            continue
        batch = entry["manifest"]
        if batch not in arrays:
            arrays[batch] = np.load(io.BytesIO(store.read(f"{MANIFESTS}/{batch}.npz")))
        result = _load_result(cls, arrays[batch], ref.name, entry.get("scalars", {}))
        item = MediaItem(path=Path(ref.source), kind="image", name=ref.name)
        writer.outputs.commit(Frame(item=item, name=ref.name), result)
    writer.close(store)


def _write_report(store: OutputStore, stats: RayPredictStats, options: RayOptions) -> None:
    report = {
        "images": stats.total,
        "done_now": stats.done,
        "done_before": stats.resumed,
        "unreadable": [{"input": s, "reason": r} for s, r in stats.unreadable],
        "failed": [{"name": n, "reason": r} for n, r in stats.failed],
        "seconds": round(stats.seconds, 3),
        "images_per_second": round(stats.images_per_second, 3),
        "startup_seconds": round(stats.startup_seconds, 3),
        "steady_images_per_second": round(stats.steady_images_per_second, 3),
        "workers": options.num_workers,
        "gpus_per_worker": options.gpus_per_worker,
        "output_format": options.output_format,
    }
    store.put(REPORT_NAME, (json.dumps(report, indent=1) + "\n").encode())

"""Where ``sapiens2 predict --engine ray`` puts each actor batch (``--output-format``).

- ``files``: the per-image files of local ``predict``, in the same ``--out`` layout;
- ``shards``: one WebDataset tar per batch, ``<out>/shards/<task>-NNNNNN.tar``, holding the same
  files as members ``<key>.<ext>`` (``im0.jpg``, ``im0.seg.png``: the file ``<name>_seg.png``
  becomes ``<key>.seg.png``) with exactly the bytes the files layout has;
- ``parquet``: one Parquet file per batch, ``<out>/parquet/<task>-NNNNNN.parquet``, one row per
  image (names, size, task, pose boxes / keypoints / scores as list columns), and beside it a tar
  ``<task>-NNNNNN.tar`` with that batch's files (dense maps, pictures) as in ``shards``.

All of them go through one :class:`OutputStore`: a local folder, or any fsspec URL (``s3://``,
``gs://``, ``file://``, ...). A shard or Parquet file is written whole (a local ``.partial`` file
renamed into place; one ``put`` on an object store, where an object appears whole or not at all),
and its manifest after it (see :mod:`sapiens2.inference.ray_engine`).
"""

from __future__ import annotations

import io
import logging
import os
import re
import tarfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sapiens2.data.shards import is_url
from sapiens2.errors import UsageError
from sapiens2.inference.outputs import Buffer, Outputs, Sink

logger = logging.getLogger(__name__)

__all__ = [
    "OUTPUT_FORMATS",
    "BatchOutput",
    "OutputStore",
    "ShardNumbers",
    "batch_output",
    "member_name",
    "parquet_rows",
]

OUTPUT_FORMATS = ("files", "shards", "parquet")
#: the folder (under ``--out``) of each container format
CONTAINER_DIRS = {"shards": "shards", "parquet": "parquet"}
_NUMBERED = re.compile(r"-(\d{6,})$")


# ---------------------------------------------------------------------------------- the store
class OutputStore(Sink):
    """``--out`` of a Ray run: a local folder (plain files), or an fsspec URL. Names are relative
    to the root, with ``/`` separators."""

    def __init__(self, root: str | Path) -> None:
        text = str(root)
        self.root = text.rstrip("/") if is_url(text) else str(Path(text))
        self.fs: Any = None
        if is_url(text):
            import fsspec

            self.fs, self._base = fsspec.core.url_to_fs(self.root)
            self._base = self._base.rstrip("/")

    @property
    def is_local(self) -> bool:
        """Whether names are plain local files (a path, or a ``file://`` URL)."""
        return self.fs is None or "file" in _protocols(self.fs)

    def local_path(self, name: str) -> Path:
        """The local file of ``name`` (local stores only)."""
        return Path(self._base if self.fs is not None else self.root) / name

    def location(self, name: str) -> str:
        """``name`` as the user sees it (a path or a URL)."""
        return f"{self.root}/{name}"

    def _path(self, name: str) -> str:
        return f"{self._base}/{name}"

    def put(self, name: str, data: Buffer) -> str:
        """Write ``name`` whole: a local ``<name>.partial`` renamed into place, or one ``put`` of
        the object. Returns its location."""
        if self.is_local:
            path = self.local_path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(self._path(name), bytes(data))
        return self.location(name)

    def read(self, name: str) -> bytes:
        if self.is_local:
            return self.local_path(name).read_bytes()
        return self.fs.cat_file(self._path(name))

    def size(self, name: str) -> int:
        """The size of ``name`` in bytes; -1 when it does not exist."""
        try:
            if self.is_local:
                return self.local_path(name).stat().st_size
            self.fs.invalidate_cache(self._path(name))  # the actors write in other processes
            return int(self.fs.size(self._path(name)))
        except OSError:
            return -1

    def list(self, folder: str) -> list[str]:
        """The names of the files directly in ``folder`` (relative to the root), sorted."""
        if self.is_local:
            path = self.local_path(folder)
            found = [p.name for p in path.iterdir() if p.is_file()] if path.is_dir() else []
        else:
            self.fs.invalidate_cache(self._path(folder))  # listings cached before the actors wrote
            try:
                listed = self.fs.ls(self._path(folder), detail=False)
            except FileNotFoundError:
                listed = []
            found = [p.rstrip("/").rsplit("/", 1)[-1] for p in listed]
        return sorted(f"{folder}/{n}" for n in found)

    def remove(self, name: str) -> None:
        try:
            if self.is_local:
                self.local_path(name).unlink()
            else:
                self.fs.rm_file(self._path(name))
        except FileNotFoundError:
            pass


def _protocols(fs: Any) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


def check_out(out: str | Path, output_format: str) -> None:
    """Refuse an ``--out`` the run cannot write (one line each).

    Raises:
        UsageError: an unknown format, a URL for the files layout, ``memory://`` (one process's
            store: the Ray workers cannot see it), or a Parquet run without pyarrow.
    """
    if output_format not in OUTPUT_FORMATS:
        raise UsageError(
            f"unknown --output-format {output_format!r}; expected {', '.join(OUTPUT_FORMATS)}"
        )
    text = str(out)
    if is_url(text) and text.startswith("memory://"):
        raise UsageError(
            f"--out {text}: a memory:// store lives in one process and the Ray workers write "
            "in their own; use a path, file:// or an object store (s3://, gs://)"
        )
    if is_url(text) and not text.startswith("file://") and output_format == "files":
        raise UsageError(
            f"--out {text}: --output-format files writes a folder; an object-store --out needs "
            "--output-format shards or parquet"
        )
    if output_format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageError(
                "--output-format parquet needs pyarrow (pip install 'sapiens2[curate]')"
            ) from None


# ---------------------------------------------------------------------------------- naming
def member_name(name: str, file: str) -> str:
    """The shard member of the file ``file`` (named as in the files layout) of the image
    ``name``: ``<key>.<ext>``, the key being ``name`` with dots made ``_`` (WebDataset keys end at
    the first dot) and ``<name>_seg.png`` becoming ``<key>.seg.png``."""
    if not file.startswith(name) or file[len(name) : len(name) + 1] not in ("_", "."):
        raise ValueError(f"output file {file!r} is not named after its image {name!r}")
    return name.replace(".", "_") + "." + file[len(name) + 1 :]


class ShardNumbers:
    """Hands out shard numbers to the actors (a Ray actor of its own, ``num_cpus=0``)."""

    def __init__(self, start: int) -> None:
        self._next = start

    def next(self) -> int:
        n, self._next = self._next, self._next + 1
        return n


def next_number(store: OutputStore, names: Sequence[str]) -> int:
    """One past the highest shard number among ``names`` (container files, manifests)."""
    numbers = [-1]
    for name in names:
        stem = name.rsplit("/", 1)[-1].split(".", 1)[0]
        match = _NUMBERED.search(stem)
        if match:
            numbers.append(int(match.group(1)))
    return max(numbers) + 1


# ---------------------------------------------------------------------------------- batches
class BatchOutput:
    """Writes one actor batch's outputs, and says what the manifest records of it.

    Args:
        store: the ``--out`` store.
        writer: the actor's :class:`~sapiens2.inference.writer.PredictionWriter`.
        pool_map: maps a function over the batch (the actor's render threads).
        shard_number: the next shard number (container formats; None for files).
    """

    format = "files"

    def __init__(
        self,
        store: OutputStore,
        writer: Any,
        pool_map: Callable[[Callable, list], Any],
        shard_number: Callable[[], int] | None = None,
    ) -> None:
        self.store, self.writer, self.map = store, writer, pool_map
        self.shard_number = shard_number

    def write(self, done: list[tuple[Any, Any, dict]]) -> tuple[str, list[str], list[dict]]:
        """Write ``[(frame, result, row)]`` (``row``: the input's ``name``, ``source``, ``key``);
        returns the batch's id (its manifest's name), the
        containers written (names in the store), and per frame what its manifest entry gets:
        ``files`` (every file it depends on, with its size) and the format's own fields."""
        out = Path(self.writer.out)

        def render(item: tuple[Any, Any, dict]) -> dict[str, int]:
            rendered = self.writer.render(item[0], item[1])
            return {p.relative_to(out).as_posix(): p.stat().st_size for p in rendered.paths}

        return uuid.uuid4().hex, [], [{"files": files} for files in self.map(render, done)]


class ShardOutput(BatchOutput):
    """A batch as one WebDataset tar, ``shards/<task>-NNNNNN.tar``."""

    format = "shards"

    def _id(self) -> str:
        assert self.shard_number is not None
        return f"{self.writer.task}-{self.shard_number():06d}"

    def _tar(self, name: str, done: list[tuple[Any, Any, dict]]) -> tuple[int, list[list[str]]]:
        """Write the batch's files as ``name`` (a tar); returns its size and each frame's
        member names (size -1 and no tar when no frame has files)."""
        rendered = self.map(lambda item: self.writer.render_members(item[0], item[1]), done)
        buf = io.BytesIO()
        members: list[list[str]] = []
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for (frame, _, _), files in zip(done, rendered, strict=True):
                members.append([])
                for file, data in files:
                    member = member_name(frame.name, file)
                    info = tarfile.TarInfo(member)
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    tar.addfile(info, io.BytesIO(data))
                    members[-1].append(member)
        if not any(members):
            return -1, members
        self.store.put(name, buf.getbuffer())
        return buf.getbuffer().nbytes, members

    def write(self, done):
        batch = self._id()
        shard = f"{CONTAINER_DIRS['shards']}/{batch}.tar"
        size, members = self._tar(shard, done)
        files = {shard: size} if size >= 0 else {}
        entries = [{"files": files, "shard": shard, "members": m} for m in members]
        return batch, list(files), entries


class ParquetOutput(ShardOutput):
    """A batch as one Parquet file, ``parquet/<task>-NNNNNN.parquet`` (a row per image), and its
    files as a tar beside it (as in :class:`ShardOutput`)."""

    format = "parquet"

    def write(self, done):
        import pyarrow as pa
        import pyarrow.parquet as pq

        batch = self._id()
        folder = CONTAINER_DIRS["parquet"]
        shard, table_name = f"{folder}/{batch}.tar", f"{folder}/{batch}.parquet"
        size, members = self._tar(shard, done)
        rows = parquet_rows(
            self.writer.task, self.writer.outputs, done, shard if size >= 0 else None, members
        )
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=parquet_schema(self.writer.outputs)), buf)
        self.store.put(table_name, buf.getbuffer())
        files = {table_name: buf.getbuffer().nbytes}
        if size >= 0:
            files[shard] = size
        entries = [{"files": files, "parquet": table_name, "shard": shard, "members": m}
                   for m in members]  # fmt: skip
        return batch, list(files), entries


def parquet_schema(outputs: Outputs) -> Any:
    """The Parquet columns of a task's outputs: the common ones, then the task's own
    (:meth:`Outputs.table_columns`; docs/scale.md has the table)."""
    import pyarrow as pa

    columns = [
        ("name", pa.string()),
        ("source", pa.string()),
        ("key", pa.string()),
        ("task", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("shard", pa.string()),
        ("members", pa.list_(pa.string())),
    ]
    return pa.schema(columns + outputs.table_columns())


def parquet_rows(
    task: str,
    outputs: Outputs,
    done: list[tuple[Any, Any, dict]],
    shard: str | None,
    members: list[list[str]],
) -> list[dict[str, Any]]:
    """One row per ``(frame, result, row)``: the input, the shard and members of its files, and
    the task's own values (pose: boxes, box scores, keypoints ``(x, y)``, keypoint scores)."""
    rows = []
    for (frame, result, ref), names in zip(done, members, strict=True):
        h, w = frame.rgb.shape[:2]
        rows.append(
            {
                "name": frame.name,
                "source": ref["source"],
                "key": ref["key"],
                "task": task,
                "width": w,
                "height": h,
                "shard": shard if names else None,
                "members": names,
                **outputs.table_values(result),
            }
        )
    return rows


def batch_output(output_format: str) -> type[BatchOutput]:
    """The :class:`BatchOutput` class of ``--output-format``."""
    return {"files": BatchOutput, "shards": ShardOutput, "parquet": ParquetOutput}[output_format]

"""Input listing and byte access: image folders, tar shards and URL lists, through fsspec.

The driver lists *units* only (image files and whole tar shards), never the images inside the tars:
a worker expands a tar into its members while streaming it, so listing a billion-image pool stays a
listing of its shards. Every image gets a stable ``uid``: the URI of the file, or
``<tar URI>#<member name>`` for a tar member; the output order, the dedup tie-breaks and the sampling
all derive from uids, never from arrival order.
"""

from __future__ import annotations

import logging
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec

logger = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
LIST_EXTS = (".txt", ".lst")


@dataclass(frozen=True)
class Unit:
    """One listed input: an image file (``kind="file"``) or a tar shard (``kind="tar"``)."""

    uri: str
    kind: str


@dataclass(frozen=True)
class Item:
    """One image's bytes and where they came from.

    Attributes:
        uid: stable id (``uri`` or ``uri#member``).
        uri: file or tar URI.
        member: tar member name ("" for plain files).
        offset: byte offset of the member's data in the tar (-1 for plain files).
        size: number of bytes.
        data: the encoded image bytes (b"" when reading failed).
        error: why the bytes could not be read ("" when fine).
    """

    uid: str
    uri: str
    member: str
    offset: int
    size: int
    data: bytes
    error: str = ""


def _ext(name: str) -> str:
    return Path(name.split("?", 1)[0]).suffix.lower()


def _kind(uri: str) -> str | None:
    ext = _ext(uri)
    if ext in IMAGE_EXTS:
        return "file"
    if ext == ".tar":
        return "tar"
    return None


def _join(protocol: str, path: str) -> str:
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def list_units(source: str) -> list[Unit]:
    """List the images and tar shards of ``source``, sorted by URI.

    Args:
        source: a local folder or fsspec URL of one (searched recursively for images and ``.tar``
            files), one image / ``.tar`` file, a glob (``s3://bucket/pool/*.tar``), or a ``.txt`` /
            ``.lst`` file holding one image / tar URI per line (``#`` comments and blank lines
            ignored).

    Returns:
        The listed units; a source that lists nothing is an error.
    """
    fs, path = fsspec.core.url_to_fs(source)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    units: list[Unit] = []
    if any(ch in path for ch in "*?[") or fs.isdir(path):
        found = (
            fs.glob(path, detail=True)
            if any(ch in path for ch in "*?[")
            else fs.find(path, detail=True)
        )
        for p in sorted(found):
            kind = _kind(p)
            if kind is None:
                continue
            if found[p].get("type") != "file":  # FIFOs, devices, links to them: never read
                logger.warning("%s: not a regular file, skipped", p)
                continue
            units.append(Unit(_join(protocol, p), kind))
    elif fs.isfile(path):
        if _ext(path) in LIST_EXTS:
            with fs.open(path, "rt") as f:
                for n, line in enumerate(f, 1):
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    kind = _kind(line)
                    if kind is None:
                        raise ValueError(
                            f"{source} line {n}: {line!r} is neither an image ({', '.join(IMAGE_EXTS)}) nor a .tar"
                        )
                    units.append(Unit(line, kind))
        else:
            kind = _kind(path)
            if kind is None:
                raise ValueError(
                    f"{source}: not an image, a .tar shard or a URL list ({', '.join(LIST_EXTS)})"
                )
            units.append(Unit(source, kind))
    elif fs.exists(path):
        raise ValueError(f"curation input {source} is not a regular file or folder")
    else:
        raise FileNotFoundError(f"curation input {source} does not exist")
    if not units:
        raise ValueError(f"{source}: no images ({', '.join(IMAGE_EXTS)}) or .tar shards found")
    return units


def local_path(uri: str) -> Path | None:
    """The local path of a ``file://`` or plain URI (None for other protocols)."""
    if "://" not in uri:
        return Path(uri)
    if uri.startswith(("file://", "local://")):
        return Path(uri.split("://", 1)[1])
    return None


def _special(uri: str) -> bool:
    """Whether ``uri`` is a local path that exists but is no regular file (a FIFO, a device or a
    link to one): opening it could block forever or read without end."""
    path = local_path(uri)
    try:
        return path is not None and not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False  # missing: reading reports it


def iter_unit(unit: Unit, max_bytes: int) -> Iterator[Item]:
    """Yield the image(s) of a unit with their bytes; read failures become items with ``error``
    (``not_regular_file`` for FIFOs and devices, which are never opened)."""
    if _special(unit.uri):
        logger.warning("%s: not a regular file, skipped", unit.uri)
        yield Item(unit.uri, unit.uri, "", -1, 0, b"", "not_regular_file")
        return
    if unit.kind == "file":
        try:
            with fsspec.open(unit.uri, "rb") as f:
                size = f.size if getattr(f, "size", None) is not None else -1
                if size > max_bytes:
                    yield Item(unit.uri, unit.uri, "", -1, size, b"", "too_large")
                    return
                data = f.read()
        except (OSError, ValueError) as e:
            logger.warning("%s: cannot read: %s", unit.uri, e)
            yield Item(unit.uri, unit.uri, "", -1, 0, b"", "fetch_error")
            return
        yield Item(unit.uri, unit.uri, "", -1, len(data), data)
        return
    try:
        with fsspec.open(unit.uri, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for m in tar:
                if not m.isfile() or _ext(m.name) not in IMAGE_EXTS:
                    continue
                uid = f"{unit.uri}#{m.name}"
                if m.size > max_bytes:
                    yield Item(uid, unit.uri, m.name, m.offset_data, m.size, b"", "too_large")
                    continue
                f = tar.extractfile(m)
                data = f.read() if f is not None else b""
                yield Item(uid, unit.uri, m.name, m.offset_data, m.size, data)
    except (OSError, tarfile.TarError) as e:
        logger.warning("%s: unreadable tar shard: %s", unit.uri, e)
        yield Item(unit.uri, unit.uri, "", -1, 0, b"", "unreadable_tar")


def read_item(uri: str, member: str, offset: int, size: int) -> bytes:
    """The bytes of one listed image again (a positional read for a tar member)."""
    with fsspec.open(uri, "rb") as f:
        if offset < 0:
            return f.read()
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise OSError(f"{uri}#{member}: truncated read ({len(data)} of {size} bytes)")
    return data

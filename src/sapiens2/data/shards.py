"""WebDataset-style tar shards: a deterministic writer and a random-access reader.

A shard is a plain (USTAR) tar file named ``<split>-%06d.tar``; one sample is the consecutive members
``<key>.<ext>`` sharing a key, e.g. ``0007.rgb.png``, ``0007.seg.png``, ``0007.pose.json`` (the
extensions of :data:`sapiens2.data.formats.SHARD_EXT`). Image-only shards for pretraining hold one
image per key with any image extension (``.jpg``, ``.png``, ...), of any size.

The writer is byte-deterministic (members in the given order, zero mtimes/owners) and also writes
``<split>-index.json`` with every member's data offset; the same file is a ``wids`` shard descriptor
(``__kind__``, ``wids_version``, ``shardlist`` with each shard's ``url``, ``nsamples`` and
``filesize``), so ``wids.ShardListDataset("<split>-index.json")`` reads our shards too. The reader
uses that index (or scans the tar headers when it is missing or stale) and then reads members with
positional reads, so a map-style dataset on top of it can be used with any number of DataLoader
workers and ranks; ordering, splitting and mid-epoch resumption are handled by
:mod:`sapiens2.data.loader`.

Shards may live anywhere ``fsspec`` reaches (``s3://``, ``gs://``, ``https://``, ``memory://``, ...):
the reader then fetches each member with one ranged read. Local paths and ``file://`` URLs keep the
``os.pread`` fast path (plain seek + read where ``os.pread`` does not exist, as on Windows).
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.data.formats import (
    IMAGE_SUFFIXES,
    SHARD_EXT,
    DataError,
    DatasetFolder,
    check_coco_structure,
    decode_image,
    encode_camera,
    encode_npy,
    encode_png,
)

__all__ = [
    "IMAGE_EXTS",
    "ShardIndex",
    "ShardWriter",
    "encode_sample",
    "write_folder_shards",
    "write_image_shards",
]

logger = logging.getLogger(__name__)

#: member extensions accepted as "the image" of a sample in image-only mode, in order of preference
IMAGE_EXTS = ("rgb.png", "jpg", "jpeg", "png", "webp", "bmp")

_INDEX_VERSION = 1
_HAS_PREAD = hasattr(os, "pread")


def _check_key(key: str) -> None:
    if not key or "." in key or "/" in key or "\\" in key or len(key) > 80 or not key.isprintable():
        raise ValueError(
            f"shard key {key!r} is invalid: keys must be 1-80 printable characters without '.', '/' or '\\'"
        )


def encode_sample(
    image: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    seg: np.ndarray | None = None,
    normal: np.ndarray | None = None,
    pointmap: np.ndarray | None = None,
    K: np.ndarray | None = None,
    albedo: np.ndarray | None = None,
    alpha: np.ndarray | None = None,
    foreground: np.ndarray | None = None,
    pose: list[dict[str, Any]] | None = None,
) -> dict[str, bytes]:
    """Encode one sample's arrays into ``{ext: bytes}`` members (order of :data:`SHARD_EXT`).

    Args:
        image: (H, W, 3) uint8 RGB. mask/seg: (H, W) uint8. normal/pointmap: (H, W, 3) float32.
        K: (3, 3) intrinsics (written as camera JSON with the image size). albedo: (H, W, 3) uint8.
        alpha: (H, W) uint8 matte. foreground: (H, W, 3) uint8 pre-multiplied by alpha.
        pose: this image's COCO annotation dicts (``goliath_wholebody_kpts`` etc.).
    """
    h, w = image.shape[:2]
    out = {SHARD_EXT["image"]: encode_png(image)}
    if mask is not None:
        out[SHARD_EXT["mask"]] = encode_png(mask)
    if seg is not None:
        out[SHARD_EXT["seg"]] = encode_png(seg)
    if normal is not None:
        out[SHARD_EXT["normal"]] = encode_npy(np.asarray(normal, dtype=np.float32))
    if pointmap is not None:
        out[SHARD_EXT["pointmap"]] = encode_npy(np.asarray(pointmap, dtype=np.float32))
    if K is not None:
        out[SHARD_EXT["camera"]] = encode_camera(K, w, h)
    if albedo is not None:
        out[SHARD_EXT["albedo"]] = encode_png(albedo)
    if alpha is not None:
        out[SHARD_EXT["alpha"]] = encode_png(alpha)
    if foreground is not None:
        out[SHARD_EXT["foreground"]] = encode_png(foreground)
    if pose is not None:
        out[SHARD_EXT["pose"]] = json.dumps(pose).encode()
    return out


class ShardWriter:
    """Write samples into ``<out_dir>/<split>-%06d.tar`` shards of ``samples_per_shard`` samples.

    Use as a context manager; :meth:`close` writes ``<split>-index.json``. Output bytes depend only on
    the samples written (deterministic).
    """

    def __init__(self, out_dir: str | Path, split: str = "train", samples_per_shard: int = 1000):
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.split = split
        self.samples_per_shard = samples_per_shard
        self.paths: list[Path] = []
        self._tar: tarfile.TarFile | None = None
        self._count = 0
        self._index: list[dict[str, Any]] = []
        self._keys: set[str] = set()

    def _open_next(self) -> None:
        self._close_current()
        path = self.out_dir / f"{self.split}-{len(self.paths):06d}.tar"
        self.paths.append(path)
        self._tar = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 (closed in _close_current)
        self._index.append({"name": path.name, "samples": []})
        self._count = 0

    def _close_current(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._index[-1]["size"] = self.paths[-1].stat().st_size
            self._tar = None

    def write(self, key: str, files: Mapping[str, bytes]) -> None:
        """Append one sample: ``files`` maps extensions (``"rgb.png"``, ``"jpg"``...) to bytes."""
        _check_key(key)
        if key in self._keys:
            raise ValueError(f"ShardWriter: duplicate key {key!r}")
        if not files:
            raise ValueError(f"ShardWriter: sample {key!r} has no files")
        if self._tar is None or self._count >= self.samples_per_shard:
            self._open_next()
        assert self._tar is not None
        self._keys.add(key)
        members = {}
        for ext, data in files.items():
            if not ext or "/" in ext or ext.startswith("."):
                raise ValueError(f"ShardWriter: bad extension {ext!r} for key {key!r}")
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            header = len(info.tobuf(self._tar.format, self._tar.encoding, self._tar.errors))
            data_offset = self._tar.offset + header
            self._tar.addfile(info, io.BytesIO(data))
            members[ext] = [data_offset, len(data)]
        self._index[-1]["samples"].append([key, members])
        self._count += 1

    def close(self) -> list[Path]:
        """Finish the last shard and write the index; returns the shard paths."""
        self._close_current()
        index = {
            "version": _INDEX_VERSION,
            "shards": self._index,
            # the wids descriptor fields (shard urls are relative to this file)
            "__kind__": "wids-shard-index-v1",
            "wids_version": 1,
            "name": self.split,
            "shardlist": [
                {"url": e["name"], "nsamples": len(e["samples"]), "filesize": e["size"]}
                for e in self._index
            ],
        }
        (self.out_dir / f"{self.split}-index.json").write_text(json.dumps(index))
        return list(self.paths)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_folder_shards(
    root: str | Path, split: str, out_dir: str | Path, samples_per_shard: int = 1000
) -> list[Path]:
    """Pack a split folder of the on-disk format into shards (all fields that exist per sample).

    Files are copied byte for byte; ``pose.json`` annotations go to ``<key>.pose.json`` by image.
    Keys are the sample ids (they must not contain dots).
    """
    folder = DatasetFolder(root, split)
    pose_path = folder.dir / "pose.json"
    anns_by_file: dict[str, list] = {}
    if pose_path.is_file():
        try:
            d = json.loads(pose_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise DataError(f"{pose_path}: not valid JSON ({e})") from e
        if not isinstance(d, dict):
            raise DataError(f"{pose_path}: a pose file is a JSON object")
        check_coco_structure({"images": [], "annotations": [], **d}, str(pose_path))
        by_id = {im["id"]: Path(im["file_name"]).stem for im in d.get("images", [])}
        for stem in by_id.values():
            anns_by_file.setdefault(stem, [])
        for a in d.get("annotations", []):
            if a.get("image_id") not in by_id:
                raise DataError(f"{pose_path}: annotation id={a.get('id')} refers to unknown image")
            anns_by_file[by_id[a["image_id"]]].append(a)
    with ShardWriter(out_dir, split, samples_per_shard) as writer:
        for sid in folder.ids:
            files: dict[str, bytes] = {}
            img = folder.path("image", sid)
            if img.suffix.lower() != ".png":
                files[SHARD_EXT["image"]] = encode_png(decode_image(img.read_bytes(), str(img)))
            else:
                files[SHARD_EXT["image"]] = img.read_bytes()
            for field in (
                "mask", "seg", "normal", "pointmap", "camera", "albedo", "alpha", "foreground"
            ):  # fmt: skip
                p = folder.path(field, sid)
                if p.is_file():
                    files[SHARD_EXT[field]] = p.read_bytes()
            if sid in anns_by_file:
                files[SHARD_EXT["pose"]] = json.dumps(anns_by_file[sid]).encode()
            writer.write(sid, files)
    return writer.paths


def write_image_shards(
    images: Iterable[str | Path],
    out_dir: str | Path,
    split: str = "train",
    samples_per_shard: int = 1000,
) -> list[Path]:
    """Pack image files (any size; png/jpg/webp/bmp kept as-is) into image-only shards.

    Keys are ``%09d`` running numbers (file names may contain dots); a ``<key>.json`` member keeps the
    source file name.
    """
    with ShardWriter(out_dir, split, samples_per_shard) as writer:
        for i, path in enumerate(images):
            p = Path(path)
            ext = p.suffix.lower().lstrip(".")
            if f".{ext}" not in IMAGE_SUFFIXES:
                raise DataError(f"{p}: not an image file (suffix {p.suffix!r})")
            if not p.is_file():
                raise DataError(f"{p}: missing image")
            writer.write(
                f"{i:09d}", {ext: p.read_bytes(), "json": json.dumps({"source": p.name}).encode()}
            )
    return writer.paths


# --------------------------------------------------------------------------------------------------
# Reader


@dataclass(frozen=True)
class _Entry:
    shard: int
    key: str
    members: dict[str, tuple[int, int]]  # ext -> (offset, size)


def _scan_tar(
    path: str | Path, fileobj: Any, file_size: int
) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    samples: list[tuple[str, dict[str, tuple[int, int]]]] = []
    seen: set[str] = set()
    folder: str | None = None  # the folder of the current sample's members
    try:
        with tarfile.open(fileobj=fileobj, mode="r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                if m.offset_data + m.size > file_size:
                    raise DataError(
                        f"{path}: member {m.name!r} claims {m.size} bytes past the end of the file"
                    )
                where, _, base = m.name.rpartition("/")
                if "." not in base:
                    raise DataError(f"{path}: member {m.name!r} has no extension")
                key, ext = base.split(".", 1)
                if samples and samples[-1][0] == key:
                    if where != folder:
                        raise DataError(
                            f"{path}: sample key {key!r} is used in two folders ({folder!r} and "
                            f"{where!r}); keys must be unique in a shard"
                        )
                    if ext in samples[-1][1]:
                        raise DataError(f"{path}: member {m.name!r} appears twice")
                    samples[-1][1][ext] = (m.offset_data, m.size)
                    continue
                if key in seen:
                    raise DataError(f"{path}: members of sample {key!r} are not consecutive")
                seen.add(key)
                folder = where
                samples.append((key, {ext: (m.offset_data, m.size)}))
    except tarfile.TarError as e:
        raise DataError(f"{path}: not a readable tar file ({e})") from e
    return samples


def _check_index_shard(entry: Any, index: str | Path, shard_size: int) -> list:
    """The samples of one shard entry of an index, every field checked: names and keys are
    strings, offsets and sizes integers that stay inside the shard file."""

    def fail(problem: str) -> DataError:
        return DataError(f"{index}: {problem} (delete the index to rescan the tars)")

    samples = entry.get("samples")
    if not isinstance(samples, list):
        raise fail(f"shard {entry.get('name')!r}: 'samples' must be a list")
    for sample in samples:
        if not (isinstance(sample, list) and len(sample) == 2 and isinstance(sample[0], str)):
            raise fail(f"shard {entry['name']!r}: a sample must be [key, {{ext: [offset, size]}}]")
        key, members = sample
        try:
            _check_key(key)
        except ValueError as e:
            raise fail(str(e)) from None
        if not isinstance(members, dict) or not members:
            raise fail(f"sample {key!r}: members must be a non-empty object")
        for ext, span in members.items():
            if not (
                isinstance(span, list)
                and len(span) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in span)
            ):
                raise fail(f"sample {key!r} member {ext!r}: expected [offset, size] integers")
            offset, size = span
            if offset < 512 or size < 0 or offset + size > shard_size:
                raise fail(
                    f"sample {key!r} member {ext!r}: bytes {offset}..{offset + size} are not "
                    f"inside the {shard_size}-byte shard {entry['name']}"
                )
    return samples


def is_url(source: object) -> bool:
    """Whether ``source`` is an fsspec URL (``<protocol>://...``) rather than a local path."""
    return isinstance(source, str) and "://" in source


class _Store:
    """Where shards live: the local disk (``fs`` None; paths are ``Path``) or an fsspec file system
    (paths are the file system's own strings, without the protocol)."""

    def __init__(self, fs: Any = None):
        self.fs = fs

    @classmethod
    def for_sources(cls, sources: Sequence[str | Path]) -> tuple[_Store, list[Any]]:
        remote = [is_url(s) and not str(s).startswith("file://") for s in sources]
        if not any(remote):
            return cls(), [Path(str(s).removeprefix("file://")) for s in sources]
        if not all(remote):
            raise DataError("shards: mix of local paths and URLs; give one kind")
        try:
            from fsspec.core import url_to_fs
        except ImportError as e:  # pragma: no cover - fsspec is a dependency of the data extras
            raise DataError(f"reading shards from URLs needs fsspec ({e})") from e
        fs, first = url_to_fs(str(sources[0]))
        paths = [first] + [fs._strip_protocol(str(u)) for u in sources[1:]]
        return cls(fs), paths

    def display(self, path: Any) -> str:
        return str(path) if self.fs is None else self.fs.unstrip_protocol(path)

    def is_dir(self, path: Any) -> bool:
        return path.is_dir() if self.fs is None else self.fs.isdir(path)

    def is_file(self, path: Any) -> bool:
        return path.is_file() if self.fs is None else self.fs.isfile(path)

    def size(self, path: Any) -> int:
        return path.stat().st_size if self.fs is None else int(self.fs.size(path))

    def glob(self, folder: Any, pattern: str) -> list[Any]:
        if self.fs is None:
            return sorted(folder.glob(pattern))
        return sorted(self.fs.glob(f"{str(folder).rstrip('/')}/{pattern}"))

    def sibling(self, path: Any, name: str) -> Any:
        if self.fs is None:
            return path.parent / name
        return f"{self._parent(path)}/{name}"

    def basename(self, path: Any) -> str:
        return path.name if self.fs is None else str(path).rstrip("/").rsplit("/", 1)[-1]

    @staticmethod
    def _parent(path: Any) -> str:
        return str(path).rstrip("/").rsplit("/", 1)[0]

    def read_bytes(self, path: Any) -> bytes:
        return path.read_bytes() if self.fs is None else self.fs.cat_file(path)

    def open(self, path: Any) -> Any:
        return open(path, "rb") if self.fs is None else self.fs.open(path, "rb")

    def read_range(self, path: Any, offset: int, size: int) -> bytes:
        """Remote stores only: one ranged read."""
        return self.fs.cat_file(path, start=offset, end=offset + size)


class ShardIndex:
    """Random-access view of a set of shards: ``len``, ``keys``, ``read(i)``.

    Args:
        source: a directory (with ``split``: the shards ``<split>-*.tar`` in it), one ``.tar`` file,
            or a sequence of ``.tar`` files (order kept); local paths or fsspec URLs
            (``s3://bucket/shards``, ``memory://data/train-000000.tar``, ``file:///data``).
        split: split name when ``source`` is a directory.
    """

    def __init__(self, source: str | Path | Sequence[str | Path], split: str | None = None):
        sources = [source] if isinstance(source, str | Path) else list(source)
        if not sources:
            raise DataError("ShardIndex: no shard paths given")
        self._store, locations = _Store.for_sources(sources)
        self.paths = self._resolve(locations, split, single=isinstance(source, str | Path))
        index = self._load_index()
        self.entries: list[_Entry] = []
        keys: dict[str, str] = {}
        for si, path in enumerate(self.paths):
            name = self._store.basename(path)
            samples = index.get(name) if index else None
            if samples is None:
                with self._store.open(path) as f:
                    samples = _scan_tar(self._store.display(path), f, self._store.size(path))
            where = self._store.display(path)
            for key, members in samples:
                if key in keys:
                    raise DataError(f"{where}: sample key {key!r} also appears in {keys[key]}")
                keys[key] = where
                self.entries.append(
                    _Entry(si, key, {e: (int(o), int(s)) for e, (o, s) in members.items()})
                )
        self._fds: dict[int, Any] = {}
        self._pid = os.getpid()

    @property
    def location(self) -> str:
        """Where the shards are (the folder or URL of the first shard), for messages."""
        first = self._store.display(self.paths[0])
        return first.rsplit("/", 1)[0] if "/" in first else "."

    def _resolve(self, locations: list[Any], split: str | None, single: bool) -> list[Any]:
        store = self._store
        if single and store.is_dir(locations[0]):
            pattern = f"{split}-*.tar" if split else "*.tar"
            paths = store.glob(locations[0], pattern)
            if not paths:
                raise DataError(f"{store.display(locations[0])}: no shards matching {pattern!r}")
            return paths
        for p in locations:
            if not store.is_file(p):
                raise DataError(f"{store.display(p)}: missing shard")
        return locations

    def _load_index(self) -> dict[str, list] | None:
        """Use ``<split>-index.json`` next to the shards if it covers them with matching sizes."""
        store = self._store
        result: dict[str, list] = {}
        index_files = {
            store.display(q): q
            for q in (
                store.sibling(p, f"{store.basename(p).rsplit('-', 1)[0]}-index.json")
                for p in self.paths
            )
        }
        for shown, p in index_files.items():
            if not store.is_file(p):
                continue
            try:
                d = json.loads(store.read_bytes(p))
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                logger.warning("%s: unreadable shard index, scanning the tars instead", shown)
                continue
            if not isinstance(d, dict) or not isinstance(d.get("shards", []), list):
                raise DataError(f"{shown}: a shard index is an object with a list of 'shards'")
            if d.get("version") != _INDEX_VERSION:
                continue
            for s in d.get("shards", []):
                name = s.get("name") if isinstance(s, dict) else None
                if not isinstance(name, str) or not name or "/" in name or "\\" in name:
                    raise DataError(f"{shown}: every shard entry needs a plain file 'name'")
                shard_path = store.sibling(p, name)
                if store.is_file(shard_path) and store.size(shard_path) == s.get("size"):
                    result[name] = _check_index_shard(s, shown, store.size(shard_path))
        return result

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def keys(self) -> list[str]:
        return [e.key for e in self.entries]

    def _handle(self, shard: int) -> Any:
        """An open descriptor (``os.pread``) or file object (seek + read) of a local shard."""
        if os.getpid() != self._pid:  # forked into a DataLoader worker: do not share descriptors
            self._fds = {}
            self._pid = os.getpid()
        handle = self._fds.get(shard)
        if handle is None:
            if _HAS_PREAD:
                handle = os.open(self.paths[shard], os.O_RDONLY)
            else:  # pragma: no cover - Windows
                handle = open(self.paths[shard], "rb")  # noqa: SIM115 (closed in close())
            self._fds[shard] = handle
        return handle

    def _read_range(self, shard: int, offset: int, size: int) -> bytes:
        if self._store.fs is not None:
            return self._store.read_range(self.paths[shard], offset, size)
        handle = self._handle(shard)
        if _HAS_PREAD:
            return os.pread(handle, size, offset)
        handle.seek(offset)  # pragma: no cover - Windows
        return handle.read(size)  # pragma: no cover

    def exts(self, i: int) -> list[str]:
        """Extensions present in sample ``i``."""
        return list(self.entries[i].members)

    def name(self, i: int, ext: str) -> str:
        """``<shard>:<key>.<ext>``, used in error messages."""
        e = self.entries[i]
        return f"{self._store.display(self.paths[e.shard])}:{e.key}.{ext}"

    def read(self, i: int, exts: Iterable[str] | None = None) -> dict[str, bytes]:
        """Bytes of sample ``i``'s members (all, or those in ``exts``; a missing one is a DataError)."""
        e = self.entries[i]
        wanted = list(e.members) if exts is None else list(exts)
        out = {}
        for ext in wanted:
            if ext not in e.members:
                raise DataError(
                    f"{self._store.display(self.paths[e.shard])}: sample {e.key!r} has no "
                    f"'{ext}' member"
                )
            off, size = e.members[ext]
            data = self._read_range(e.shard, off, size)
            if len(data) != size:
                raise DataError(f"{self.name(i, ext)}: truncated shard")
            out[ext] = data
        return out

    def read_image(self, i: int) -> np.ndarray:
        """Image-only mode: decode sample ``i``'s image (first of :data:`IMAGE_EXTS` present), (H, W, 3) uint8."""
        e = self.entries[i]
        for ext in IMAGE_EXTS:
            if ext in e.members:
                return decode_image(self.read(i, [ext])[ext], self.name(i, ext))
        raise DataError(
            f"{self._store.display(self.paths[e.shard])}: sample {e.key!r} has no image member "
            f"({', '.join(IMAGE_EXTS)})"
        )

    def close(self) -> None:
        for handle in self._fds.values():
            if isinstance(handle, int):
                os.close(handle)
            else:  # pragma: no cover - Windows
                handle.close()
        self._fds = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fds"] = {}
        return state

    def __del__(self) -> None:
        try:
            if os.getpid() == self._pid:
                self.close()
        except Exception:
            pass

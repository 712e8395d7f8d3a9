"""Training checkpoints, shared by fine-tuning and pretraining: atomic, complete or absent, and
loaded without running code from the folder.

A checkpoint is a folder ``checkpoints/step_XXXXXXXX`` (8 digits) holding:

- the model and optimiser, sharded with ``torch.distributed.checkpoint`` (DCP): ``.metadata`` and
  ``__<rank>_0.distcp`` files, so it reloads under another world size;
- ``rank_<r>.pt``: each rank's RNG states (tensors and plain containers only);
- ``checkpoint.json``: the manifest, written last: format, kind (``train``/``pretrain``), recipe,
  step, world size, data-loader position, and the size of every file above.

Writing: everything goes into ``.step_XXXXXXXX.partial`` first; when every rank has written its
files, rank 0 writes the manifest, syncs, and renames the folder to its final name. A process killed
at any moment leaves either the previous checkpoints untouched plus a ``.partial`` folder (ignored,
removed by the next run) or the new checkpoint complete. :func:`latest_checkpoint` only returns
folders whose manifest lists files that are all present with their recorded sizes. Older
checkpoints beyond ``keep`` are renamed to ``.trash`` before deletion, so a kill during pruning
never leaves a half-deleted ``step_*`` folder either.

Reading never unpickles arbitrary objects: DCP stores its ``.metadata`` and any non-tensor values
(optimiser hyper-parameters) as pickles, which a planted file could use to run code. Here the
metadata is read by an unpickler that only builds DCP's own metadata classes, ``torch.Size``,
dtypes, layouts and paths, and the non-tensor values go through ``torch.load(weights_only=True)``;
the per-rank files load with ``weights_only=True`` too.

For the kill tests, ``SAPIENS2_FAULT=<point>@<step>`` makes the process SIGKILL itself at one point
of the write of that step's checkpoint (``ckpt-begin``, ``ckpt-dcp``, ``ckpt-manifest``,
``ckpt-renamed``, ``ckpt-prune``; see :func:`fault_point`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import re
import shutil
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path, PosixPath, PurePosixPath, PureWindowsPath, WindowsPath
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from sapiens2.checkpoints.errors import CheckpointError

__all__ = [
    "FORMAT",
    "CheckpointError",
    "Manifest",
    "UnsafeCheckpointError",
    "checkpoint_name",
    "complete_checkpoints",
    "fault_point",
    "latest_checkpoint",
    "load_checkpoint",
    "read_manifest",
    "remove_leftovers",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

FORMAT = "sapiens2-checkpoint/1"
MANIFEST = "checkpoint.json"
_NAME = re.compile(r"^step_(\d{8})$")
FAULT_ENV = "SAPIENS2_FAULT"


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file that would run code or build objects other than checkpoint data."""


def checkpoint_name(step: int) -> str:
    """``step_XXXXXXXX`` (8 digits), the folder name of the checkpoint after ``step`` steps."""
    return f"step_{step:08d}"


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def fault_point(point: str, step: int) -> None:
    """Test hook: SIGKILLs this process when ``SAPIENS2_FAULT`` is ``<point>@<step>``.

    The kill-and-resume tests use it to stop a real run at a chosen moment (``step`` after the
    optimiser update of that step, ``ckpt-*`` inside the checkpoint write). Unset, it does nothing.
    """
    if os.environ.get(FAULT_ENV) == f"{point}@{step}":
        logger.warning("%s=%s: killing this process", FAULT_ENV, os.environ[FAULT_ENV])
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _single_process_quiet():
    """DCP warns on every single-process save/load that it assumes one process; that is the
    intended use here, so the warning is silenced when no process group exists."""
    with warnings.catch_warnings():
        if not dist.is_initialized():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


# --------------------------------------------------------------------------------------------------
# The manifest


@dataclass(frozen=True)
class Manifest:
    """The parsed ``checkpoint.json`` of a complete checkpoint."""

    path: Path
    kind: str
    recipe: str
    step: int
    world_size: int
    loader: dict[str, Any]
    files: dict[str, int]
    extra: dict[str, Any]


def read_manifest(path: str | Path) -> Manifest:
    """The manifest of the checkpoint folder ``path`` after checking that it is complete.

    Raises:
        CheckpointError: no manifest, an unreadable one, or a listed file missing or of another
            size than recorded.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} is not a folder")
    file = path / MANIFEST
    if not file.is_file():
        raise CheckpointError(
            f"{path} is not a complete sapiens2 checkpoint (no {MANIFEST}; an interrupted write?)"
        )
    try:
        raw = json.loads(file.read_text())
        if raw.get("format") != FORMAT:
            raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT!r}")
        man = Manifest(
            path=path,
            kind=str(raw["kind"]),
            recipe=str(raw["recipe"]),
            step=int(raw["step"]),
            world_size=int(raw["world_size"]),
            loader=dict(raw["loader"]),
            files={str(k): int(v) for k, v in raw["files"].items()},
            extra=dict(raw.get("extra", {})),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{file} is not a valid checkpoint manifest: {err}") from None
    for name, size in man.files.items():
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise CheckpointError(f"{file} lists a file outside its folder: {name!r}")
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            raise CheckpointError(
                f"checkpoint {path} is incomplete: {name} is missing or truncated"
            )
    if ".metadata" not in man.files:
        raise CheckpointError(f"{file} does not list the DCP .metadata")
    return man


def complete_checkpoints(root: str | Path) -> list[Manifest]:
    """The complete checkpoints ``root/step_*``, oldest first; incomplete ones are skipped with a
    warning (the writer never leaves one under a ``step_*`` name; a copy or hand edit might)."""
    root = Path(root)
    found = []
    for p in sorted(root.glob("step_*")) if root.is_dir() else []:
        m = _NAME.match(p.name)
        if not m or not p.is_dir():
            continue
        try:
            man = read_manifest(p)
        except CheckpointError as err:
            logger.warning("skipping %s: %s", p, err)
            continue
        if man.step != int(m.group(1)):
            logger.warning("skipping %s: its manifest says step %d", p, man.step)
            continue
        found.append(man)
    return found


def latest_checkpoint(root: str | Path) -> Manifest | None:
    """The newest complete checkpoint under ``root`` (``OUT/checkpoints``), or None."""
    done = complete_checkpoints(root)
    return done[-1] if done else None


def remove_leftovers(root: str | Path) -> None:
    """Deletes the ``.partial`` and ``.trash`` folders that killed writes or prunes left behind
    (rank 0, at the start of a run, before any writer runs)."""
    root = Path(root)
    if not root.is_dir():
        return
    for p in sorted(root.glob(".step_*")):
        if p.is_dir() and p.suffix in (".partial", ".trash"):
            logger.info("removing %s, left by an interrupted checkpoint write", p)
            shutil.rmtree(p, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Writing


def _state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    if optimizer is None:
        return {"model": get_model_state_dict(model)}
    msd, osd = get_state_dict(model, optimizer)
    return {"model": msd, "optim": osd}


def save_checkpoint(
    root: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    kind: str,
    recipe: str,
    loader: dict[str, Any],
    rank_state: dict[str, Any],
    extra: dict[str, Any] | None = None,
    keep: int = 0,
) -> Path:
    """Writes the checkpoint of ``step`` under ``root`` atomically (every rank must call this).

    Args:
        root: the checkpoints folder (``OUT/checkpoints``).
        step: optimiser steps done; the folder is ``root/step_XXXXXXXX``.
        model, optimizer: saved sharded with DCP (the optimiser may be None).
        kind: ``"train"`` or ``"pretrain"``; a run of one kind refuses the other's checkpoints.
        recipe: the recipe name; a run refuses another recipe's checkpoints.
        loader: the data loader's position (global: identical on every rank), JSON-serialisable.
        rank_state: this rank's state (RNG), tensors and plain containers.
        extra: more JSON-serialisable information for the manifest.
        keep: keep the newest ``keep`` complete checkpoints and delete older ones (0: keep all).

    Returns:
        The final checkpoint folder.
    """
    root = Path(root)
    rank = _rank()
    final = root / checkpoint_name(step)
    partial = root / f".{final.name}.partial"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir()
    _barrier()
    fault_point("ckpt-begin", step)
    with _single_process_quiet():
        dcp.save(_state(model, optimizer), checkpoint_id=str(partial))
    fault_point("ckpt-dcp", step)
    buf = io.BytesIO()
    torch.save(rank_state, buf)
    _write_synced(partial / f"rank_{rank}.pt", buf.getvalue())
    _barrier()
    if rank == 0:
        world = dist.get_world_size() if dist.is_initialized() else 1
        files = {p.name: p.stat().st_size for p in sorted(partial.iterdir()) if p.is_file()}
        missing = [f"rank_{r}.pt" for r in range(world) if f"rank_{r}.pt" not in files]
        if missing or ".metadata" not in files:
            raise CheckpointError(f"checkpoint write of {partial} lacks {missing or '.metadata'}")
        manifest = {
            "format": FORMAT,
            "kind": kind,
            "recipe": recipe,
            "step": step,
            "world_size": world,
            "loader": loader,
            "files": files,
            "extra": extra or {},
        }
        _write_synced(partial / MANIFEST, json.dumps(manifest, indent=1).encode())
        _fsync_dir(partial)
        fault_point("ckpt-manifest", step)
        old = root / f".{final.name}.trash"
        if final.exists():  # a checkpoint of the same step from an earlier attempt: replaced
            final.rename(old)
        partial.rename(final)
        _fsync_dir(root)
        fault_point("ckpt-renamed", step)
        if old.exists():
            shutil.rmtree(old)
        if keep > 0:
            _prune(root, keep, step)
    _barrier()
    logger.info("saved checkpoint %s", final)
    return final


def _prune(root: Path, keep: int, step: int) -> None:
    done = [p for p in sorted(root.glob("step_*")) if _NAME.match(p.name) and p.is_dir()]
    for p in done[: max(0, len(done) - keep)]:
        trash = root / f".{p.name}.trash"
        p.rename(trash)
        fault_point("ckpt-prune", step)
        shutil.rmtree(trash)


# --------------------------------------------------------------------------------------------------
# Reading without running code

_ALLOWED_METADATA_GLOBALS = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "Path"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
    ("pathlib._local", "PosixPath"),
    ("pathlib._local", "WindowsPath"),
    ("collections", "OrderedDict"),
}
_PATHS = {c.__name__: c for c in (Path, PosixPath, WindowsPath, PurePosixPath, PureWindowsPath)}


class _MetadataUnpickler(pickle.Unpickler):
    """Builds only DCP metadata: its own dataclasses, sizes, dtypes, layouts and paths."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module, name) not in _ALLOWED_METADATA_GLOBALS:
            raise UnsafeCheckpointError(
                f"refusing to load {module}.{name} from checkpoint metadata: only DCP metadata "
                "classes are allowed (the file may have been tampered with)"
            )
        if module.startswith("pathlib"):
            return _PATHS[name]
        if module == "torch.distributed.checkpoint.metadata":
            return getattr(dcp_metadata, name)
        if module == "torch.distributed.checkpoint.filesystem":
            return _StorageInfo
        return super().find_class(module, name)


class SafeFileSystemReader(FileSystemReader):
    """DCP's file reader with the ``.metadata`` pickle read by a restricted unpickler."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        path = Path(self.path) / ".metadata"
        try:
            with open(path, "rb") as f:
                metadata = _MetadataUnpickler(f).load()
        except UnsafeCheckpointError as err:
            raise UnsafeCheckpointError(f"{path}: {err}") from None
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError) as err:
            raise CheckpointError(f"{path} is not readable DCP metadata: {err}") from None
        if not isinstance(metadata, dcp_metadata.Metadata):
            raise UnsafeCheckpointError(f"{path} holds a {type(metadata).__name__}, not Metadata")
        if metadata.storage_meta is None:
            metadata.storage_meta = dcp_metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's default load planner, with non-tensor values read by ``torch.load(weights_only=True)``
    (the default planner reads them with ``weights_only=False``)."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        try:
            obj = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as err:
            raise UnsafeCheckpointError(
                f"refusing to load {read_item.dest_index.fqn!r} from the checkpoint: it is not "
                f"plain data ({_why(err)})"
            ) from None
        safe = io.BytesIO()
        torch.save(obj, safe)  # re-serialised from plain data for DCP's own reader
        safe.seek(0)
        super().load_bytes(read_item, safe)


def _why(err: BaseException) -> str:
    """The telling line of a ``weights_only`` refusal (``Unsupported global: ...``)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    hit = next((ln for ln in lines if "Unsupported global" in ln or "WeightsUnpickler" in ln), None)
    return hit or (lines[0] if lines else type(err).__name__)


def _failure(err: BaseException) -> BaseException:
    """The first underlying error of a DCP ``CheckpointException`` (which wraps each rank's)."""
    if isinstance(err, CheckpointException) and err.failures:
        return next(iter(err.failures.values()))[0]
    return err


def load_dcp(state: dict[str, Any], path: str | Path) -> None:
    """``torch.distributed.checkpoint.load`` into ``state`` in place, without running code.

    Raises:
        UnsafeCheckpointError: ``.metadata`` or a stored value would build other objects.
        CheckpointError: the checkpoint does not match ``state`` (keys, shapes) or is unreadable.
    """
    reader = SafeFileSystemReader(str(path))
    reader.read_metadata()  # refused here, before DCP's loader (which would log and retry)
    try:
        with _single_process_quiet():
            dcp.load(state, storage_reader=reader, planner=SafeLoadPlanner())
    except (Exception, CheckpointException) as err:
        cause = _failure(err)
        if isinstance(cause, CheckpointError):
            raise cause from None
        first = next((ln for ln in str(cause).splitlines() if ln.strip()), type(cause).__name__)
        raise CheckpointError(
            f"checkpoint {path} does not fit this model and optimiser: {first}"
        ) from cause


def load_checkpoint(
    manifest: Manifest, model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> dict[str, Any] | None:
    """Restores model and optimiser in place from a checkpoint (every rank must call this).

    Args:
        manifest: from :func:`read_manifest` / :func:`latest_checkpoint` (checked complete).
        model, optimizer: as given to :func:`save_checkpoint` (any world size).

    Returns:
        This rank's ``rank_state``, or None when the checkpoint was written by fewer ranks.

    Raises:
        UnsafeCheckpointError: a file would build objects other than checkpoint data.
        CheckpointError: the checkpoint does not match the model or optimiser.
    """
    path = manifest.path
    state = _state(model, optimizer)
    load_dcp(state, path)
    set_state_dict(
        model,
        optimizer,  # type: ignore[arg-type]  # None: the model only
        model_state_dict=state["model"],
        optim_state_dict=state.get("optim", {}),
    )
    rank = _rank()
    file = path / f"rank_{rank}.pt"
    if f"rank_{rank}.pt" not in manifest.files:
        return None
    try:
        return torch.load(file, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"refusing to load {file}: not plain data ({_why(err)})"
        ) from None

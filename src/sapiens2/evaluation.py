"""Evaluating a task model on a dataset: what differs between the tasks (dataset, metric,
prediction, picture) is the task module's adapter class (``sapiens2.tasks.<task>``), and
:func:`evaluate` runs a model over a split in one process or sharded across ``torch.distributed``
ranks.

Used by ``sapiens2 eval`` and by the trainer's periodic validation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sapiens2.data import datasets as D
from sapiens2.tasks import TaskAdapter, get_task
from sapiens2.tasks.base import denormalize, resize_like

__all__ = ["TaskAdapter", "adapter_for", "denormalize", "evaluate", "resize_like", "to_device"]


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def adapter_for(
    task: str,
    *,
    flip_test: bool = True,
    pose_sigma: float = 0.0,
    pointmap_normal_full_window: bool = False,
) -> TaskAdapter:
    """The evaluation adapter of ``task`` (its task module's ``adapter``; the options are those
    of ``TaskAdapter``, each used by its task only)."""
    return get_task(task).adapter(
        flip_test=flip_test,
        sigma=pose_sigma,
        pointmap_normal_full_window=pointmap_normal_full_window,
    )


class _Padded(Dataset):
    """One rank's share of an eval dataset, padded to ``length`` with items marked as pads (every
    rank must run the same number of forwards, e.g. under FSDP)."""

    def __init__(self, dataset: Dataset, indices: list[int], length: int) -> None:
        self.dataset, self.indices, self.length = dataset, indices, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        pad = i >= len(self.indices)
        j = self.indices[i % len(self.indices)] if self.indices else 0
        return {**self.dataset[j], "pad": pad}


def _select(batch: dict[str, Any], keep: list[int]) -> dict[str, Any]:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v[keep]
        elif isinstance(v, list):
            out[k] = [v[i] for i in keep]
        else:
            out[k] = v
    return out


def _as_float(pred):
    return tuple(p.float() for p in pred) if isinstance(pred, tuple) else pred.float()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: str,
    data,
    *,
    split: str = "val",
    input_size: tuple[int, int] = (1024, 768),
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    flip_test: bool = True,
    max_samples: int = 0,
    autocast=None,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
    pointmap_normal_full_window: bool = False,
) -> dict[str, Any]:
    """Task metrics of ``model`` on a dataset split (``docs/formats.md``; folders or shards).

    Args:
        model: a task model (or a wrapper around one, e.g. FSDP/DDP) in any mode; it is put in
            eval mode for the run and its previous mode restored.
        task: a registered task name (``sapiens2.tasks.task_names()``).
        data: dataset root or shards.
        input_size: network input (H, W) of the eval pipeline.
        max_samples: evaluate only the first N samples (0 = all).
        autocast: a context manager for mixed precision (None = none).
        rank, world_size: shard the split across ranks; metrics are reduced over all ranks.
        pointmap_normal_full_window: pointmap: score the pointmap normals only where the whole
            5×5 Sobel window is valid (a deviation, docs/metrics.md; False = official).

    Returns:
        The metric dict of the task (``mIoU``..., normal angle errors, pointmap distances, albedo
        errors, matting errors, or the 308-keypoint AP table).
    """
    import contextlib

    adapter = adapter_for(
        task, flip_test=flip_test, pointmap_normal_full_window=pointmap_normal_full_window
    )
    ds = adapter.dataset(data, split, False, input_size, 0)
    n = len(ds) if not max_samples else min(len(ds), max_samples)
    mine = list(range(rank, n, world_size))
    loader = DataLoader(
        _Padded(ds, mine, -(-n // world_size)),
        batch_size=batch_size,
        collate_fn=D.collate,
        num_workers=num_workers,
    )
    metric = adapter.metric(data, split)
    was_training = model.training
    model.eval()
    device = torch.device(device)
    ctx = autocast if autocast is not None else contextlib.nullcontext()
    batches = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc=f"eval {task}", unit="batch")
    try:
        for batch in batches:
            batch = to_device(batch, device)
            with ctx:
                pred = adapter.predict(model, batch["image"])
            keep = [i for i, p in enumerate(batch["pad"]) if not p]
            if keep:
                pred = _as_float(pred)
                pred = tuple(p[keep] for p in pred) if isinstance(pred, tuple) else pred[keep]
                adapter.update_metric(metric, pred, _select(batch, keep))
    finally:
        model.train(was_training)
    metric.sync()
    return metric.compute()

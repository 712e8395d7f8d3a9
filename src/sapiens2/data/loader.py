"""Deterministic, rank-split, resumable sampling and loading for map-style datasets.

The order of an epoch is a fixed function of ``(seed, epoch)`` over the whole dataset (a permutation,
or the identity without shuffling). Rank ``r`` of ``R`` takes every ``R``-th sample of that order, and
the DataLoader splits each rank's batches between its workers; because the dataset is map-style the
batches come back in sampler order whatever the number of workers. The position in the epoch is kept
as a *global* count of consumed samples, so a loader ``state_dict()`` saved mid-epoch resumes to the
same next sample with any number of workers, and may even resume with a different number of ranks
(the remaining samples of the epoch are then re-split). Datasets that expose ``set_epoch(epoch)`` get
it called before each epoch so that their augmentation randomness can depend on ``(seed, epoch, index)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["ResumableLoader", "ResumableSampler"]

logger = logging.getLogger(__name__)


class ResumableSampler(Sampler[int]):
    """Epoch-seeded order split by rank, with a global consumed-sample offset.

    Args:
        num_samples: dataset length.
        shuffle: permute with ``numpy.random.default_rng([seed, epoch])`` (else identity order).
        seed: base seed.
        rank, world_size: this process's share.
        drop_last: drop the tail that does not split evenly over ranks (else wrap around to pad it).
    """

    def __init__(
        self,
        num_samples: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ):
        if num_samples < 1:
            raise ValueError("ResumableSampler: the dataset is empty")
        if not 0 <= rank < world_size:
            raise ValueError(f"ResumableSampler: rank {rank} not in [0, {world_size})")
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        self.offset = 0  # samples of this epoch's global order already consumed (all ranks)

    def global_order(self, epoch: int | None = None) -> np.ndarray:
        """(N,) int64 order of ``epoch`` (default the current one) over all ranks."""
        e = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return np.arange(self.num_samples, dtype=np.int64)
        return np.random.default_rng([self.seed, e]).permutation(self.num_samples).astype(np.int64)

    def rank_indices(self) -> np.ndarray:
        """This rank's remaining indices of the current epoch, from ``offset`` on."""
        order = self.global_order()
        rest = order[self.offset :]
        n = len(rest)
        per_rank = n // self.world_size if self.drop_last else math.ceil(n / self.world_size)
        total = per_rank * self.world_size
        if total > n:  # pad by wrapping around the epoch's order
            rest = np.concatenate([rest, np.resize(order, total - n)])
        return rest[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.rank_indices().tolist())

    def __len__(self) -> int:
        return len(self.rank_indices())

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.offset = epoch, 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "offset": self.offset,
            "seed": self.seed,
            "num_samples": self.num_samples,
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_samples"] != self.num_samples:
            raise ValueError(
                f"ResumableSampler: state is for {state['num_samples']} samples but the dataset has {self.num_samples}"
            )
        if state["seed"] != self.seed or state["shuffle"] != self.shuffle:
            raise ValueError(
                "ResumableSampler: state was saved with a different seed/shuffle setting"
            )
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])


class ResumableLoader:
    """A DataLoader wrapper that knows where it is: ``state_dict()`` / ``load_state_dict()`` mid-epoch.

    Iterating yields the batches of the current epoch from the saved position; after a full pass the
    epoch advances. Ranks are assumed to consume batches in lockstep (as in data-parallel training),
    so saving the state of rank 0 is enough.

    Args:
        dataset: a map-style dataset (optionally with ``set_epoch``).
        batch_size: per-rank batch size.
        shuffle, seed, rank, world_size: see :class:`ResumableSampler`.
        drop_last: drop incomplete batches (and the uneven tail across ranks).
        num_workers, collate_fn, pin_memory: passed to :class:`torch.utils.data.DataLoader`.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        num_workers: int = 0,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        pin_memory: bool = False,
    ):
        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = ResumableSampler(
            len(dataset),
            shuffle=shuffle,
            seed=seed,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
        )
        self.num_workers, self.collate_fn, self.pin_memory = num_workers, collate_fn, pin_memory

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def _batches(self) -> list[list[int]]:
        idx = self.sampler.rank_indices().tolist()
        n_full = len(idx) // self.batch_size
        batches = [idx[i * self.batch_size : (i + 1) * self.batch_size] for i in range(n_full)]
        if not self.drop_last and len(idx) % self.batch_size:
            batches.append(idx[n_full * self.batch_size :])
        return batches

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[Any]:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.sampler.epoch)
        batches = self._batches()
        loader = DataLoader(
            self.dataset,
            batch_sampler=batches,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=False,
        )
        for batch_idx, batch in zip(batches, loader, strict=True):
            self.sampler.offset += len(batch_idx) * self.sampler.world_size
            yield batch
        self.sampler.set_epoch(self.sampler.epoch + 1)

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict(), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        if state.get("batch_size") != self.batch_size:
            logger.info(
                "ResumableLoader: batch size changed from %s to %s",
                state.get("batch_size"),
                self.batch_size,
            )

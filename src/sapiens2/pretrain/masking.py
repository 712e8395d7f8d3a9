"""Patch masks for masked image modelling: an exact ratio, mixing block-wise and random masks.

Each view gets its own mask (paper §2.2, A.1.2): with probability ``block_prob`` it is block-wise
(rectangles of patches are hidden until the ratio is reached), otherwise it is a uniformly random
set of patches. Both kinds hide exactly ``round(ratio * N)`` of the ``N`` patches, so every view of a
batch keeps the same number of visible tokens and the encoder input stays rectangular.

Masks are drawn with a ``numpy.random.Generator`` inside the data pipeline, so a mask depends only on
``(seed, epoch, sample index)``: any split of a batch over ranks or workers sees the same masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["MaskConfig", "block_mask", "mask_indices", "random_mask", "sample_mask"]


@dataclass(frozen=True)
class MaskConfig:
    """How views are masked.

    Args:
        ratio: fraction of patches hidden (0.75 in the paper).
        block_prob: probability that a view gets a block-wise mask (0.4), else random patches.
        min_block_patches: smallest rectangle (in patches) a block mask places.
        max_block_fraction: largest rectangle as a fraction of the grid (our choice, BEiT-like).
        min_aspect: rectangles have aspect ratio in ``[min_aspect, 1 / min_aspect]`` (log-uniform).
    """

    ratio: float = 0.75
    block_prob: float = 0.4
    min_block_patches: int = 4
    max_block_fraction: float = 0.3
    min_aspect: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"mask ratio must be in [0, 1), got {self.ratio}")
        if not 0.0 <= self.block_prob <= 1.0:
            raise ValueError(f"mask block_prob must be in [0, 1], got {self.block_prob}")
        if self.min_block_patches < 1:
            raise ValueError(f"min_block_patches must be >= 1, got {self.min_block_patches}")
        if not 0.0 < self.max_block_fraction <= 1.0:
            raise ValueError(f"max_block_fraction must be in (0, 1], got {self.max_block_fraction}")
        if not 0.0 < self.min_aspect <= 1.0:
            raise ValueError(f"min_aspect must be in (0, 1], got {self.min_aspect}")

    def num_masked(self, num_patches: int) -> int:
        """Patches hidden in a view of ``num_patches`` patches (at least one stays visible)."""
        return min(round(self.ratio * num_patches), num_patches - 1)


def random_mask(grid: tuple[int, int], num_masked: int, rng: np.random.Generator) -> np.ndarray:
    """``(Hp*Wp,)`` bool, exactly ``num_masked`` uniformly chosen patches True (= hidden)."""
    n = grid[0] * grid[1]
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[:num_masked]] = True
    return mask


def block_mask(
    grid: tuple[int, int], num_masked: int, rng: np.random.Generator, cfg: MaskConfig
) -> np.ndarray:
    """``(Hp*Wp,)`` bool made of rectangles of patches, exactly ``num_masked`` True.

    Rectangles (area uniform in ``[min_block_patches, max_block_fraction * N]``, log-uniform
    aspect) are added until the count is reached. A rectangle that would overshoot is
    cut: only its first new patches in raster order are taken, so the last piece is a partial
    rectangle (rows of a rectangle) and the ratio is exact.
    """
    hp, wp = grid
    n = hp * wp
    mask = np.zeros((hp, wp), dtype=bool)
    count = 0
    max_area = max(cfg.min_block_patches, int(cfg.max_block_fraction * n))
    log_aspect = (math.log(cfg.min_aspect), -math.log(cfg.min_aspect))
    attempts = 0
    while count < num_masked:
        attempts += 1
        area = rng.uniform(cfg.min_block_patches, max_area)
        aspect = math.exp(rng.uniform(*log_aspect))
        h = max(1, min(hp, round(math.sqrt(area * aspect))))
        w = max(1, min(wp, round(math.sqrt(area / aspect))))
        top = int(rng.integers(0, hp - h + 1))
        left = int(rng.integers(0, wp - w + 1))
        region = mask[top : top + h, left : left + w]
        new = ~region
        n_new = int(new.sum())
        if n_new == 0:
            if attempts > 100 * n:  # a full grid cannot happen (num_masked < n); be safe anyway
                break
            continue
        remaining = num_masked - count
        if n_new > remaining:  # cut the rectangle to its first `remaining` new patches
            flat = new.reshape(-1)
            keep = np.flatnonzero(flat)[:remaining]
            flat[:] = False
            flat[keep] = True
            new = flat.reshape(h, w)
            n_new = remaining
        region |= new
        count += n_new
    if count != num_masked:  # pragma: no cover (guarded above)
        raise RuntimeError(f"block mask placed {count} of {num_masked} patches on grid {grid}")
    return mask.reshape(-1)


def sample_mask(
    grid: tuple[int, int], cfg: MaskConfig, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    """One view's mask: ``((Hp*Wp,) bool, is_block)``; True = hidden patch."""
    n = grid[0] * grid[1]
    k = cfg.num_masked(n)
    is_block = bool(rng.random() < cfg.block_prob)
    if is_block:
        return block_mask(grid, k, rng, cfg), True
    return random_mask(grid, k, rng), False


def mask_indices(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits masks into the sorted visible and hidden patch indices.

    Args:
        mask: ``(B, N)`` bool, True = hidden; every row must hide the same number of patches.

    Returns:
        ``keep_idx (B, N - M)`` and ``masked_idx (B, M)`` int64, ascending in each row.
    """
    if mask.ndim != 2 or mask.dtype != torch.bool:
        raise ValueError(f"masks must be (B, N) bool, got {tuple(mask.shape)} {mask.dtype}")
    counts = mask.sum(1)
    if counts.numel() and bool((counts != counts[0]).any()):
        raise ValueError(f"every mask must hide the same number of patches, got {counts.tolist()}")
    m = int(counts[0]) if counts.numel() else 0
    # A stable sort puts visible (False) patches first, each group in ascending index order.
    order = torch.sort(mask.to(torch.uint8), dim=1, stable=True).indices
    n = mask.shape[1]
    return order[:, : n - m], order[:, n - m :]

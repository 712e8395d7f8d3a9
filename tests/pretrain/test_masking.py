from __future__ import annotations

import numpy as np
import pytest
import torch

from sapiens2.pretrain.masking import (
    MaskConfig,
    block_mask,
    mask_indices,
    random_mask,
    sample_mask,
)


def _masked_neighbours(mask: np.ndarray, grid: tuple[int, int]) -> float:
    """Mean number of hidden 4-neighbours of a hidden patch."""
    m = mask.reshape(grid)
    p = np.pad(m, 1)
    nb = p[:-2, 1:-1].astype(int) + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]
    return float(nb[m].mean())


@pytest.mark.parametrize("grid", [(8, 6), (14, 14), (64, 48), (3, 5)])
@pytest.mark.parametrize("block_prob", [0.0, 0.4, 1.0])
def test_exact_ratio_every_view(grid, block_prob):
    cfg = MaskConfig(ratio=0.75, block_prob=block_prob)
    n = grid[0] * grid[1]
    rng = np.random.default_rng(0)
    for _ in range(20):
        m, is_block = sample_mask(grid, cfg, rng)
        assert m.shape == (n,) and m.dtype == bool
        assert m.sum() == round(0.75 * n)
        if block_prob == 0.0:
            assert not is_block
        if block_prob == 1.0:
            assert is_block


def test_block_probability_is_as_configured():
    cfg = MaskConfig(block_prob=0.4)
    rng = np.random.default_rng(1)
    kinds = [sample_mask((8, 6), cfg, rng)[1] for _ in range(2000)]
    # Binomial(2000, 0.4): sd ~ 0.011; 4.5 sd tolerance
    assert abs(np.mean(kinds) - 0.4) < 0.05


def test_block_masks_are_blocks_random_masks_are_not():
    cfg = MaskConfig(ratio=0.4)
    grid = (32, 24)
    k = cfg.num_masked(32 * 24)
    rng = np.random.default_rng(2)
    blk = np.mean([_masked_neighbours(block_mask(grid, k, rng, cfg), grid) for _ in range(30)])
    rnd = np.mean([_masked_neighbours(random_mask(grid, k, rng), grid) for _ in range(30)])
    # random: ~4 * 0.4 = 1.6 (fewer at borders); blocks: mostly interior patches
    assert rnd < 1.8
    assert blk > 3.0


def test_block_mask_rectangles_respect_size_limits():
    # one rectangle of at most max_block_fraction of the grid cannot reach 10% when limited to 2%
    cfg = MaskConfig(ratio=0.5, max_block_fraction=0.02, min_block_patches=4)
    grid = (20, 20)
    m = block_mask(grid, 40, np.random.default_rng(3), cfg).reshape(grid)
    assert m.sum() == 40
    # every row segment of hidden patches is short: rectangles are at most ~8 patches in area
    longest = max(
        max((len(s) for s in "".join("1" if v else "0" for v in row).split("0")), default=0)
        for row in m
    )
    assert longest <= 16


def test_masks_are_deterministic_per_generator():
    cfg = MaskConfig()
    a = [sample_mask((8, 6), cfg, np.random.default_rng([5, 0, i]))[0] for i in range(5)]
    b = [sample_mask((8, 6), cfg, np.random.default_rng([5, 0, i]))[0] for i in range(5)]
    assert all((x == y).all() for x, y in zip(a, b, strict=True))


def test_mask_indices_split_and_order():
    mask = torch.tensor([[True, False, True, False, False], [False, False, True, True, False]])
    keep, hidden = mask_indices(mask)
    assert keep.tolist() == [[1, 3, 4], [0, 1, 4]]
    assert hidden.tolist() == [[0, 2], [2, 3]]
    with pytest.raises(ValueError, match="same number"):
        mask_indices(torch.tensor([[True, False], [True, True]]))


def test_bad_config_is_an_error():
    with pytest.raises(ValueError, match="ratio"):
        MaskConfig(ratio=1.0)
    with pytest.raises(ValueError, match="block_prob"):
        MaskConfig(block_prob=1.5)

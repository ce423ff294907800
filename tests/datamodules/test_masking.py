"""Painter's block-wise masking."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.masking import block_mask, painter_mask, query_half_mask, sample_block

PAINTER_GRID = (56, 28)  # 896 x 448 canvas, patch 16: 1568 patches


@pytest.mark.parametrize("grid, num_masked, max_block", [((56, 28), 784, 392), ((14, 14), 100, None),
                                                         ((8, 8), 64, 16), ((8, 8), 0, None), ((10, 6), 3, None)])
def test_block_mask_count_is_exact(grid, num_masked, max_block):
    for seed in range(30):
        mask = block_mask(grid, num_masked, np.random.default_rng(seed), max_block=max_block)
        assert mask.shape == grid and mask.dtype == bool and mask.sum() == num_masked


def test_block_mask_deterministic_by_seed_and_blocky():
    a = block_mask(PAINTER_GRID, 784, np.random.default_rng(1), max_block=392)
    b = block_mask(PAINTER_GRID, 784, np.random.default_rng(1), max_block=392)
    c = block_mask(PAINTER_GRID, 784, np.random.default_rng(2), max_block=392)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    # blocks, not salt and pepper: most masked patches have a masked right-hand neighbour
    assert (a[:, :-1] & a[:, 1:]).sum() > 0.8 * a[:, :-1].sum()


class _CountingRng:
    """A Generator that counts `choice` calls: block_mask only calls it to top up with single patches."""

    def __init__(self, seed: int) -> None:
        self.rng, self.choices = np.random.default_rng(seed), 0

    def uniform(self, *args, **kwargs):
        return self.rng.uniform(*args, **kwargs)

    def integers(self, *args, **kwargs):
        return self.rng.integers(*args, **kwargs)

    def choice(self, *args, **kwargs):
        self.choices += 1
        return self.rng.choice(*args, **kwargs)


def test_painter_settings_need_no_single_patch_top_up():
    for seed in range(300):
        rng = _CountingRng(seed)
        assert block_mask(PAINTER_GRID, 784, rng, max_block=392).sum() == 784
        assert rng.choices == 0


def test_sampled_blocks_respect_bounds():
    rng = np.random.default_rng(0)
    blocks = [sample_block(PAINTER_GRID, rng, 16, 392, 0.3) for _ in range(2000)]
    kept = [b for b in blocks if b is not None]
    assert len(kept) > 1500
    for top, left, bh, bw in kept:
        assert 16 <= bh * bw <= 392
        assert 0.3 / 1.5 <= bh / bw <= 1.5 / 0.3  # aspect bound, loosened by rounding the sides
        assert 0 <= top and top + bh <= 56 and 0 <= left and left + bw <= 28
    areas = [bh * bw for _, _, bh, bw in kept]
    assert min(areas) < 40 and max(areas) > 340  # the whole area range is used


def test_block_mask_rejects_impossible_counts():
    with pytest.raises(ValueError):
        block_mask((4, 4), 17, np.random.default_rng(0))


def test_query_half_mask():
    mask = query_half_mask((4, 3))
    np.testing.assert_array_equal(mask, [False] * 6 + [True] * 6)
    assert query_half_mask(PAINTER_GRID).sum() == 784
    with pytest.raises(ValueError):
        query_half_mask((5, 3))


def test_painter_mask_counts_and_bottom_half_frequency():
    half = query_half_mask(PAINTER_GRID)
    draws = [painter_mask(PAINTER_GRID, np.random.default_rng(s)) for s in range(2000)]
    assert all(m.shape == (1568,) and m.sum() == 784 for m in draws)
    frequency = np.mean([(m == half).all() for m in draws])
    assert 0.07 < frequency < 0.13  # 0.1 +- 4.5 standard deviations of 2000 draws
    np.testing.assert_array_equal(painter_mask(PAINTER_GRID, np.random.default_rng(5)), draws[5])
    assert all((painter_mask(PAINTER_GRID, np.random.default_rng(s), query_half_prob=1.0) == half).all()
               for s in range(5))

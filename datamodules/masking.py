"""Which target patches the model must paint: Painter's masking (baaivision/Painter main_train.py: `MaskingGenerator`,
784 of 1568 patches in blocks of at most 392; `--half_mask_ratio 0.1`): half the patches in BEiT-style blocks or, with
probability 0.1, the query half (the inference setting). From BEiT's description, not its code; counts are exact."""

from __future__ import annotations

import math

import numpy as np

MAX_FAILURES = 50  # useless blocks in a row before topping up with single patches; draws are cheap (BENCHMARKS.md §7)


def sample_block(
    grid: tuple[int, int],
    rng: np.random.Generator,
    min_block: int = 16,
    max_block: int | None = None,
    min_aspect: float = 0.3,
    max_area: float | None = None,
) -> tuple[int, int, int, int] | None:
    """A random block (top, left, height, width) in `grid`, area uniform in [min_block, max_area or max_block];
    None when its rounded sides leave the grid or [min_block, max_block] (default max_block: the whole grid)."""
    h, w = grid
    max_block = h * w if max_block is None else max_block
    area = rng.uniform(min_block, max(min_block, max_block if max_area is None else max_area))
    aspect = math.exp(rng.uniform(math.log(min_aspect), -math.log(min_aspect)))
    bh, bw = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
    if not (0 < bh <= h and 0 < bw <= w and min_block <= bh * bw <= max_block):
        return None
    return int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)), bh, bw


def block_mask(
    grid: tuple[int, int],
    num_masked: int,
    rng: np.random.Generator,
    min_block: int = 16,
    max_block: int | None = None,
    min_aspect: float = 0.3,
) -> np.ndarray:
    """(h, w) bool with exactly `num_masked` True patches in random, possibly overlapping, rectangular blocks.

    Args:
        grid: (h, w) patches.
        num_masked: patches to mask, in [0, h * w].
        rng: the only source of randomness.
        min_block: smallest block area in patches (the last block, trimmed to fit the count, may be smaller).
        max_block: largest block area; default `num_masked` (at least `min_block`).
        min_aspect: a block's height / width is log-uniform in [min_aspect, 1 / min_aspect].
    """
    h, w = grid
    if not 0 <= num_masked <= h * w:
        raise ValueError(f"num_masked must lie in [0, {h * w}] for grid {grid}, got {num_masked}")
    max_block = max(num_masked, min_block) if max_block is None else max_block
    mask = np.zeros((h, w), bool)
    remaining, failures = num_masked, 0
    while remaining > 0 and failures < MAX_FAILURES:
        # draw areas no larger than what is left, so that blocks rarely need trimming (BEiT does the same);
        # a rounded area above it is still accepted (and trimmed): near the end most draws would fail otherwise
        block = sample_block(grid, rng, min_block, max_block, min_aspect, max_area=min(max_block, remaining))
        if block is None:
            failures += 1
            continue
        top, left, bh, bw = block
        region = mask[top : top + bh, left : left + bw]  # a view: writing to it writes to mask
        new = np.flatnonzero(~region)
        if len(new) == 0:
            failures += 1
            continue
        rows, cols = np.divmod(new[:remaining], bw)  # the first new patches in raster order: the count stays exact
        region[rows, cols] = True
        remaining -= min(len(new), remaining)
        failures = 0
    if remaining > 0:  # the grid is nearly full: the rest as single patches, so that the count is exact
        free = np.flatnonzero(~mask.ravel())
        mask.ravel()[rng.choice(free, remaining, replace=False)] = True
    return mask


def query_half_mask(grid: tuple[int, int]) -> np.ndarray:
    """(h * w,) bool: the bottom half of the rows (the query's target) masked, row-major."""
    h, w = grid
    if h % 2:
        raise ValueError(f"the canvas grid needs an even number of rows, got {grid}")
    mask = np.zeros((h, w), bool)
    mask[h // 2 :] = True
    return mask.reshape(-1)


def painter_mask(grid: tuple[int, int], rng: np.random.Generator, ratio: float = 0.5,
                 query_half_prob: float = 0.1) -> np.ndarray:
    """(h * w,) bool, row-major: the query half with probability `query_half_prob`, else Painter's blocks."""
    h, w = grid
    if rng.random() < query_half_prob:
        return query_half_mask(grid)
    return block_mask(grid, round(ratio * h * w), rng, min_block=16, max_block=h * w // 4).reshape(-1)

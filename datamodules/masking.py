"""Which target patches the model must paint: Painter's block-wise masking (seggpt_reference.md §13).

Painter masks 784 of the 1568 patches of a 896 x 448 target canvas (grid 56 x 28, patch 16) with
BEiT-style rectangular blocks of 16 to 392 patches, and with probability 0.1 masks the whole bottom
half (the query) instead, which is exactly the inference setting.

    mask = painter_mask((56, 28), rng)        # (1568,) bool, row-major like the patch sequence

Written from the published description of BEiT's block-wise masking, not from its code. Differences,
chosen so that the count is always exact:

- A block's area is drawn uniform in [min_block, min(max_block, what is still to mask)] and its
  aspect ratio log-uniform in [min_aspect, 1 / min_aspect]; rounded sides whose area leaves
  [min_block, max_block], or that do not fit, are redrawn. Overlaps with earlier blocks are allowed.
- A block that would mask more new patches than remain keeps only its first new patches in raster
  order (its top rows), so the last block may be smaller than `min_block`.
- After `MAX_FAILURES` consecutive blocks that add nothing (the grid is nearly full), the rest is
  drawn as single patches uniformly among the unmasked ones. With Painter's settings this happened
  in none of 3000 draws; it is for grids that are nearly all masked. About 0.2 ms per Painter mask.
"""

from __future__ import annotations

import math

import numpy as np

MAX_FAILURES = 50  # consecutive useless blocks before topping up with single patches; draws are cheap


def sample_block(
    grid: tuple[int, int],
    rng: np.random.Generator,
    min_block: int = 16,
    max_block: int | None = None,
    min_aspect: float = 0.3,
    max_area: float | None = None,
) -> tuple[int, int, int, int] | None:
    """One random rectangle (top, left, height, width) inside `grid`, or None when the draw misses the bounds.

    Area drawn uniform in [min_block, max_area] (default `max_block`, default the whole grid), aspect
    ratio (height / width) log-uniform in [min_aspect, 1 / min_aspect]; None when the rounded sides
    give an area outside [min_block, max_block] or do not fit in the grid.
    """
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
    """(h, w) bool with exactly `num_masked` True patches, placed as random rectangular blocks.

    Args:
        grid: (h, w) patches.
        num_masked: how many patches to mask, in [0, h * w].
        rng: the only source of randomness.
        min_block: smallest block area in patches (the last, trimmed block may be smaller).
        max_block: largest block area in patches; default `num_masked` (at least `min_block`).
        min_aspect: blocks' height / width lies in [min_aspect, 1 / min_aspect].
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
        rows, cols = np.divmod(new[:remaining], bw)  # the first new patches in raster order
        region[rows, cols] = True
        remaining -= min(len(new), remaining)
        failures = 0
    if remaining > 0:
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
    """(h * w,) bool, row-major: the bottom half with probability `query_half_prob`, else block-wise.

    Block-wise: round(ratio * h * w) patches in blocks of 16 to h * w // 4 patches (Painter: 784 of
    1568 in blocks of at most 392, `half_mask_ratio` 0.1).
    """
    h, w = grid
    if rng.random() < query_half_prob:
        return query_half_mask(grid)
    return block_mask(grid, round(ratio * h * w), rng, min_block=16, max_block=h * w // 4).reshape(-1)

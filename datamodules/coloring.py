"""Random colouring and mix-context, SegGPT's two data-side ideas (SegGPT, Wang et al. 2023, §3.1).

One mapping {id: (r, g, b)} over a random subset of the query's ids paints every label map of a pair or mix-context
group, so colours carry no class identity. Our choices (the paper gives none): a subset size uniform in
1..len(candidates) (at most `max_ids`), then a subset uniform among those of that size, so small and large subsets are
equally likely; other ids and background are black and count in the loss; void (`schema.SEM_VOID`) is weighted 0."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from datamodules.schema import SEM_VOID
from seggpt_lab.palette import LATTICE_COLORS, fixed_color

# 8 lattice levels per channel (step 255 / 7 ~ 36), enough colours for COCO's ~100 instances: any two colours differ
# by a step in some channel, and each is 73 or more from black in its largest, so nearest-colour decoding over a
# mapping's colours and black is unambiguous for errors below 18 per channel
COLORS: np.ndarray = LATTICE_COLORS  # (504, 3) uint8
NUM_LABELS = SEM_VOID + 1  # label maps hold values 0..SEM_VOID (16-bit PNG)

Mapping = dict[int, tuple[int, int, int]]


def candidate_ids(query: np.ndarray, ids: Sequence[int] | None = None) -> np.ndarray:
    """Sorted int64 ids that may be coloured: `ids` if given, else the ids present in `query`; 0 and SEM_VOID never."""
    if ids is None:
        counts = np.bincount(np.asarray(query).ravel(), minlength=NUM_LABELS)
        if len(counts) > NUM_LABELS:
            raise ValueError(f"label values must lie in [0, {SEM_VOID}], got max {len(counts) - 1}")
        counts[[0, SEM_VOID]] = 0
        return np.flatnonzero(counts)
    found = np.unique(np.asarray(ids, dtype=np.int64))
    return found[(found > 0) & (found < SEM_VOID)]


def draw_mapping(candidates: Sequence[int], rng: np.random.Generator, max_ids: int | None = None) -> Mapping:
    """A random mapping {id: (r, g, b)} of a subset of `candidates` (module docstring); {} without candidates."""
    cap = min(len(candidates), len(COLORS), len(candidates) if max_ids is None else max_ids)
    if cap <= 0:
        return {}
    chosen = rng.choice(np.asarray(candidates), int(rng.integers(1, cap + 1)), replace=False)
    colors = COLORS[rng.choice(len(COLORS), len(chosen), replace=False)]
    return {int(i): (int(r), int(g), int(b)) for i, (r, g, b) in zip(chosen, colors, strict=True)}


def fix_colors(mapping: Mapping, kind: str) -> Mapping:
    """`mapping`'s ids with their fixed colours (`palette.fixed_color`) instead of random ones: Painter's colouring,
    where a colour names a category, for the ablation of SegGPT's random colouring."""
    return {i: fixed_color(i, kind) for i in mapping}


def _color_words(mapping: Mapping) -> np.ndarray:
    """(NUM_LABELS,) uint32: each id's colour as one little-endian word (r, g, b, 0), black if unmapped."""
    lut = np.zeros((NUM_LABELS, 4), np.uint8)
    if mapping:
        lut[list(mapping), :3] = list(mapping.values())
    return lut.view("<u4")[:, 0]


def paint_planes(labels: Sequence[np.ndarray], mapping: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """Label maps of one width, stacked top to bottom and painted with `mapping`: target (3, sum H_i, W) uint8 (black
    where unmapped, background or void) and valid (1, sum H_i, W) uint8 (0 on void)."""
    width = labels[0].shape[1]
    if any(lab.shape[1] != width for lab in labels):
        raise ValueError(f"label maps to stack must share one width, got {[lab.shape for lab in labels]}")
    height = sum(lab.shape[0] for lab in labels)
    words = _color_words(mapping)
    target = np.empty((3, height, width), np.uint8)
    valid = np.empty((1, height, width), np.uint8)
    top = 0
    for lab in labels:
        rows = slice(top, top + lab.shape[0])
        # one gather of 32-bit colour words, then one strided copy into the three planes: faster than gathering
        # 3-byte rows or each plane on its own (BENCHMARKS.md §7)
        painted = words.take(lab, mode="clip")  # mode="clip": unbuffered; values lie in [0, SEM_VOID] already
        target[:, rows] = painted.view(np.uint8).reshape(*lab.shape, 4).transpose(2, 0, 1)[:3]
        np.not_equal(lab, SEM_VOID, out=valid[0, rows].view(bool))
        top = rows.stop
    return target, valid


def _default_grid(n: int, rng: np.random.Generator) -> tuple[int, int]:
    """The most square rows x cols = n, turned a random way (1 x 3 or 3 x 1, 2 x 2, 2 x 3 or 3 x 2...)."""
    rows = max(r for r in range(1, int(n**0.5) + 1) if n % r == 0)
    return (rows, n // rows) if rng.random() < 0.5 else (n // rows, rows)


def mix_context(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    rng: np.random.Generator,
    out_size: tuple[int, int],
    grid: tuple[int, int] | None = None,
    scale: tuple[float, float] = (0.5, 1.0),  # U(0.5, 1) of each side: our choice (no source gives one)
) -> tuple[np.ndarray, np.ndarray]:
    """Images and label maps stitched into a grid, cropped at random, resized -> (H, W, 3) uint8, (H, W) int32.

    Args:
        images: n (H_i, W_i, 3) uint8 images, each stretched to fill its cell (row-major).
        labels: n (H_i, W_i) label maps in [0, SEM_VOID], of one label space (to paint with one mapping).
        rng: the only source of randomness.
        out_size: (H, W) of the result.
        grid: (rows, cols) with rows * cols = n; default: the most square, in a random orientation.
        scale: range of the crop's side as a fraction of the grid's, drawn per axis.
    """
    n = len(images)
    if n == 0 or len(labels) != n:
        raise ValueError(f"need one label map per image, got {n} images and {len(labels)} label maps")
    rows, cols = grid if grid is not None else _default_grid(n, rng)
    if rows * cols != n:
        raise ValueError(f"grid {rows} x {cols} does not hold {n} images")
    out_h, out_w = out_size
    # crop in grid units: the grid spans [0, rows] x [0, cols], one unit per cell of the output's aspect ratio
    frac_h, frac_w = rng.uniform(scale[0], scale[1], size=2)
    y0, x0 = rng.uniform(0, 1 - frac_h) * rows, rng.uniform(0, 1 - frac_w) * cols
    y1, x1 = y0 + frac_h * rows, x0 + frac_w * cols
    # output pixel boundary of every grid line, clipped to the output
    ys = np.clip(np.round((np.arange(rows + 1) - y0) / (y1 - y0) * out_h), 0, out_h).astype(int)
    xs = np.clip(np.round((np.arange(cols + 1) - x0) / (x1 - x0) * out_w), 0, out_w).astype(int)
    image = np.zeros((out_h, out_w, 3), np.uint8)
    label = np.zeros((out_h, out_w), np.int32)
    for k in range(n):
        r, c = divmod(k, cols)
        (ta, tb), (la, lb) = ys[r : r + 2], xs[c : c + 2]
        if tb <= ta or lb <= la:
            continue  # this cell lies outside the crop
        img, lab = images[k], labels[k]
        if lab.shape != img.shape[:2]:
            raise ValueError(f"image {k}: shapes {img.shape} and {lab.shape} do not match")
        h, w = img.shape[:2]
        # the output rows [ta, tb) cover grid rows y0 + [ta, tb) * (y1 - y0) / out_h, i.e. these cell-local pixels
        top, bottom = ((y0 + np.array([ta, tb]) * (y1 - y0) / out_h) - r) * h
        left, right = ((x0 + np.array([la, lb]) * (x1 - x0) / out_w) - c) * w
        box = (max(left, 0.0), max(top, 0.0), min(right, w), min(bottom, h))
        size = (int(lb - la), int(tb - ta))
        # each image's part of the crop resampled once, from its source pixels (a float box): the image bilinear,
        # antialiased when shrinking, the labels nearest on the same grid, so ids stay exact and aligned
        image[ta:tb, la:lb] = Image.fromarray(img).resize(size, Image.Resampling.BILINEAR, box=box)
        # PIL mode "I" (32-bit): nearest keeps every id exactly
        label[ta:tb, la:lb] = Image.fromarray(lab.astype(np.int32)).resize(size, Image.Resampling.NEAREST, box=box)
    return image, label

"""Random colouring and mix-context stitching: SegGPT's two data-side ideas (seggpt_paper_facts.md §3).

Random colouring turns label maps into the colour targets of one in-context pair (or one mix-context
group): a random subset of the query's ids is chosen, each chosen id gets a random colour, and every
map of the group is painted with that one mapping, so colours carry no class identity and the model
has to read the task from the prompt.

    mapping = draw_mapping(candidate_ids(query_sem), rng)           # {id: (r, g, b)}
    target, valid = paint_planes([prompt_sem, query_sem], mapping)  # (3, 2h, w), (1, 2h, w)
    image, label = mix_context(images, label_maps, rng, out_size=(448, 448))  # then paint_planes([label], mapping)

Choices the paper leaves open, made here:

- Candidates are the ids > 0 present in the query (the last map), or the caller's `ids` (for example
  the categories that pairing found in both images). The subset size is uniform in 1..len(candidates)
  (capped by `max_ids` and by the number of colours), then the subset is uniform among those of that
  size: small and large subsets are equally likely, however many ids an image holds.
- Colours come from `COLORS`, an 8-level RGB lattice without the points within two levels of black
  (8^3 - 2^3 = 504 colours). Any two differ by at least one lattice step (36 of 255) in some channel
  and every one is at least 73 from black in its largest channel, so nearest-colour decoding over
  the mapping's colours plus black is unambiguous for any error below 18 per channel.
- Unchosen ids and background are black and count in the loss (the model must learn not to paint
  them); void pixels (`schema.SEM_VOID`) are black with valid weight 0.
- Mix-context: the paper stitches "several" images, then crops and resizes at random, with no numbers. How
  many (`PretrainDataModule(mix_pairs=2)`), the most square grid, and a crop side fraction uniform in
  [0.5, 1] per axis (`mix_context(scale=...)`) are our choice (no source gives one).

Everything is array arithmetic: painting is one lookup table `np.take` per map (or one gather for a
batch on the accelerator, `augment.paint_batch`), the candidate ids come from one `np.bincount`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from datamodules.schema import SEM_VOID

LEVELS = 8  # lattice levels per channel: step 255 / 7 ~ 36, enough colours for COCO's ~100 instances
_AXIS = np.round(np.linspace(0, 255, LEVELS)).astype(np.uint8)  # 0, 36, 73, 109, 146, 182, 219, 255
_LATTICE = np.stack(np.meshgrid(_AXIS, _AXIS, _AXIS, indexing="ij"), -1).reshape(-1, 3)
COLORS: np.ndarray = _LATTICE[_LATTICE.max(1) >= _AXIS[2]]  # (504, 3) uint8: two levels or more from black
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
    """A random colour mapping {id: (r, g, b)} over a subset of `candidates` (see the module docstring); empty when
    there is no candidate."""
    cap = min(len(candidates), len(COLORS), len(candidates) if max_ids is None else max_ids)
    if cap <= 0:
        return {}
    chosen = rng.choice(np.asarray(candidates), int(rng.integers(1, cap + 1)), replace=False)
    colors = COLORS[rng.choice(len(COLORS), len(chosen), replace=False)]
    return {int(i): (int(r), int(g), int(b)) for i, (r, g, b) in zip(chosen, colors, strict=True)}


def _color_words(mapping: Mapping) -> np.ndarray:
    """(NUM_LABELS,) uint32: each id's colour as one little-endian 32-bit word (r, g, b, 0), black if unmapped.

    Gathering words is 2-4x faster than gathering 3-byte rows."""
    lut = np.zeros((NUM_LABELS, 4), np.uint8)
    if mapping:
        lut[list(mapping), :3] = list(mapping.values())
    return lut.view("<u4")[:, 0]


def paint_planes(labels: Sequence[np.ndarray], mapping: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """Label maps of one width, stacked top to bottom and painted with `mapping` as a channels-first canvas.

    Returns target (3, sum H_i, W) uint8 (unmapped ids, background and void black) and valid (1, sum H_i, W)
    uint8 (0 on void). Each map is one gather of 32-bit colour words, then one strided copy into the three
    planes (1.5x three per-plane gathers); the canvas is written in place, with no transposed copy after.
    """
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
    """Stitch images and their label maps into a grid, then randomly crop and resize (mix-context).

    The grid is virtual: every cell has the output's aspect ratio and each image is stretched to fill
    its cell (row-major, in the given order). A crop whose height and width are each a uniform
    fraction in `scale` of the grid's, at a uniform position, is resized to `out_size`; each image's
    part of the crop is resampled once, straight from the source pixels into its part of the output
    (PIL `resize` with a float box). Images are bilinear (antialiased when shrinking); label maps are
    nearest on the same sampling grid, so ids stay exact and stay aligned with the image. The maps must
    share one label space (paint the result with one mapping: `paint_planes`).

    Args:
        images: n (H_i, W_i, 3) uint8 images.
        labels: n (H_i, W_i) integer label maps with values in [0, SEM_VOID].
        rng: the only source of randomness.
        out_size: (H, W) of the result.
        grid: (rows, cols) with rows * cols = n; default: the most square factorisation, random orientation.
        scale: range of the crop's side as a fraction of the grid's side, drawn per axis.

    Returns:
        image (H, W, 3) uint8, label (H, W) int32.
    """
    n = len(images)
    if n == 0 or len(labels) != n:
        raise ValueError(f"need one label map per image, got {n} images and {len(labels)} label maps")
    rows, cols = grid if grid is not None else _default_grid(n, rng)
    if rows * cols != n:
        raise ValueError(f"grid {rows} x {cols} does not hold {n} images")
    out_h, out_w = out_size
    # crop in grid units: the grid spans [0, rows] x [0, cols], one unit per cell
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
        image[ta:tb, la:lb] = Image.fromarray(img).resize(size, Image.Resampling.BILINEAR, box=box)
        # PIL mode "I" (32-bit): nearest keeps every id exactly
        label[ta:tb, la:lb] = Image.fromarray(lab.astype(np.int32)).resize(size, Image.Resampling.NEAREST, box=box)
    return image, label

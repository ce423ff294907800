"""Semi-supervised video object segmentation: J&F by the rules of the DAVIS 2017 toolkit
(davisvideochallenge/davis2017-evaluation): objects 1..K, K the largest id of the first ground-truth frame; first
and last frames unscored; void is background; means over objects. Shapes: T frames, K objects, H x W pixels.

Masks are scored bit-packed in numpy, 64 pixels a uint64 word; no library offers packed binary morphology, hence
the hand-written shifts (against per-object OpenCV: BENCHMARKS.md, section 4).
"""


from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from seggpt_lab.canvas import IGNORE_LABEL

BOUND_TH = 0.008  # davis2017/metrics.py f_measure default: a fraction of the diagonal (< 1) or pixels (>= 1)
_CHUNK_PIXELS = 2**22  # a sequence is scored a few frames at a time: K x t x H x W mask bytes stay near 4 MB


# --- bit-packed masks (numpy): pixel x of a row is bit x % 64 of word x // 64, words little-endian uint64 ---

WORD = np.dtype("<u8")  # explicit byte order: the bit layout holds on any machine


def pack_bits(masks: np.ndarray) -> np.ndarray:
    """(..., H, W) bool -> (..., H, ceil(W / 64)) uint64 words; bits past W are 0."""
    packed = np.packbits(masks, axis=-1, bitorder="little")
    pad = -packed.shape[-1] % 8
    if pad:
        packed = np.pad(packed, [(0, 0)] * (packed.ndim - 1) + [(0, pad)])
    return packed.view(WORD)


def unpack_bits(bits: np.ndarray, width: int) -> np.ndarray:
    """The inverse of `pack_bits`: (..., H, words) -> (..., H, width) bool."""
    return np.unpackbits(np.ascontiguousarray(bits).view(np.uint8), axis=-1, count=width, bitorder="little").view(bool)


def popcount(bits: np.ndarray) -> np.ndarray:
    """(..., H, words) -> (...,) int64: set bits per mask (the CPU's popcount instruction)."""
    return np.bitwise_count(bits).reshape(*bits.shape[:-2], -1).sum(-1, dtype=np.int64)


def _or_shifted(out: np.ndarray, src: np.ndarray, s: int) -> None:
    """out |= src with every pixel moved s along the row (s < 0: towards 0), on contiguous arrays. The words move as
    one flat sequence (much faster than slices of short rows), so a row's end carries into the next row: the
    dilation keeps zero margin words wider than any move, and the boundary map masks the receiving column."""
    if not (out.flags.c_contiguous and src.flags.c_contiguous):  # a flattened copy would take the writes
        raise ValueError("_or_shifted works on C-contiguous arrays")
    out, src = out.reshape(-1), src.reshape(-1)
    n = src.size
    q, t = divmod(abs(s), 64)
    if q >= n:
        return
    if s > 0:  # word i takes word i - q shifted up, and the top t bits of word i - q - 1
        out[q:] |= src[:n - q] << np.uint64(t)
        if t:
            out[q + 1:] |= src[:n - q - 1] >> np.uint64(64 - t)
    else:  # word i takes word i + q shifted down, and the low t bits of word i + q + 1
        out[:n - q] |= src[q:] >> np.uint64(t)
        if t:
            out[:n - q - 1] |= src[q + 1:] << np.uint64(64 - t)


def boundary_bits(bits: np.ndarray, width: int) -> np.ndarray:
    """`boundary_map` on packed masks of the given width."""
    bits = np.ascontiguousarray(bits)
    east = np.zeros_like(bits)  # east[x] = mask[x + 1]; the last word's top bit takes the next row's first
    _or_shifted(east, bits, -1)
    inner = pack_bits(np.arange(bits.shape[-1] * 64) < width - 1)  # the last column has no east neighbour
    b = (bits ^ east) & inner
    b[..., :-1, :] |= bits[..., :-1, :] ^ bits[..., 1:, :]
    b[..., :-1, :] |= (bits[..., :-1, :] ^ east[..., 1:, :]) & inner
    return b


def dilate_bits(bits: np.ndarray, radius: int) -> np.ndarray:
    """`disk_dilation` on packed masks: horizontal runs by doubling (half-width w from a < w as run_a | run_a moved
    by +-(w - a), exact while w - a <= 2a + 1), then one shifted OR per disk row. Zero margin words keep the pixels
    that leave the frame for the steps that bring them back, and keep rows apart in `_or_shifted`."""
    margin = -(-radius // 64)
    padded = np.pad(bits, [(0, 0)] * (bits.ndim - 1) + [(margin, margin)])
    half_widths = [math.isqrt(radius * radius - dy * dy) for dy in range(radius + 1)]
    runs, a = {0: padded}, 0
    for w in sorted(set(half_widths) - {0}):
        while a < w:
            step = min(w - a, 2 * a + 1)
            run = runs[a].copy()
            _or_shifted(run, runs[a], step)
            _or_shifted(run, runs[a], -step)
            a += step
            runs[a] = run
    out = runs[half_widths[0]].copy()
    for dy in range(1, radius + 1):
        row = runs[half_widths[dy]]
        out[..., dy:, :] |= row[..., :-dy, :]
        out[..., :-dy, :] |= row[..., dy:, :]
    return out[..., margin: out.shape[-1] - margin]


def _as_bytes(labels: np.ndarray, num_objects: int) -> np.ndarray:
    """uint8 labels when objects 1..K fit (4-8 times less to compare); ids above 255 become 255, no object."""
    if num_objects >= 255 or labels.dtype == np.uint8:
        return labels
    return (np.minimum(labels, 255) if labels.max() > 255 else labels).astype(np.uint8)


def label_bits(labels: np.ndarray, num_objects: int) -> np.ndarray:
    """(..., H, W) integer label map -> (K, ..., H, words) packed masks of objects 1..K; other ids are background."""
    labels = _as_bytes(labels, num_objects)
    ids = np.arange(1, num_objects + 1, dtype=labels.dtype).reshape(-1, *[1] * labels.ndim)
    return pack_bits(labels[None] == ids)


def _j_and_f(pred: np.ndarray, target: np.ndarray, height: int, width: int, bound_th: float
             ) -> tuple[Tensor, Tensor]:
    """J and F of packed masks (..., H, words), each (...,) float64: every pixel count taken by one popcount."""
    bounds = boundary_bits(np.stack([pred, target]), width)  # (2, ..., H, words)
    # only the box around every boundary pixel (plus the radius) can hold a hit: dilate that part alone
    radius = boundary_radius(height, width, bound_th)
    lead = tuple(range(bounds.ndim - 2))
    rows, words = np.flatnonzero(bounds.any(axis=(*lead, -1))), np.flatnonzero(bounds.any(axis=(*lead, -2)))
    if rows.size:
        margin = -(-radius // 64)
        box = (..., slice(max(rows[0] - radius, 0), rows[-1] + radius + 1),
               slice(max(words[0] - margin, 0), words[-1] + margin + 1))
        bounds = bounds[box]
    dilated = dilate_bits(bounds, radius)
    counts = popcount(np.stack([pred & target, pred | target]))
    counts = np.concatenate([counts, popcount(np.stack([bounds[0], bounds[1], bounds[0] & dilated[1],
                                                        bounds[1] & dilated[0]]))])
    inter, union, n_pred, n_gt, hit_pred, hit_gt = torch.from_numpy(counts).double()
    j = torch.where(union > 0, inter / union.clamp(min=1), 1.0)
    # an empty boundary has nothing to miss: P = 1 without a predicted one, R = 1 without a ground-truth one
    precision = torch.where(n_pred > 0, hit_pred / n_pred.clamp(min=1), 1.0)
    recall = torch.where(n_gt > 0, hit_gt / n_gt.clamp(min=1), 1.0)
    total = precision + recall
    return j, torch.where(total > 0, 2 * precision * recall / total.clamp(min=1e-12), 0.0)


def _numpy(masks: Tensor) -> np.ndarray:
    return masks.detach().cpu().numpy()


# --- J and F ---

def boundary_map(masks: Tensor) -> Tensor:
    """(..., H, W) bool -> (..., H, W) bool: pixels that differ from an in-frame east, south or south-east neighbour,
    as the toolkit's `_seg2bmap` (whose special cases are the out-of-frame neighbours); a full-frame mask has none."""
    width = masks.shape[-1]
    return torch.from_numpy(unpack_bits(boundary_bits(pack_bits(_numpy(masks)), width), width)).to(masks.device)


def boundary_radius(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """Matching tolerance in pixels: `bound_th` itself when >= 1, else ceil(bound_th * sqrt(H^2 + W^2)), as
    davis2017/metrics.py f_measure (480 x 854 -> 8 pixels)."""
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"bound_th >= 1 is a radius in pixels and must be whole, got {bound_th}")
        return int(bound_th)
    return math.ceil(bound_th * math.sqrt(height * height + width * width))


def disk_dilation(masks: Tensor, radius: int) -> Tensor:
    """(..., H, W) bool dilated by the digital disk {dx^2 + dy^2 <= radius^2}, nothing entering from outside the
    frame: the toolkit's `cv2.dilate(mask, skimage.morphology.disk(radius))`."""
    width = masks.shape[-1]
    return torch.from_numpy(unpack_bits(dilate_bits(pack_bits(_numpy(masks)), radius), width)).to(masks.device)


def region_similarity(pred: Tensor, target: Tensor) -> Tensor:
    """J: (..., H, W) bool masks -> (...,) float64 IoU; 1 where both masks are empty (db_eval_iou)."""
    p, t = pack_bits(_numpy(pred)), pack_bits(_numpy(target))
    inter, union = torch.from_numpy(popcount(np.stack([p & t, p | t]))).double()
    return torch.where(union > 0, inter / union.clamp(min=1), 1.0).to(pred.device)


def boundary_f_measure(pred: Tensor, target: Tensor, bound_th: float = BOUND_TH) -> Tensor:
    """F: (..., H, W) bool masks -> (...,) float64 boundary F-measure (the toolkit's `f_measure`); without a predicted
    boundary P = 1, R = 0, without a ground-truth one P = 0, R = 1, with neither F = 1."""
    f = _j_and_f(pack_bits(_numpy(pred)), pack_bits(_numpy(target)), *pred.shape[-2:], bound_th)[1]
    return f.to(pred.device)


def object_j_and_f(pred: Tensor, target: Tensor, num_objects: int, bound_th: float = BOUND_TH
                   ) -> tuple[Tensor, Tensor]:
    """Label maps (..., H, W) -> J and F of objects 1..K, each (K, ...) float64 on the labels' device; ids
    outside 1..K are background."""
    labels = np.stack([_as_bytes(_numpy(pred), num_objects), _as_bytes(_numpy(target), num_objects)])
    bits = label_bits(labels, num_objects)  # (K, 2, ..., H, words)
    j, f = _j_and_f(bits[:, 0], bits[:, 1], *pred.shape[-2:], bound_th)
    return j.to(pred.device), f.to(pred.device)


def per_object_statistics(values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(K, n) per-frame scores -> (mean, recall, decay), each (K,) (davis2017/utils.py db_statistics): recall is the
    share of frames above 0.5, decay the mean of the first of four overlapping bins minus the last's (the
    toolkit's uint8 bin edges wrap past 255 frames; these do not)."""
    n = values.shape[-1]
    if n == 0:
        raise ValueError("no frames to score: semi-supervised J&F needs at least 3 frames (first and last are dropped)")
    edges = [(i * (n - 1) + 2) // 4 for i in range(5)]  # round(1 + i (n - 1) / 4 + 1e-10) - 1, exactly
    decay = values[:, edges[0]: edges[1] + 1].mean(-1) - values[:, edges[3]: edges[4] + 1].mean(-1)
    return values.mean(-1), (values > 0.5).double().mean(-1), decay


def sequence_j_and_f(pred: Tensor, target: Tensor, bound_th: float = BOUND_TH, void: int = IGNORE_LABEL
                     ) -> tuple[Tensor, Tensor]:
    """One sequence's label maps (T, H, W) -> per-object J and F of frames 1..T-2, each (K, T - 2) float64; K is the
    first ground-truth frame's largest id (void excluded); a predicted id above K raises ValueError."""
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(f"pred and target must both be (T, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.shape[0] < 3:
        raise ValueError(f"semi-supervised J&F drops the first and the last frame; got only {pred.shape[0]} frames")
    first = target[0].long()
    num_objects = int(torch.where(first == void, 0, first).max())
    if 0 < void <= num_objects:  # otherwise void is above K, and ids above K are background anyway
        target = torch.where(target == void, 0, target)
    top = int(pred.max())
    if top > num_objects:
        raise ValueError(f"the prediction holds object id {top} but the first ground-truth frame has only "
                         f"{num_objects} object(s): ids above {num_objects} are not allowed")
    pred, target = pred[1:-1], target[1:-1]
    frames = pred.shape[0]
    j = torch.empty(num_objects, frames, dtype=torch.float64, device=pred.device)
    f = torch.empty_like(j)
    step = max(1, _CHUNK_PIXELS // (max(num_objects, 1) * pred[0].numel()))
    for start in range(0, frames, step):
        stop = min(start + step, frames)
        j[:, start:stop], f[:, start:stop] = object_j_and_f(pred[start:stop], target[start:stop], num_objects, bound_th)
    return j, f


class JandF(Metric):
    """DAVIS semi-supervised J&F: `update(pred, target)` with one whole sequence (T, H, W); `compute()` -> {"J&F",
    "J", "F", "J-recall", "F-recall", "J-decay", "F-decay"} x100, means over all objects, exact for any split of
    the sequences across processes.

    Args:

        bound_th: boundary tolerance, a fraction of the image diagonal (< 1) or pixels (>= 1).
        void: the ground-truth value that counts as background.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    keys = ("J", "J-recall", "J-decay", "F", "F-recall", "F-decay")

    def __init__(self, bound_th: float = BOUND_TH, void: int = IGNORE_LABEL, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bound_th = bound_th
        self.void = void
        self.add_state("totals", torch.zeros(len(self.keys), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_objects", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.last_sequence: tuple[Tensor, Tensor] | None = None  # not a state: the latest update's J and F

    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred, target: (T, H, W) integer label maps of one sequence (0 background, 1..K objects)."""
        j, f = sequence_j_and_f(pred, target, self.bound_th, self.void)
        self.last_sequence = (j, f)
        stats = torch.stack([*per_object_statistics(j), *per_object_statistics(f)])  # (6, K)
        self.totals += stats.sum(-1).to(self.totals)
        self.num_objects += j.shape[0]

    def compute(self) -> dict[str, Tensor]:
        means = 100 * self.totals / self.num_objects
        scores = dict(zip(self.keys, means, strict=True))
        return {"J&F": (scores["J"] + scores["F"]) / 2, **scores}

"""Semi-supervised video object segmentation: J&F by the DAVIS 2017 toolkit's rules.

Rules (davisvideochallenge/davis2017-evaluation, ecosystem.md §4a): objects are 1..K with K the largest
id of the first ground-truth frame; the first and the last frame are not scored; void (255) counts as
background (davis2017/davis.py zeroes it on reading, so the semi-supervised void mask is empty). Per
object and frame, J is the region IoU (1 when both masks are empty) and F the boundary F-measure:
1-pixel boundaries, matched within a disk of radius ceil(0.008 * image diagonal). Per object, mean /
recall (frames > 0.5) / decay (first minus last of four overlapping bins); the reported numbers are
means over objects, every object of every sequence weighing the same.

Shapes: T frames, K objects, N independent masks (any leading dimensions), H x W pixels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

VOID = 255  # davis2017/evaluation.py _VOID_LABEL
BOUND_TH = 0.008  # davis2017/metrics.py f_measure default: a fraction of the diagonal (< 1) or pixels (>= 1)
_CHUNK_PIXELS = 2**21  # a sequence is scored a few frames at a time: about 2 MB of masks stays in cache


def boundary_map(masks: Tensor) -> Tensor:
    """(..., H, W) bool -> (..., H, W) bool: pixels that differ from an in-frame east, south or south-east neighbour.

    This is the toolkit's `_seg2bmap`: 1-pixel boundaries offset half a pixel towards the origin; its
    special cases (last row compared only eastwards, last column only southwards, corner never a
    boundary) are exactly the neighbours that fall outside the frame. A mask that fills the frame has none.
    """
    b = torch.zeros_like(masks)
    b[..., :, :-1] |= masks[..., :, :-1] ^ masks[..., :, 1:]
    b[..., :-1, :] |= masks[..., :-1, :] ^ masks[..., 1:, :]
    b[..., :-1, :-1] |= masks[..., :-1, :-1] ^ masks[..., 1:, 1:]
    return b


def boundary_radius(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """Matching tolerance in pixels: `bound_th` itself when >= 1, else ceil(bound_th * sqrt(H^2 + W^2)).

    480 x 854 -> 8 pixels, 480 x 910 -> 9 (davis2017/metrics.py f_measure).
    """
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"bound_th >= 1 is a radius in pixels and must be whole, got {bound_th}")
        return int(bound_th)
    return math.ceil(bound_th * math.sqrt(height * height + width * width))


def disk_dilation(masks: Tensor, radius: int) -> Tensor:
    """(..., H, W) bool dilated by the digital disk {dx^2 + dy^2 <= radius^2}; nothing enters from outside the frame.

    The same set as `cv2.dilate(mask, skimage.morphology.disk(radius))` in the toolkit, computed as the
    union over rows dy of the disk of a horizontal run of half-width isqrt(radius^2 - dy^2): about 4 * radius
    in-place ORs of the whole stack, against (2 * radius + 1)^2 multiply-adds per pixel for a convolution.
    """
    half_widths = {dy: math.isqrt(radius * radius - dy * dy) for dy in range(radius + 1)}
    runs, run = {0: masks}, masks
    for w in range(1, radius + 1):  # run[..., y, x]: a mask pixel in row y within |dx| <= w of x
        grown = run.clone()
        grown[..., 1:] |= run[..., :-1]
        grown[..., :-1] |= run[..., 1:]
        run = grown
        if w in half_widths.values():
            runs[w] = run
    out = runs[half_widths[0]].clone()
    for dy in range(1, radius + 1):
        row = runs[half_widths[dy]]
        out[..., dy:, :] |= row[..., :-dy, :]
        out[..., :-dy, :] |= row[..., dy:, :]
    return out


def count(masks: Tensor) -> Tensor:
    """(..., H, W) bool -> (...,) float64 pixel counts. Summed as uint8 into int32 over one flattened axis: on CPU
    a bool sum (to int64) is 3.6x slower, and a two-axis one ~10x (480 x 854 x 6: 0.75 against 2.7 ms)."""
    return masks.flatten(-2).view(torch.uint8).sum(-1, dtype=torch.int32).double()


def region_similarity(pred: Tensor, target: Tensor) -> Tensor:
    """J: (..., H, W) bool masks -> (...,) float64 IoU; 1 where both masks are empty (db_eval_iou)."""
    inter, union = count(pred & target), count(pred | target)
    return torch.where(union > 0, inter / union.clamp(min=1), 1.0)


def boundary_f_measure(pred: Tensor, target: Tensor, bound_th: float = BOUND_TH) -> Tensor:
    """F: (..., H, W) bool masks -> (...,) float64 boundary F-measure (the toolkit's `f_measure`).

    Precision is the fraction of predicted boundary pixels within the tolerance disk of a ground-truth
    boundary pixel, recall the converse. Without a predicted boundary P = 1, R = 0; without a
    ground-truth boundary P = 0, R = 1; with neither, F = 1.
    """
    radius = boundary_radius(*pred.shape[-2:], bound_th)
    bounds = boundary_map(torch.stack([pred, target]))  # (2, ..., H, W)
    dilated = disk_dilation(bounds, radius)
    n_pred, n_gt = count(bounds)
    hit_pred, hit_gt = count(bounds[0] & dilated[1]), count(bounds[1] & dilated[0])
    # an empty boundary has nothing to miss: P = 1 without a predicted one, R = 1 without a ground-truth one
    precision = torch.where(n_pred > 0, hit_pred / n_pred.clamp(min=1), 1.0)
    recall = torch.where(n_gt > 0, hit_gt / n_gt.clamp(min=1), 1.0)
    total = precision + recall
    return torch.where(total > 0, 2 * precision * recall / total.clamp(min=1e-12), 0.0)


def per_object_statistics(values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(K, n) per-frame scores -> (mean, recall, decay), each (K,) (davis2017/utils.py db_statistics).

    Recall is the fraction of frames above 0.5; decay is the mean of the first of four bins minus the
    mean of the last. Bin edges are round-half-up(linspace(1, n, 5)) - 1 and bin i spans edges i..i+1
    inclusive, so neighbouring bins share a frame. (The toolkit stores the edges as uint8, which wraps
    for sequences over 255 frames; these edges do not.)
    """
    n = values.shape[-1]
    if n == 0:
        raise ValueError("no frames to score: semi-supervised J&F needs at least 3 frames (first and last are dropped)")
    edges = [(i * (n - 1) + 2) // 4 for i in range(5)]  # round(1 + i (n - 1) / 4 + 1e-10) - 1, exactly
    decay = values[:, edges[0]: edges[1] + 1].mean(-1) - values[:, edges[3]: edges[4] + 1].mean(-1)
    return values.mean(-1), (values > 0.5).double().mean(-1), decay


def sequence_j_and_f(pred: Tensor, target: Tensor, bound_th: float = BOUND_TH, void: int = VOID
                     ) -> tuple[Tensor, Tensor]:
    """One sequence's label maps (T, H, W) -> per-object, per-frame J and F, each (K, T - 2) float64.

    K = the largest id in the first ground-truth frame (void excluded); ground-truth ids above K are
    background; a predicted id above K is an error. Frames 0 and T - 1 are dropped.
    """
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(f"pred and target must both be (T, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.shape[0] < 3:
        raise ValueError(f"semi-supervised J&F drops the first and the last frame; got only {pred.shape[0]} frames")
    target = torch.where(target == void, 0, target.long())
    num_objects = int(target[0].max())
    top = int(pred.max())
    if top > num_objects:
        raise ValueError(f"the prediction holds object id {top} but the first ground-truth frame has only "
                         f"{num_objects} object(s): ids above {num_objects} are not allowed")
    pred, target = pred[1:-1].long(), target[1:-1]
    frames = pred.shape[0]
    j = torch.empty(num_objects, frames, dtype=torch.float64, device=pred.device)
    f = torch.empty_like(j)
    step = max(1, _CHUNK_PIXELS // (max(num_objects, 1) * pred[0].numel()))
    ids = torch.arange(1, num_objects + 1, device=pred.device)[:, None, None, None]
    for start in range(0, frames, step):
        stop = min(start + step, frames)
        pred_masks = pred[None, start:stop] == ids  # (K, t, H, W)
        target_masks = target[None, start:stop] == ids
        j[:, start:stop] = region_similarity(pred_masks, target_masks)
        f[:, start:stop] = boundary_f_measure(pred_masks, target_masks, bound_th)
    return j, f


class JandF(Metric):
    """DAVIS semi-supervised J&F over sequences: `update(pred, target)` with one whole sequence (T, H, W).

    `compute()` -> {"J&F", "J", "F", "J-recall", "F-recall", "J-decay", "F-decay"}, x100, means over all
    objects seen. Each sequence's per-object statistics are final once its update returns, so the
    states are their sums and an object count: summed across processes, exact for any split of sequences.

    Args:
        bound_th: boundary tolerance, a fraction of the image diagonal (< 1) or pixels (>= 1).
        void: the ground-truth value that counts as background.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    keys = ("J", "J-recall", "J-decay", "F", "F-recall", "F-decay")

    def __init__(self, bound_th: float = BOUND_TH, void: int = VOID, **kwargs) -> None:
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

"""Panoptic segmentation: PQ, SQ and RQ by the rules of cocodataset/panopticapi panopticapi/evaluation.py.

Segments of one category match when their IoU, the prediction's void pixels left out, exceeds 0.5; crowd ground
truth is never matched nor missed, and a prediction more than half on void or same-category crowd is no FP.
One difference: panopticapi remembers the last crowd segment per category and image, here all of them count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

VOID = 0  # panopticapi VOID: unlabelled pixels in the ground truth, no segment in a prediction
Prediction = tuple[Tensor, Mapping[int, int]]  # (H, W) segment ids, {segment id: category id}
GroundTruth = tuple[Tensor, Mapping[int, tuple[int, bool]]]  # (H, W) segment ids, {segment id: (category, iscrowd)}


def _check_segments(areas: Mapping[int, int], segments: Mapping[int, int], known: Collection[int], name: str) -> None:
    """The map's segments (their pixel counts) and its segment list agree (panopticapi checks this for
    predictions), and every category is known."""
    if areas.keys() - segments.keys():
        raise ValueError(f"{name} segment ids {sorted(areas.keys() - segments.keys())} are in the map "
                         "but not in its segment list")
    if segments.keys() - areas.keys():
        raise ValueError(f"{name} segment ids {sorted(segments.keys() - areas.keys())} are listed "
                         "but have no pixel in the map")
    unknown = {c for c in segments.values() if c not in known}
    if unknown:
        raise ValueError(f"{name} segments have unknown category ids {sorted(unknown)}")


def panoptic_statistics(pred: Prediction, target: GroundTruth, categories: Sequence[int]
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One image -> per-category (TP, FP, FN, sum of matched IoUs), each (C,) in the order of `categories`; one
    count of (ground-truth id, predicted id) pairs gives every overlap and every segment's area."""
    pred_ids, pred_segments = pred
    gt_ids, gt_info = target
    if pred_ids.shape != gt_ids.shape:
        raise ValueError(f"prediction and ground-truth maps differ in shape: {tuple(pred_ids.shape)} "
                         f"and {tuple(gt_ids.shape)}")
    for ids, name in ((pred_ids, "predicted"), (gt_ids, "ground-truth")):
        if ids.numel() and ids.min() < 0:
            raise ValueError(f"{name} segment ids must be >= 0, got {ids.min().item()}")
    gt_segments = {g: int(c) for g, (c, _) in gt_info.items()}
    crowd = {g for g, (_, iscrowd) in gt_info.items() if iscrowd}
    index = {c: i for i, c in enumerate(categories)}

    offset = int(pred_ids.max()) + 1 if pred_ids.numel() else 1
    keys = gt_ids.long() * offset + pred_ids.long()
    size = (int(gt_ids.max()) + 1 if gt_ids.numel() else 1) * offset
    if size <= max(4 * keys.numel(), 1 << 16):  # dense ids (ours are 1..N): one linear-time count, no sort
        counts = torch.bincount(keys.flatten(), minlength=size)
        pairs = counts.nonzero().flatten()
        counts = counts[pairs]
    else:  # sparse ids (COCO's RGB-coded ones): sort once
        pairs, counts = torch.unique(keys, return_counts=True)
    overlaps = {(k // offset, k % offset): n for k, n in zip(pairs.tolist(), counts.tolist(), strict=True)}
    pred_area: dict[int, int] = defaultdict(int)
    gt_area: dict[int, int] = defaultdict(int)
    for (g, p), n in overlaps.items():
        pred_area[p] += n
        gt_area[g] += n
    pred_area.pop(VOID, None)
    gt_area.pop(VOID, None)
    _check_segments(pred_area, pred_segments, index, "predicted")
    _check_segments(gt_area, gt_segments, index, "ground-truth")
    on_void = {p: n for (g, p), n in overlaps.items() if g == VOID}

    tp, fp, fn = ([0] * len(categories) for _ in range(3))
    iou_sum = [0.0] * len(categories)
    matched_gt, matched_pred = set(), set()
    on_crowd: dict[int, int] = defaultdict(int)  # predicted segment -> pixels on crowd ground truth of its category
    for (g, p), n in overlaps.items():
        if g == VOID or p == VOID or gt_segments[g] != pred_segments[p]:
            continue
        if g in crowd:
            on_crowd[p] += n
            continue
        iou = n / (pred_area[p] + gt_area[g] - n - on_void.get(p, 0))
        if iou > 0.5:
            tp[index[gt_segments[g]]] += 1
            iou_sum[index[gt_segments[g]]] += iou
            matched_gt.add(g)
            matched_pred.add(p)
    for g, category in gt_segments.items():
        if g not in matched_gt and g not in crowd:
            fn[index[category]] += 1
    for p, category in pred_segments.items():
        if p not in matched_pred and (on_void.get(p, 0) + on_crowd[p]) / pred_area[p] <= 0.5:
            fp[index[category]] += 1
    return torch.tensor(tp), torch.tensor(fp), torch.tensor(fn), torch.tensor(iou_sum, dtype=torch.float64)


def panoptic_scores(tp: Tensor, fp: Tensor, fn: Tensor, iou_sum: Tensor, is_thing: Tensor) -> dict[str, Tensor]:
    """Per-category sums (C,) -> {"PQ", "SQ", "RQ"} for all, "_th" things and "_st" stuff categories, x100 (NaN
    for a group without a counted category)."""
    tp, fp, fn, iou_sum = tp.double(), fp.double(), fn.double(), iou_sum.double()
    counted = (tp + fp + fn) > 0
    denominator = (tp + fp / 2 + fn / 2).clamp(min=1e-12)
    per_category = {"PQ": iou_sum / denominator, "SQ": torch.where(tp > 0, iou_sum / tp.clamp(min=1), 0.0),
                    "RQ": tp / denominator}
    scores = {}
    for suffix, group in (("", counted), ("_th", counted & is_thing), ("_st", counted & ~is_thing)):
        for name, values in per_category.items():
            scores[name + suffix] = 100 * values[group].mean()
    return scores


class PanopticQuality(Metric):
    """COCO panoptic quality: `update(pred, target)` per image (segment id 0 is void); `compute()` -> {"PQ", "SQ",
    "RQ"} and their "_th" (things) and "_st" (stuff) versions, x100.

    Args:

        things: the category ids of countable objects.
        stuff: the category ids of amorphous regions.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, things: Collection[int], stuff: Collection[int], **kwargs) -> None:
        super().__init__(**kwargs)
        things, stuff = {int(c) for c in things}, {int(c) for c in stuff}
        if things & stuff:
            raise ValueError(f"categories {sorted(things & stuff)} are listed as both things and stuff")
        if VOID in things | stuff:
            raise ValueError(f"category id {VOID} is reserved for void")
        self.categories = sorted(things | stuff)
        self.things = things
        for name in ("tp", "fp", "fn"):
            self.add_state(name, torch.zeros(len(self.categories), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("iou_sum", torch.zeros(len(self.categories), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Prediction, target: GroundTruth) -> None:
        """pred: ((H, W) segment ids, {id: category}); target: ((H, W) segment ids, {id: (category, iscrowd)})."""
        for state, value in zip(("tp", "fp", "fn", "iou_sum"), panoptic_statistics(pred, target, self.categories),
                                strict=True):
            getattr(self, state).add_(value.to(getattr(self, state).device))

    def compute(self) -> dict[str, Tensor]:
        is_thing = torch.tensor([c in self.things for c in self.categories], device=self.tp.device)
        return panoptic_scores(self.tp, self.fp, self.fn, self.iou_sum, is_thing)

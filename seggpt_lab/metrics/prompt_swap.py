"""Prompt-following: does the prediction follow what the prompt shows? Scores of prompt-swap episodes.

A query holds two objects A and B and is segmented twice, prompted by A (target A, distractor B) and by B. Per
role, IoU_t and IoU_d are the IoU with target and distractor, void left out. Scores (x100):
- S: mean over queries of the mean over both roles of IoU_t - IoU_d, exactly 0 for a predictor that ignores the
  prompt; `S_low`, `S_high`: its 95% percentile bootstrap interval over queries, from a fixed seed.
- A: the share of queries with IoU_t > IoU_d in both roles (0 for a prompt-blind predictor).
- mIoU: HSNet's few-shot mIoU over the target roles; recall: the share of target pixels painted.
- absent_painted (`update_absent`): prompted by a category in neither object, the share of their pixels painted.
- S/<kind>, A/<kind>, queries/<kind>: the same per distractor kind.
Rows are deduplicated by (query, role) before scoring: exact under DDP, padded samplers included.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from seggpt_lab.canvas import IGNORE_LABEL

# columns of one episode row
QUERY, ROLE, CLASS, KIND, INTER_T, UNION_T, INTER_D, UNION_D, AREA_T = range(9)


def role_areas(pred: Tensor, target: Tensor, distractor: Tensor, ignore_index: int = IGNORE_LABEL) -> Tensor:
    """(B, H, W) binary prediction, target and distractor maps (void: `ignore_index` in either) -> (B, 5) long:
    intersection and union with the target, with the distractor, and the target's area, void left out."""
    if not pred.shape == target.shape == distractor.shape or pred.dim() != 3:
        raise ValueError(f"pred, target and distractor must all be (B, H, W), got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)} and {tuple(distractor.shape)}")
    if ((pred != 0) & (pred != 1)).any():
        raise ValueError(f"pred must be binary {{0, 1}}, got values {pred.unique().tolist()}")
    valid = (target != ignore_index) & (distractor != ignore_index)  # one valid set for both roles of a query
    p = (pred == 1) & valid
    t, d = (target == 1) & valid, (distractor == 1) & valid
    if (t & d).any():
        raise ValueError("target and distractor overlap: a pixel belongs to one object")
    out = [(p & t), (p | t), (p & d), (p | d), t]
    return torch.stack([x.flatten(1).sum(-1) for x in out], -1)


def _mean_or_zero(x: Tensor) -> Tensor:
    return x.mean() if x.numel() else x.new_zeros(())


class PromptSwap(Metric):
    """Prompt-swap scores: `update` per episode batch, `update_absent(pred, objects)` per absent-category control;
    `compute()` -> the module docstring's scores and "queries" (only queries with both roles count in S and A).

    Args:
        class_ids: the classes the mIoU averages over; None: those of the target roles seen.
        kinds: names of the distractor kinds; `update`'s `kind` indexes them.
        bootstrap: resamples for the interval of S.
        seed: the bootstrap's seed.
        ignore_index: the void value of target and distractor maps.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    FIGURES = ("S", "S_low", "S_high", "A", "mIoU", "recall", "absent_painted", "queries")  # compute()'s, and per kind
    KIND_FIGURES = ("S", "A", "queries")  # "S/<kind>" etc., with more than one kind

    def __init__(self, class_ids: Sequence[int] | None = None, kinds: Sequence[str] = ("all",), bootstrap: int = 1000,
                 seed: int = 0, ignore_index: int = IGNORE_LABEL, **kwargs) -> None:
        super().__init__(**kwargs)
        if not kinds or len(set(kinds)) != len(kinds):
            raise ValueError(f"kinds must be distinct names, got {list(kinds)}")
        if bootstrap < 1:
            raise ValueError(f"bootstrap must be >= 1, got {bootstrap}")
        self.class_ids = None if class_ids is None else sorted(int(c) for c in class_ids)
        self.kinds, self.bootstrap, self.seed, self.ignore_index = list(kinds), bootstrap, seed, ignore_index
        self.add_state("episodes", [], dist_reduce_fx="cat")
        self.add_state("absent_painted", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("absent_objects", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, distractor: Tensor, query: Tensor, role: Tensor,
               class_id: Tensor, kind: Tensor | None = None) -> None:
        """pred (B, H, W) in {0, 1}; target, distractor (B, H, W) in {0, 1, ignore_index}; per episode (B,): the
        query's index, role 0/1 (which object is the target), the target's class_id, the index of its `kind`."""

        areas = role_areas(pred, target, distractor, self.ignore_index)
        n = areas.shape[0]
        kind = torch.zeros(n, dtype=torch.long) if kind is None else kind

        def column(x: Tensor | int, name: str) -> Tensor:
            x = torch.as_tensor(x, device=areas.device).long().reshape(-1)
            if x.numel() != n:
                raise ValueError(f"{name} must give one value per episode, got {x.numel()} for {n}")
            return x

        role, kind = column(role, "role"), column(kind, "kind")
        if ((role != 0) & (role != 1)).any():
            raise ValueError(f"role must be 0 or 1, got {role.unique().tolist()}")
        if ((kind < 0) | (kind >= len(self.kinds))).any():
            raise ValueError(f"kind must index {self.kinds}, got {kind.unique().tolist()}")
        self.episodes.append(torch.cat([torch.stack([column(query, "query"), role, column(class_id, "class_id"),
                                                     kind], -1), areas], -1))

    def update_absent(self, pred: Tensor, objects: Tensor) -> None:
        """pred (B, H, W) in {0, 1} for prompts of a category in neither object; objects (B, H, W): 1 on the two
        objects' pixels, 0 elsewhere, ignore_index on void."""
        if pred.shape != objects.shape:
            raise ValueError(f"pred and objects must have one shape, got {tuple(pred.shape)} and "
                             f"{tuple(objects.shape)}")
        on = objects == 1
        self.absent_painted += ((pred == 1) & on).sum()
        self.absent_objects += on.sum()

    def rows(self) -> Tensor:
        """(N, 9) long: the episodes, one per (query, role), sorted by query then role."""
        rows = dim_zero_cat(self.episodes) if len(self.episodes) else torch.zeros(0, 9, dtype=torch.long)
        if not len(rows):
            return rows
        key = rows[:, QUERY] * 2 + rows[:, ROLE]
        order = torch.argsort(key, stable=True)
        rows, key = rows[order], key[order]
        first = torch.ones(len(key), dtype=torch.bool, device=key.device)
        first[1:] = key[1:] != key[:-1]
        return rows[first]

    def compute(self) -> dict[str, Tensor]:
        rows = self.rows().cpu()
        iou_t = rows[:, INTER_T].double() / rows[:, UNION_T].clamp(min=1)
        iou_d = rows[:, INTER_D].double() / rows[:, UNION_D].clamp(min=1)
        # queries with both roles: in the sorted rows, role 0 directly followed by role 1 of the same query
        pair = (rows[:-1, QUERY] == rows[1:, QUERY]) & (rows[:-1, ROLE] == 0)
        first = torch.nonzero(pair).flatten()
        margin = iou_t - iou_d
        s_query = (margin[first] + margin[first + 1]) / 2  # (Q,): exactly 0 for a prompt-blind predictor
        right = (margin[first] > 0) & (margin[first + 1] > 0)
        kind = rows[first, KIND]
        out = {"S": 100 * _mean_or_zero(s_query)}
        if len(s_query):
            gen = torch.Generator().manual_seed(self.seed)
            draws = torch.randint(len(s_query), (self.bootstrap, len(s_query)), generator=gen)
            boot = s_query[draws].mean(1)
            low, high = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=boot.dtype))
        else:
            low = high = torch.zeros((), dtype=torch.double)
        out.update({"S_low": 100 * low, "S_high": 100 * high, "A": 100 * _mean_or_zero(right.double())})
        classes = self.class_ids if self.class_ids is not None else sorted(set(rows[:, CLASS].tolist()))
        ious = []
        for c in classes:
            of = rows[:, CLASS] == c
            ious.append(rows[of, INTER_T].sum().double() / rows[of, UNION_T].sum().clamp(min=1))
        out["mIoU"] = 100 * _mean_or_zero(torch.stack(ious)) if ious else torch.zeros((), dtype=torch.double)
        out["recall"] = 100 * rows[:, INTER_T].sum().double() / rows[:, AREA_T].sum().clamp(min=1)
        out["absent_painted"] = 100 * self.absent_painted.double().cpu() / self.absent_objects.clamp(min=1).cpu()
        out["queries"] = torch.tensor(float(len(s_query)), dtype=torch.double)
        if len(self.kinds) > 1:
            for k, name in enumerate(self.kinds):
                of = kind == k
                out[f"S/{name}"] = 100 * _mean_or_zero(s_query[of])
                out[f"A/{name}"] = 100 * _mean_or_zero(right[of].double())
                out[f"queries/{name}"] = torch.tensor(float(of.sum()), dtype=torch.double)
        return out

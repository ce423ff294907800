"""Few-shot segmentation: HSNet's mIoU (a class no episode sampled counts 0) and FB-IoU (every class's areas pooled)
over B episodes of H x W pixels (juhongm999/hsnet common/evaluation.py, common/logger.py)."""


from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from seggpt_lab.canvas import IGNORE_LABEL


def episode_areas(pred: Tensor, target: Tensor, ignore_index: int = IGNORE_LABEL) -> tuple[Tensor, Tensor]:
    """Binary maps (B, H, W), pred {0, 1}, target {0, 1, ignore_index} -> intersection and union areas (B, 2),
    columns [background, foreground]; ignored pixels count in neither."""
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(f"pred and target must both be (B, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
    pred, target = pred.long(), target.long()
    if ((pred != 0) & (pred != 1)).any():
        raise ValueError(f"pred must be binary {{0, 1}}, got values {pred.unique().tolist()}")
    if ((target != 0) & (target != 1) & (target != ignore_index)).any():
        raise ValueError(f"target must hold 0, 1 or {ignore_index}, got values {target.unique().tolist()}")
    valid = target != ignore_index
    inter, union = [], []
    for value in (0, 1):
        p, t = (pred == value) & valid, target == value
        inter.append((p & t).flatten(1).sum(-1))
        union.append((p | t).flatten(1).sum(-1))
    return torch.stack(inter, -1), torch.stack(union, -1)


class FewShotIoU(Metric):
    """HSNet's few-shot scores: `update(pred, target, class_id)` with (B, H, W) maps and (B,) ids; `compute()` ->
    {"mIoU", "FB-IoU"} x100, exact however the episodes are split across processes.

    Args:

        class_ids: the fold's class ids (the classes the mean runs over), or their number n for ids 0..n-1.
        ignore_index: the target value left out of both classes.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, class_ids: int | Sequence[int], ignore_index: int = IGNORE_LABEL, **kwargs) -> None:
        super().__init__(**kwargs)
        ids = list(range(class_ids)) if isinstance(class_ids, int) else [int(c) for c in class_ids]
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"class_ids must be a non-empty list of distinct ids, got {class_ids}")
        self.class_ids = sorted(ids)
        self.ignore_index = ignore_index
        num = len(self.class_ids)
        self.add_state("intersection", torch.zeros(2, num, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("union", torch.zeros(2, num, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, class_id: Tensor) -> None:
        """pred (B, H, W) in {0, 1}; target (B, H, W) in {0, 1, ignore_index}; class_id (B,) of the fold."""
        inter, union = episode_areas(pred, target, self.ignore_index)
        known = torch.tensor(self.class_ids, device=inter.device)
        class_id = torch.as_tensor(class_id, device=inter.device).long().reshape(-1)
        column = torch.searchsorted(known, class_id).clamp(max=len(known) - 1)
        if class_id.numel() != inter.shape[0] or (known[column] != class_id).any():
            raise ValueError(f"class_id must give one id per episode from the fold {self.class_ids}, "
                             f"got {class_id.tolist()} for {inter.shape[0]} episodes")
        self.intersection.index_add_(1, column, inter.T)
        self.union.index_add_(1, column, union.T)

    def compute(self) -> dict[str, Tensor]:
        inter, union = self.intersection.double(), self.union.double()
        iou = inter / union.clamp(min=1)  # a class never sampled: 0 / 1
        return {"mIoU": 100 * iou[1].mean(), "FB-IoU": 100 * (inter.sum(1) / union.sum(1)).mean()}

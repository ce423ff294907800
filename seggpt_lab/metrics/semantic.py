"""Semantic segmentation: detectron2 SemSegEvaluator's scores (detectron2/evaluation/sem_seg_evaluation.py) from one
dataset-level confusion matrix of K classes; ignored ground truth is dropped with what was predicted there."""


from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from seggpt_lab.canvas import IGNORE_LABEL


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_LABEL) -> Tensor:
    """Label maps -> (K, K) long counts indexed [ground truth, prediction], ignored ground truth dropped."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    keep = target != ignore_index
    pred, target = pred[keep].long(), target[keep].long()
    for name, labels in (("target", target), ("pred", pred)):
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in [0, {num_classes}) outside ignored pixels, "
                             f"got {labels.min().item()}..{labels.max().item()}")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def semantic_scores(confmat: Tensor) -> dict[str, Tensor]:
    """(K, K) [ground truth, prediction] counts -> {"mIoU", "pACC", "mACC", "fwIoU", "per_class"} x100, float64;
    "per_class" is the (K,) IoU, NaN for a class without ground-truth pixels (as detectron2 reports it)."""
    confmat = confmat.double()
    tp = confmat.diagonal()
    pos_gt, pos_pred = confmat.sum(1), confmat.sum(0)
    valid = pos_gt > 0
    iou = torch.where(valid, tp / (pos_gt + pos_pred - tp).clamp(min=1), torch.nan)
    acc = torch.where(valid, tp / pos_gt.clamp(min=1), torch.nan)
    weight = pos_gt / pos_gt.sum()
    return {"mIoU": 100 * iou[valid].mean(), "pACC": 100 * tp.sum() / pos_gt.sum(), "mACC": 100 * acc[valid].mean(),
            "fwIoU": 100 * (iou[valid] * weight[valid]).sum(), "per_class": 100 * iou}


class SemanticIoU(Metric):
    """Dataset-level semantic scores: `update(pred, target)` with integer label maps of one shape; `compute()` ->
    {"mIoU", "pACC", "mACC", "fwIoU"} x100; `per_class_iou()` -> the (K,) IoUs.

    Args:

        num_classes: K; predictions and non-ignored ground truth lie in [0, K).
        ignore_index: the ground-truth value that is not scored.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_LABEL, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("confmat", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred, target: integer label maps, e.g. (B, H, W)."""
        self.confmat += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def compute(self) -> dict[str, Tensor]:
        scores = semantic_scores(self.confmat)
        del scores["per_class"]
        return scores

    def per_class_iou(self) -> Tensor:
        """(K,) IoU x100 over everything seen (on every process, synchronised as compute is)."""
        with self.sync_context(self.dist_sync_fn, should_sync=self._to_sync, should_unsync=self._should_unsync):
            return semantic_scores(self.confmat)["per_class"]

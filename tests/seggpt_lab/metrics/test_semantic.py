"""SemanticIoU: detectron2's scores on a hand-computed confusion matrix, a numpy reference, real aerial labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seggpt_lab.metrics import SemanticIoU, confusion_matrix, semantic_scores


def detectron2_reference(preds: list[np.ndarray], targets: list[np.ndarray], k: int, ignore: int = 255) -> dict:
    """SemSegEvaluator's bookkeeping in numpy: a (K+1)^2 matrix indexed [pred, gt], ignore mapped to K and cut off."""
    conf = np.zeros((k + 1, k + 1), dtype=np.int64)
    for pred, gt in zip(preds, targets, strict=True):
        gt = np.where(gt == ignore, k, gt).astype(np.int64)
        conf += np.bincount((k + 1) * pred.reshape(-1).astype(np.int64) + gt.reshape(-1),
                            minlength=(k + 1) ** 2).reshape(k + 1, k + 1)
    tp = conf.diagonal()[:-1].astype(float)
    pos_gt = conf[:-1, :-1].sum(0).astype(float)
    pos_pred = conf[:-1, :-1].sum(1).astype(float)
    valid = pos_gt > 0
    iou = np.full(k, np.nan)
    iou[valid] = tp[valid] / (pos_gt + pos_pred - tp)[valid]
    acc = tp[valid] / pos_gt[valid]
    return {"mIoU": 100 * iou[valid].mean(), "fwIoU": 100 * (iou[valid] * pos_gt[valid] / pos_gt.sum()).sum(),
            "mACC": 100 * acc.mean(), "pACC": 100 * tp.sum() / pos_gt.sum(), "per_class": 100 * iou}


def hand_case() -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.tensor([[0, 0, 1, 0], [1, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 3], [1, 1, 2, 0]])  # predictions on the two ignored pixels do not count
    return pred, target


def test_confusion_matrix_by_hand() -> None:
    pred, target = hand_case()
    expected = torch.tensor([[1, 1, 0, 1], [0, 2, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])  # [truth, prediction]
    assert torch.equal(confusion_matrix(pred, target, 4), expected)


def test_scores_by_hand() -> None:
    metric = SemanticIoU(num_classes=4)
    metric.update(*hand_case())
    scores = metric.compute()
    # IoU: class 0 1/(3+1-1), class 1 2/(2+4-2), class 2 0/1; class 3 has no truth pixel and is left out
    assert scores["mIoU"].item() == pytest.approx(100 * (1 / 3 + 1 / 2 + 0) / 3)
    assert scores["pACC"].item() == pytest.approx(100 * 3 / 6)
    assert scores["mACC"].item() == pytest.approx(100 * (1 / 3 + 1 + 0) / 3)
    assert scores["fwIoU"].item() == pytest.approx(100 * (3 / 6 * 1 / 3 + 2 / 6 * 1 / 2))
    per_class = metric.per_class_iou()
    assert per_class[:3].tolist() == pytest.approx([100 / 3, 50, 0]) and per_class[3].isnan()
    assert set(scores) == {"mIoU", "pACC", "mACC", "fwIoU"}


def test_matches_the_detectron2_procedure_on_random_maps() -> None:
    gen = torch.Generator().manual_seed(0)
    metric = SemanticIoU(num_classes=6, ignore_index=255)
    preds, targets = [], []
    for _ in range(3):
        target = torch.randint(0, 5, (2, 13, 17), generator=gen)  # class 5 never in the truth
        target[torch.rand(2, 13, 17, generator=gen) > 0.8] = 255
        pred = torch.where(torch.rand(2, 13, 17, generator=gen) > 0.4, target.clamp(max=5),
                           torch.randint(0, 6, (2, 13, 17), generator=gen))
        metric.update(pred, target)
        preds.append(pred.numpy())
        targets.append(target.numpy())
    expected = detectron2_reference(preds, targets, 6)
    scores = semantic_scores(metric.confmat)
    for key in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert scores[key].item() == pytest.approx(expected[key], abs=1e-9)
    np.testing.assert_allclose(scores["per_class"].numpy(), expected["per_class"], atol=1e-9)


def test_bad_labels_are_rejected() -> None:
    metric = SemanticIoU(num_classes=3)
    pred, target = hand_case()
    with pytest.raises(ValueError, match=r"pred labels must lie in \[0, 3\)"):
        metric.update(pred, target)  # pred 3 on a scored pixel
    with pytest.raises(ValueError, match="target labels"):
        metric.update(pred.clamp(max=2), target.clamp(max=7) + 1)
    with pytest.raises(ValueError, match="one shape"):
        metric.update(pred[0], target)


def test_merged_ranks_equal_one_process() -> None:
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 4, (b, 8, 8), generator=gen), torch.randint(0, 4, (b, 8, 8), generator=gen))
               for b in (2, 1, 3)]
    whole, rank0, rank1 = SemanticIoU(4), SemanticIoU(4), SemanticIoU(4)
    for i, batch in enumerate(batches):
        whole.update(*batch)
        (rank1 if i == 1 else rank0).update(*batch)
    rank0.merge_state(rank1)
    merged, expected = rank0.compute(), whole.compute()
    for key in expected:
        assert merged[key].item() == pytest.approx(expected[key].item(), abs=1e-12)
    assert torch.equal(rank0.per_class_iou(), whole.per_class_iou())


def test_real_aerial_labels(shared_data: Path) -> None:
    """ISPRS Potsdam and Vaihingen tiles (labels 1..5, 0 ignored) and LoveDA (1..7, class 5 absent): zero-label
    reduction as detectron2 prepares ADE20K, predictions shifted by a few pixels with a relabelled band."""
    root = shared_data / "mmseg_fixtures/tests/data"
    for pattern, k in (("pseudo_potsdam_dataset/ann_dir/*.png", 5), ("pseudo_vaihingen_dataset/ann_dir/*.png", 5),
                       ("pseudo_loveda_dataset/ann_dir/*.png", 7)):
        raw = [np.array(Image.open(f)) for f in sorted(root.glob(pattern))]
        assert raw
        targets = [(r.astype(np.uint8) - 1).astype(np.int64) for r in raw]  # 0 -> 255 (void), c -> c - 1
        preds = []
        for t in targets:
            p = np.roll(np.where(t == 255, 0, t), (5, -3), (0, 1))
            p[100:140] = (p[100:140] + 1) % k
            preds.append(p)
        metric = SemanticIoU(num_classes=k)
        oracle = SemanticIoU(num_classes=k)
        for p, t in zip(preds, targets, strict=True):
            metric.update(torch.from_numpy(p)[None], torch.from_numpy(t)[None])
            oracle.update(torch.from_numpy(np.where(t == 255, 0, t))[None], torch.from_numpy(t)[None])
        expected = detectron2_reference(preds, targets, k)
        scores = metric.compute()
        for key in ("mIoU", "fwIoU", "mACC", "pACC"):
            assert scores[key].item() == pytest.approx(expected[key], abs=1e-9)
        assert 0 < scores["mIoU"].item() < 100
        assert all(v.item() == 100 for v in oracle.compute().values())
    assert metric.per_class_iou()[4].isnan()  # LoveDA label 5 never occurs in these tiles

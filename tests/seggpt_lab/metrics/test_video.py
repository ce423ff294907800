"""J&F: hand-computed cases for every DAVIS rule, a slow numpy reference on real DAVIS masks, DDP merging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seggpt_lab.metrics import (
    JandF,
    boundary_f_measure,
    boundary_map,
    disk_dilation,
    per_object_statistics,
    region_similarity,
    sequence_j_and_f,
)
from seggpt_lab.metrics.video import (
    boundary_radius,
    label_bits,
    object_j_and_f,
    pack_bits,
    popcount,
    unpack_bits,
)

# --- slow reference formulations (numpy, pixel sets and distances rather than shifts of whole stacks) ---


def ref_boundary(seg: np.ndarray) -> np.ndarray:
    """The toolkit's recipe as written: zero-filled east / south / south-east copies, then its edge overrides."""
    seg = seg.astype(bool)
    east, south, southeast = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    east[:, :-1], south[:-1, :], southeast[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
    b = (seg ^ east) | (seg ^ south) | (seg ^ southeast)
    b[-1, :] = seg[-1, :] ^ east[-1, :]
    b[:, -1] = seg[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


def ref_within(points: np.ndarray, others: np.ndarray, radius: int) -> np.ndarray:
    """For each (y, x) in points: is some point of `others` at Euclidean distance <= radius?"""
    out = np.zeros(len(points), dtype=bool)
    if len(others) == 0:
        return out
    for start in range(0, len(points), 512):
        chunk = points[start:start + 512, None, :] - others[None, :, :]
        out[start:start + 512] = ((chunk**2).sum(-1) <= radius * radius).any(1)
    return out


def ref_f(pred: np.ndarray, gt: np.ndarray, radius: int) -> float:
    bp, bg = np.argwhere(ref_boundary(pred)), np.argwhere(ref_boundary(gt))
    if len(bp) == 0 and len(bg) == 0:
        return 1.0
    if len(bp) == 0 or len(bg) == 0:
        return 0.0
    precision = ref_within(bp, bg, radius).mean()
    recall = ref_within(bg, bp, radius).mean()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def ref_j(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else np.logical_and(pred, gt).sum() / union


def ref_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """db_statistics as the toolkit words it: float edges rounded half up, bins sharing their end frames."""
    edges = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(int)
    bins = [values[edges[i]:edges[i + 1] + 1] for i in range(4)]
    return values.mean(), (values > 0.5).mean(), bins[0].mean() - bins[3].mean()


def erode(mask: np.ndarray, k: int, outside: bool = False) -> np.ndarray:
    """Binary erosion by a (2k+1)^2 square; pixels outside the frame take the value `outside`."""
    padded = np.pad(mask.astype(bool), k, constant_values=outside)
    rows = np.logical_and.reduce([padded[:, k + d: k + d + mask.shape[1]] for d in range(-k, k + 1)])
    return np.logical_and.reduce([rows[k + d: k + d + mask.shape[0]] for d in range(-k, k + 1)])


def dilate(mask: np.ndarray, k: int) -> np.ndarray:
    return ~erode(~mask.astype(bool), k, outside=True)


def square(size: int, top: int, left: int, side: int) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    m[top:top + side, left:left + side] = True
    return m


# --- boundaries, dilation, J and F on hand-computed cases ---


def test_boundary_map_is_offset_half_a_pixel_towards_the_origin() -> None:
    seg = square(5, 1, 1, 2)
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    assert torch.equal(boundary_map(seg).long(), expected)


def test_boundary_map_last_row_column_and_corner() -> None:
    assert not boundary_map(torch.ones(3, 3, dtype=torch.bool)).any()  # a frame-filling mask has no boundary
    corner = torch.zeros(3, 3, dtype=torch.bool)
    corner[2, 2] = True
    assert boundary_map(corner).nonzero().tolist() == [[1, 1], [1, 2], [2, 1]]
    bottom = torch.zeros(4, 4, dtype=torch.bool)
    bottom[3, 1:3] = True  # on the last row only east neighbours count: (3, 0) and (3, 2)
    assert boundary_map(bottom)[3].nonzero().flatten().tolist() == [0, 2]


def test_boundary_map_matches_the_toolkit_recipe_on_random_masks() -> None:
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 17, 23, generator=gen) > 0.6
    batched = boundary_map(masks)
    for mask, b in zip(masks, batched, strict=True):
        assert np.array_equal(b.numpy(), ref_boundary(mask.numpy()))


def test_boundary_radius() -> None:
    assert boundary_radius(480, 854) == 8  # ceil(0.008 * 979.6)
    assert boundary_radius(480, 910) == 9
    assert boundary_radius(480, 854, bound_th=3) == 3
    with pytest.raises(ValueError, match="whole"):
        boundary_radius(480, 854, bound_th=2.5)


def test_disk_dilation_is_the_digital_disk() -> None:
    point = torch.zeros(21, 21, dtype=torch.bool)
    point[10, 10] = True
    for radius in (0, 1, 3, 8):
        d = np.arange(-10, 11)
        disk = (d[:, None] ** 2 + d[None] ** 2) <= radius * radius
        assert np.array_equal(disk_dilation(point, radius).numpy(), disk)
    assert disk_dilation(point, 3).sum() == 29
    corner = torch.zeros(9, 9, dtype=torch.bool)
    corner[0, 0] = True  # a quarter disk survives at the frame's corner: (0,0) (0,1) (0,2) (1,0) (1,1) (2,0)
    assert disk_dilation(corner, 2).sum() == 6


def test_disk_dilation_matches_distances_on_random_masks() -> None:
    gen = torch.Generator().manual_seed(1)
    masks = torch.rand(3, 30, 41, generator=gen) > 0.97
    dilated = disk_dilation(masks, 4)
    grid = np.argwhere(np.ones((30, 41), dtype=bool))
    for mask, d in zip(masks, dilated, strict=True):
        expected = ref_within(grid, np.argwhere(mask.numpy()), 4).reshape(30, 41)
        assert np.array_equal(d.numpy(), expected)


@pytest.mark.parametrize("width", [1, 63, 64, 65, 130, 200])
def test_bit_packing_round_trips_and_counts(width: int) -> None:
    masks = np.random.default_rng(width).random((2, 3, 5, width)) > 0.5
    bits = pack_bits(masks)
    assert bits.shape == (2, 3, 5, -(-width // 64)) and bits.dtype == np.dtype("<u8")
    assert np.array_equal(unpack_bits(bits, width), masks)
    assert np.array_equal(popcount(bits), masks.reshape(2, 3, -1).sum(-1))
    x = np.arange(64 * bits.shape[-1])
    assert np.array_equal(unpack_bits(pack_bits(x == width - 1), width).nonzero()[0], [width - 1])  # bit order


def test_boundaries_and_dilation_across_words() -> None:
    """Rows of several 64-bit words (the packed form's carries) and radii wider than a word."""
    gen = torch.Generator().manual_seed(2)
    masks = torch.rand(4, 9, 150, generator=gen) > 0.5
    for mask, b in zip(masks, boundary_map(masks), strict=True):
        assert np.array_equal(b.numpy(), ref_boundary(mask.numpy()))
    sparse = torch.rand(2, 12, 150, generator=gen) > 0.98
    grid = np.argwhere(np.ones((12, 150), dtype=bool))
    for radius in (5, 63, 64, 70):
        for mask, d in zip(sparse, disk_dilation(sparse, radius), strict=True):
            expected = ref_within(grid, np.argwhere(mask.numpy()), radius).reshape(12, 150)
            assert np.array_equal(d.numpy(), expected), radius


def test_object_masks_from_label_maps() -> None:
    labels = np.array([[0, 1, 2, 255, 300, 3, 1]])  # 300 is no object, though 300 % 256 would be one
    bits = label_bits(labels, 3)
    assert [unpack_bits(b, 7)[0].nonzero()[0].tolist() for b in bits] == [[1, 6], [2], [5]]
    many = np.arange(300).reshape(1, 300)  # objects past uint8: the labels keep their type
    assert np.argwhere(unpack_bits(label_bits(many, 299), 300)[:, 0]).tolist() == [[k - 1, k] for k in range(1, 300)]


def test_object_j_and_f_equals_the_mask_functions() -> None:
    gen = torch.Generator().manual_seed(3)
    pred, target = torch.randint(0, 4, (2, 20, 70), generator=gen), torch.randint(0, 4, (2, 20, 70), generator=gen)
    target[0, :3] = 7  # above K: background
    j, f = object_j_and_f(pred, target, 3, bound_th=2)
    ids = torch.arange(1, 4)[:, None, None, None]
    assert torch.equal(j, region_similarity(pred[None] == ids, target[None] == ids))
    assert torch.equal(f, boundary_f_measure(pred[None] == ids, target[None] == ids, bound_th=2))
    assert j.shape == f.shape == (3, 2)


def test_region_similarity() -> None:
    a, b = square(4, 0, 0, 2), square(4, 0, 1, 2)  # overlap 2 pixels, union 6
    empty = torch.zeros(4, 4, dtype=torch.bool)
    j = region_similarity(torch.stack([a, empty, empty, a]), torch.stack([b, empty, a, empty]))
    assert j.tolist() == pytest.approx([1 / 3, 1.0, 0.0, 0.0])


def test_boundary_f_measure_hand_cases() -> None:
    gt = square(10, 2, 2, 4)  # boundary: the 16-pixel ring rows 1..5 x cols 1..5
    one, two = square(10, 2, 3, 4), square(10, 2, 4, 4)
    # radius 0: the rings shifted by one column share their top and bottom rows, 8 of 16 pixels
    assert boundary_f_measure(one, gt, bound_th=0).item() == pytest.approx(0.5)
    # radius 1 (a plus sign), shift 2: 10 of 16 pixels either way (rows 1 and 5 but the far end, two of col 3)
    assert boundary_f_measure(two, gt, bound_th=1).item() == pytest.approx(0.625)
    assert boundary_f_measure(one, gt, bound_th=1).item() == 1.0
    assert boundary_f_measure(gt, gt, bound_th=0).item() == 1.0


def test_boundary_f_measure_edge_cases() -> None:
    gt, empty = square(10, 2, 2, 4), torch.zeros(10, 10, dtype=torch.bool)
    full = torch.ones(10, 10, dtype=torch.bool)
    f = boundary_f_measure(torch.stack([empty, empty, gt, full, full]), torch.stack([empty, gt, empty, gt, full]))
    # neither boundary: 1; no predicted boundary: P=1, R=0; no true boundary: P=0, R=1; full frame has none
    assert f.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]


def test_per_object_statistics_hand_cases() -> None:
    mean, recall, decay = per_object_statistics(torch.tensor([[1.0, 0.8, 0.6, 0.4, 0.2], [0.2, 0.9, 0.9, 0.9, 0.9]],
                                                             dtype=torch.float64))
    assert mean.tolist() == pytest.approx([0.6, 0.76])
    assert recall.tolist() == pytest.approx([0.6, 0.8])
    assert decay.tolist() == pytest.approx([0.9 - 0.3, 0.55 - 0.9])  # bins [0:2] and [3:5]
    _, _, decay = per_object_statistics(torch.tensor([[0.7, 0.1]], dtype=torch.float64))
    assert decay.tolist() == pytest.approx([0.6])  # edges 0,0,1,1,1: first bin frame 0, last bin frame 1
    _, _, decay = per_object_statistics(torch.tensor([[0.7]], dtype=torch.float64))
    assert decay.tolist() == [0.0]


@pytest.mark.parametrize("n", [3, 4, 5, 6, 7, 10, 13, 29, 48, 101, 300])
def test_per_object_statistics_match_the_toolkit_bins(n: int) -> None:
    values = np.random.default_rng(n).random(n)
    ours = per_object_statistics(torch.from_numpy(values)[None])
    assert [t.item() for t in ours] == pytest.approx(ref_statistics(values), abs=1e-12)


# --- sequence rules ---


def test_first_and_last_frames_are_not_scored() -> None:
    target = torch.zeros(4, 8, 8, dtype=torch.long)
    target[:, 2:6, 2:6] = 1
    pred = target.clone()
    pred[0], pred[3] = 0, 1  # wrong only where it does not count
    j, f = sequence_j_and_f(pred, target)
    assert j.shape == f.shape == (1, 2)
    assert j.tolist() == [[1.0, 1.0]] and f.tolist() == [[1.0, 1.0]]


def test_objects_come_from_the_first_frame_and_void_is_background() -> None:
    target = torch.zeros(3, 8, 8, dtype=torch.long)
    target[0, 0:2, 0:2], target[0, 5:7, 5:7] = 1, 2  # K = 2
    target[1, 0:2, 0:2] = 1
    target[1, 0:2, 2:4] = 255  # void: background for the toolkit's semi-supervised path
    target[1, 5:7, 5:7] = 3  # an id above K is nobody's: background too
    pred = torch.zeros_like(target)
    pred[1, 0:2, 0:4] = 1  # covers object 1 and the void next to it
    j, _ = sequence_j_and_f(pred, target)
    assert j.shape == (2, 1)
    assert j[0].item() == pytest.approx(0.5)  # void counted as background: 4 / 8
    assert j[1].item() == 1.0  # object 2 absent from both: union 0 -> J = 1
    target[0, 5:7, 5:7] = 255  # void in the first frame is not an object either
    assert sequence_j_and_f(pred, target)[0].shape == (1, 1)


def test_prediction_ids_above_the_object_count_are_an_error() -> None:
    target = torch.zeros(3, 8, 8, dtype=torch.long)
    target[:, 1:3, 1:3] = 1
    pred = target.clone()
    pred[2, 5, 5] = 2
    with pytest.raises(ValueError, match="object id 2 but the first ground-truth frame has only 1"):
        sequence_j_and_f(pred, target)
    target[0, 6, 6] = 2  # now two objects: fewer predicted ids are fine
    assert sequence_j_and_f(target.clamp(max=1), target)[0].shape == (2, 1)


def test_bad_sequences_are_rejected() -> None:
    with pytest.raises(ValueError, match="first and the last"):
        sequence_j_and_f(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        sequence_j_and_f(torch.zeros(3, 4, 4, dtype=torch.long), torch.zeros(3, 4, 5, dtype=torch.long))


def three_sequences() -> list[tuple[torch.Tensor, torch.Tensor]]:
    a = torch.zeros(5, 12, 12, dtype=torch.long)
    a[:, 2:8, 2:8] = 1
    pa = a.clone()
    pa[2] = 0  # one frame lost
    b = torch.zeros(4, 12, 12, dtype=torch.long)
    b[:, 0:4, 0:4], b[:, 6:10, 6:10] = 1, 2
    pb = torch.roll(b, 1, -1)
    return [(pa, a), (pb, b), (b, b)]


def test_objects_weigh_equally_across_sequences() -> None:
    metric = JandF(bound_th=1)
    per_object = []
    for pred, target in three_sequences():
        metric.update(pred, target)
        j, f = sequence_j_and_f(pred, target, bound_th=1)
        for k in range(j.shape[0]):
            stats = [*per_object_statistics(j[k:k + 1]), *per_object_statistics(f[k:k + 1])]
            per_object.append([s.item() for s in stats])
    scores = metric.compute()
    expected = 100 * np.array(per_object).mean(0)  # 5 objects: 1 + 2 + 2
    got = [scores[k].item() for k in ("J", "J-recall", "J-decay", "F", "F-recall", "F-decay")]
    assert got == pytest.approx(expected.tolist())
    assert scores["J&F"].item() == pytest.approx((expected[0] + expected[3]) / 2)
    # J by hand: [1, 0, 1] lost frame; two squares shifted a column, 12 / 20 each; two perfect objects
    assert scores["J"].item() == pytest.approx(100 * (2 / 3 + 2 * 0.6 + 2) / 5)


def test_merged_ranks_equal_one_process() -> None:
    sequences = three_sequences()
    whole = JandF()
    for s in sequences:
        whole.update(*s)
    rank0, rank1 = JandF(), JandF()
    rank0.update(*sequences[0])
    for s in sequences[1:]:
        rank1.update(*s)
    rank0.merge_state(rank1)
    merged, expected = rank0.compute(), whole.compute()
    assert merged.keys() == expected.keys()
    for key in expected:
        assert merged[key].item() == pytest.approx(expected[key].item(), abs=1e-12)


# --- real masks ---


def load(folder: Path, frames: range) -> np.ndarray:
    return np.stack([np.array(Image.open(folder / f"{i:05d}.png")) for i in frames])


@pytest.fixture(scope="module")
def blackswan(shared_data: Path) -> np.ndarray:
    """DAVIS-2016 blackswan frames 0..5, (6, 480, 854) bool: one object."""
    return load(shared_data / "davis2016/DAVIS/Annotations/480p/blackswan", range(6)) > 0


def test_davis2016_oracle_and_empty(blackswan: np.ndarray) -> None:
    target = torch.from_numpy(blackswan).long()
    oracle = JandF()
    oracle.update(target, target)
    scores = oracle.compute()
    assert scores["J&F"].item() == scores["J"].item() == scores["F"].item() == 100
    assert scores["J-recall"].item() == scores["F-recall"].item() == 100
    assert scores["J-decay"].item() == scores["F-decay"].item() == 0
    empty = JandF()
    empty.update(torch.zeros_like(target), target)
    scores = empty.compute()
    assert scores["J"].item() == scores["F"].item() == scores["J&F"].item() == 0


def test_davis2016_perturbations_match_the_reference(blackswan: np.ndarray) -> None:
    gt = blackswan[2]
    radius = boundary_radius(*gt.shape)
    assert radius == 8
    cases = {"eroded": erode(gt, 4), "dilated": dilate(gt, 6), "shifted": np.roll(gt, (7, -12), (0, 1)),
             "emptied": np.zeros_like(gt)}
    for name, pred in cases.items():
        j, f = sequence_j_and_f(torch.from_numpy(np.stack([gt, pred, gt])).long(),
                                torch.from_numpy(np.stack([gt, gt, gt])).long())
        assert j.item() == pytest.approx(ref_j(pred, gt), abs=1e-12), name
        assert f.item() == pytest.approx(ref_f(pred, gt, radius), abs=1e-12), name
        assert 0 <= f.item() < 1, name
    assert sequence_j_and_f(torch.from_numpy(np.stack([gt, cases["emptied"], gt])).long(),
                            torch.from_numpy(np.stack([gt, gt, gt])).long())[1].item() == 0


def test_davis2016_more_erosion_scores_lower(blackswan: np.ndarray) -> None:
    target = torch.from_numpy(blackswan).long()
    js, fs = [], []
    for k in (1, 3, 6, 12):
        pred = torch.from_numpy(np.stack([erode(m, k) for m in blackswan])).long()
        metric = JandF()
        metric.update(pred, target)
        scores = metric.compute()
        js.append(scores["J"].item())
        fs.append(scores["F"].item())
    assert js == sorted(js, reverse=True) and len(set(js)) == len(js)
    assert fs[0] > fs[-1]


def test_davis2017_multi_object_against_the_reference(shared_data: Path) -> None:
    """OSVOS palette masks of "pigs" (3 objects, 480 x 854) as the truth, a perturbed copy as the prediction."""
    target = load(shared_data / "davis2017_osvos/results/semi-supervised/osvos/pigs", range(5)).astype(np.int64)
    assert target[0].max() == 3
    pred = target.copy()
    for t in range(5):
        pig1 = np.roll(target[t] == 1, 5, 1)
        pig2 = erode(target[t] == 2, 3)
        pred[t] = np.where(pred[t] == 3, 3, 0)
        pred[t][pig1 & (pred[t] == 0)] = 1
        pred[t][pig2] = 2
    pred[2][pred[2] == 3] = 0  # pig 3 lost in one frame
    j, f = sequence_j_and_f(torch.from_numpy(pred), torch.from_numpy(target))
    assert j.shape == (3, 3)
    radius = boundary_radius(*target.shape[1:])
    for k in range(3):
        for t in range(3):
            p, g = pred[t + 1] == k + 1, target[t + 1] == k + 1
            assert j[k, t].item() == pytest.approx(ref_j(p, g), abs=1e-12)
            assert f[k, t].item() == pytest.approx(ref_f(p, g, radius), abs=1e-12)
    assert j[2, 1].item() == 0 and f[2, 1].item() == 0
    metric = JandF()
    metric.update(torch.from_numpy(pred), torch.from_numpy(target))
    stats = [ref_statistics(j[k].numpy()) for k in range(3)]
    assert metric.compute()["J-decay"].item() == pytest.approx(100 * np.mean([s[2] for s in stats]))


def test_davis2017_wider_frames_use_a_wider_tolerance(shared_data: Path) -> None:
    """bike-packing is 480 x 910: a 9-pixel radius; a 9-pixel shift still matches every boundary pixel."""
    target = load(shared_data / "davis2017_osvos/results/semi-supervised/osvos/bike-packing", range(3))
    assert target.shape[1:] == (480, 910)
    gt = target[1] == 1
    shifted = np.roll(gt, 9, 1)
    f = boundary_f_measure(torch.from_numpy(shifted), torch.from_numpy(gt)).item()
    assert f == pytest.approx(ref_f(shifted, gt, 9), abs=1e-12)
    f8 = boundary_f_measure(torch.from_numpy(shifted), torch.from_numpy(gt), bound_th=8).item()
    assert f8 == pytest.approx(ref_f(shifted, gt, 8), abs=1e-12)
    assert f8 < f

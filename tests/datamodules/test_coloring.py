"""Random colouring and mix-context stitching."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.coloring import COLORS, candidate_ids, draw_mapping, mix_context, paint_planes
from datamodules.schema import SEM_VOID


def _labels(seed: int, size: tuple[int, int] = (32, 40), num_ids: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, num_ids, size).astype(np.int32)
    lab[:3] = SEM_VOID
    return lab


def _coloring(labels: list[np.ndarray], rng: np.random.Generator, ids: list[int] | None = None,
              max_ids: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """The pipeline's colouring of maps (prompts first, the query last): (H, W, 3) targets, (H, W) valid, mapping."""
    mapping = draw_mapping(candidate_ids(labels[-1], ids), rng, max_ids)
    painted = [paint_planes([lab], mapping) for lab in labels]
    return [t.transpose(1, 2, 0) for t, _ in painted], [v[0] for _, v in painted], mapping


def _decode(target: np.ndarray, mapping: dict[int, tuple[int, int, int]]) -> np.ndarray:
    """Nearest colour among black and the mapping's colours -> id (0 for black)."""
    ids = np.array([0, *mapping])
    colors = np.array([(0, 0, 0), *mapping.values()], np.float64)
    dist = ((target[..., None, :].astype(np.float64) - colors) ** 2).sum(-1)
    return ids[dist.argmin(-1)]


def test_palette_colours_distinct_far_from_black_and_each_other():
    c = COLORS.astype(int)
    assert len(np.unique(c, axis=0)) == len(c) == 504
    assert c.max(1).min() >= 73  # far from black
    gap = np.abs(c[:, None] - c[None]).max(-1) + np.eye(len(c), dtype=int) * 255
    assert gap.min() >= 36  # one lattice step apart in some channel


def test_shared_mapping_unchosen_black_and_ignore_invalid():
    prompt, query = _labels(0), _labels(1)
    prompt[5, 5] = 99  # an id that only the prompt has: never a candidate, so black
    (tp, tq), (vp, vq), mapping = _coloring([prompt, query], np.random.default_rng(0))
    assert mapping and 99 not in mapping
    for lab, tgt, val in [(prompt, tp, vp), (query, tq, vq)]:
        assert tgt.shape == (*lab.shape, 3) and tgt.dtype == np.uint8
        assert val.dtype == np.uint8 and set(np.unique(val)) <= {0, 1}
        np.testing.assert_array_equal(val, lab != SEM_VOID)
        for i, color in mapping.items():  # the same mapping paints both maps
            assert (tgt[lab == i] == color).all()
        unchosen = ~np.isin(lab, list(mapping))  # background, unchosen ids and void
        assert (tgt[unchosen] == 0).all()
        expected = np.where(np.isin(lab, list(mapping)), lab, 0)
        np.testing.assert_array_equal(_decode(tgt, mapping), expected)


def test_colours_distinct_not_black_and_decodable_under_noise():
    lab = _labels(2, num_ids=60)
    for seed in range(20):
        (tgt,), _, mapping = _coloring([lab], np.random.default_rng(seed))
        colors = np.array(list(mapping.values()))
        assert len(np.unique(colors, axis=0)) == len(colors)
        assert (colors.max(1) > 0).all()
        noise = np.random.default_rng(seed).integers(-17, 18, tgt.shape)  # below half a lattice step
        noisy = np.clip(tgt.astype(int) + noise, 0, 255)
        np.testing.assert_array_equal(_decode(noisy, mapping), np.where(np.isin(lab, list(mapping)), lab, 0))


def test_subset_sizes_vary_and_respect_max_ids():
    lab = _labels(3, num_ids=9)  # candidates 1..8
    sizes = [len(_coloring([lab], np.random.default_rng(s))[2]) for s in range(200)]
    assert set(sizes) == set(range(1, 9))
    capped = [len(_coloring([lab], np.random.default_rng(s), max_ids=3)[2]) for s in range(100)]
    assert set(capped) == {1, 2, 3}


def test_candidates_come_from_query_or_ids():
    prompt = np.full((8, 8), 7, np.int32)
    query = np.zeros((8, 8), np.int32)
    query[:4, :4], query[4:, 4:], query[0, 0] = 3, 5, SEM_VOID
    np.testing.assert_array_equal(candidate_ids(query), [3, 5])
    np.testing.assert_array_equal(candidate_ids(query, ids=[5, 0, SEM_VOID, 2, 5]), [2, 5])
    seen = set()
    for s in range(50):
        seen |= set(_coloring([prompt, query], np.random.default_rng(s))[2])
        assert set(_coloring([prompt, query], np.random.default_rng(s), ids=[7])[2]) == {7}
    assert seen == {3, 5}


def test_no_candidates_gives_black_targets():
    lab = np.zeros((4, 4), np.uint16)
    lab[0] = SEM_VOID
    (tgt,), (val,), mapping = _coloring([lab], np.random.default_rng(0))
    assert mapping == {} and not tgt.any() and val.sum() == 12


def test_deterministic_by_seed_and_rejects_bad_labels():
    labs = [_labels(4), _labels(5)]
    a = _coloring(labs, np.random.default_rng(9))
    b = _coloring(labs, np.random.default_rng(9))
    assert a[2] == b[2] and all((x == y).all() for x, y in zip(a[0], b[0], strict=True))
    with pytest.raises(ValueError):
        _coloring([np.array([[70000]])], np.random.default_rng(0))


def test_paint_planes_stacks_maps_channels_first():
    labs = [_labels(6, (10, 40)), _labels(7, (14, 40))]
    targets, valid, mapping = _coloring(labs, np.random.default_rng(2))
    target, weight = paint_planes(labs, mapping)
    assert target.shape == (3, 24, 40) and weight.shape == (1, 24, 40) and target.flags.c_contiguous
    np.testing.assert_array_equal(target, np.concatenate(targets).transpose(2, 0, 1))
    np.testing.assert_array_equal(weight[0], np.concatenate(valid))
    assert not paint_planes(labs, {})[0].any()
    with pytest.raises(ValueError, match="one width"):
        paint_planes([labs[0], labs[1][:, :30]], mapping)


def _group(n: int, seed: int = 0):
    """n images of different sizes with their label maps (ids 0..4)."""
    rng = np.random.default_rng(seed)
    sizes = [(30 + 7 * i, 50 - 5 * i) for i in range(n)]
    labels = [rng.integers(0, 5, s).repeat(3, 0).repeat(3, 1) for s in sizes]
    labels[0][:3] = SEM_VOID
    images = [rng.integers(0, 256, (*lab.shape, 3), dtype=np.uint8) for lab in labels]
    return images, labels


@pytest.mark.parametrize("n, grid", [(2, None), (3, None), (4, (2, 2)), (4, (1, 4)), (6, None)])
def test_mix_context_size_and_exact_ids(n, grid):
    images, labels = _group(n, seed=n)
    for seed in range(5):
        img, lab = mix_context(images, labels, np.random.default_rng(seed), (48, 64), grid=grid)
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8
        assert lab.shape == (48, 64) and lab.dtype == np.int32
        assert set(np.unique(lab)) <= {0, 1, 2, 3, 4, SEM_VOID}  # nearest: no blended ids
        assert len(np.unique(lab)) >= 3


def test_mix_context_image_and_label_resampled_on_one_grid():
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 4, (5, 5)).repeat(16, 0).repeat(16, 1) for _ in range(4)]
    targets, _, mapping = _coloring(labels, rng, ids=[1, 2, 3])
    for seed in range(3):  # the image is the painted label itself: bilinear and nearest agree away from edges
        img, lab = mix_context(targets, labels, np.random.default_rng(seed), (100, 100))
        tgt = paint_planes([lab], mapping)[0].transpose(1, 2, 0)
        edge = np.zeros((100, 100), bool)
        step_y, step_x = (tgt[1:] != tgt[:-1]).any(-1), (tgt[:, 1:] != tgt[:, :-1]).any(-1)
        edge[1:] |= step_y
        edge[:-1] |= step_y
        edge[:, 1:] |= step_x
        edge[:, :-1] |= step_x
        far = np.abs(img.astype(int) - tgt).max(-1)[~edge] > 20
        assert far.mean() < 0.002


def test_mix_context_full_crop_shows_every_image_and_is_deterministic():
    images, labels = _group(4)
    solid = [np.full_like(im, 40 * (k + 1)) for k, im in enumerate(images)]
    img, _ = mix_context(solid, labels, np.random.default_rng(0), (64, 64), grid=(2, 2), scale=(1, 1))
    np.testing.assert_array_equal(img[::32, ::32, 0], [[40, 80], [120, 160]])
    a = mix_context(images, labels, np.random.default_rng(3), (40, 40))
    b = mix_context(images, labels, np.random.default_rng(3), (40, 40))
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="does not hold"):
        mix_context(images, labels, np.random.default_rng(0), (40, 40), grid=(3, 1))
    with pytest.raises(ValueError, match="one label map per image"):
        mix_context(images, labels[:2], np.random.default_rng(0), (40, 40))

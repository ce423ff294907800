from __future__ import annotations

import numpy as np
import pytest

from seggpt_lab.palette import build_palette, colorize, distinct_colors, nearest_color


def test_palette_matches_the_published_examples():
    assert build_palette(1).tolist() == [[0, 0, 0], [255, 255, 255]]
    assert build_palette(2).tolist() == [[0, 0, 0], [255, 255, 255], [255, 255, 127]]
    p8 = build_palette(8)  # base 3, margin 85
    assert p8[1].tolist() == [255, 255, 255] and p8[4].tolist() == [255, 170, 255] and p8[8].tolist() == [255, 85, 170]
    p103 = build_palette(103)  # base 5, margin 51
    assert p103[103].tolist() == [255 - 4 * 51, 255 - 0 * 51, 255 - 2 * 51]


@pytest.mark.parametrize("k", [1, 7, 20, 150])
def test_palette_equals_transformers(k):
    hf = pytest.importorskip("transformers.models.seggpt.image_processing_seggpt")
    assert build_palette(k).tolist() == [list(c) for c in hf.build_palette(k)]


def test_colorize_and_nearest_colour_invert_each_other():
    palette = build_palette(20)
    labels = np.random.default_rng(0).integers(0, 21, (16, 12))
    image = colorize(labels, palette)
    assert image.shape == (16, 12, 3) and image.dtype == np.uint8
    noisy = np.clip(image.astype(int) + np.random.default_rng(1).integers(-20, 21, image.shape), 0, 255)
    assert np.array_equal(nearest_color(noisy, palette), labels)


def test_colorize_paints_out_of_range_labels_black():
    out = colorize(np.array([[0, 1, 5, -1]]), build_palette(2))
    assert out[0, 2].tolist() == [0, 0, 0] and out[0, 3].tolist() == [0, 0, 0] and out[0, 1].tolist() == [255] * 3


def test_distinct_colours_are_far_apart():
    colors = distinct_colors(12).astype(int)
    dist = np.sqrt(((colors[:, None] - colors[None]) ** 2).sum(-1))
    assert dist[~np.eye(12, dtype=bool)].min() > 20

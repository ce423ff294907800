from __future__ import annotations

import pytest
import torch

from seggpt_lab.palette import binarize, build_palette, colorize, decode, distinct_colors, paint


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


def test_paint_and_decode_invert_each_other_under_noise():
    palette = build_palette(20)
    labels = torch.randint(0, 21, (2, 16, 12), generator=torch.Generator().manual_seed(0))
    rgb = paint(labels, palette)
    assert rgb.shape == (2, 3, 16, 12) and rgb.dtype == torch.float32 and rgb.max() <= 1
    noise = (torch.rand(rgb.shape, generator=torch.Generator().manual_seed(1)) - 0.5) * 0.15
    assert torch.equal(decode((rgb + noise).clamp(0, 1), palette), labels)


def test_decode_is_nearest_colour_with_black_as_background():
    palette = torch.tensor([[0, 0, 0], [255, 255, 255]], dtype=torch.uint8)
    rgb = torch.tensor([0.49, 0.51, 0.2, 0.9]).view(1, 4).expand(3, 1, 4)  # grey levels
    assert decode(rgb, palette).tolist() == [[0, 1, 0, 1]]


def test_binarize_is_the_official_video_rule():
    """seggpt_engine.py inference_video: mean over channels of the clipped 0..255 output, greater than 128."""
    grey = torch.tensor([127.4, 127.75, 128.0, 128.25]) / 255
    rgb = torch.stack([grey] * 3)[:, None]  # (3, 1, 4)
    assert binarize(rgb).tolist() == [[0, 0, 0, 1]]
    assert decode(rgb, build_palette(1)).tolist() == [[0, 1, 1, 1]]  # nearest colour: mean > 127.5
    red = torch.tensor([2.0, 0.0, 0.0]).view(3, 1, 1)  # clipped to (255, 0, 0): mean 85, not 170
    assert binarize(red).item() == 0 and binarize(red, threshold=84).item() == 1


def test_colorize_paints_void_and_unknown_labels_black():
    out = colorize(torch.tensor([[0, 1, 5, -1, 65535]]), build_palette(2))
    assert out[0, 1].tolist() == [255] * 3
    assert all(out[0, i].tolist() == [0, 0, 0] for i in (0, 2, 3, 4))


def test_distinct_colours_are_far_apart():
    colors = distinct_colors(12).float()
    dist = torch.cdist(colors, colors)
    assert dist[~torch.eye(12, dtype=torch.bool)].min() > 20

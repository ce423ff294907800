from __future__ import annotations

import pytest
import torch

from seggpt_lab.canvas import denormalize, make_canvas, normalize, split_canvas


def test_canvas_round_trip():
    images = torch.rand(2, 3, 8, 4)
    canvas = make_canvas(images, images.flip(0))
    assert canvas.shape == (2, 3, 16, 4)
    top, bottom = split_canvas(denormalize(normalize(canvas)))
    torch.testing.assert_close(top, images)
    torch.testing.assert_close(bottom, images.flip(0))


def test_spatial_ensemble_tiles_examples_in_a_grid_then_subsamples():
    from seggpt_lab.canvas import spatial_ensemble

    labels = torch.stack([torch.full((1, 8, 6), v) for v in (1, 2, 3)])  # three constant masks
    grid = spatial_ensemble(labels, mode="nearest")
    assert grid.shape == (1, 8, 6)
    # 2 x 2 grid: example 1 top-left, 2 top-right, 3 bottom-left, empty bottom-right
    assert grid[0, :4, :3].unique().tolist() == [1] and grid[0, :4, 3:].unique().tolist() == [2]
    assert grid[0, 4:, :3].unique().tolist() == [3] and grid[0, 4:, 3:].unique().tolist() == [0]
    images = torch.rand(1, 3, 8, 6)
    assert torch.equal(spatial_ensemble(images), images[0])  # one example: unchanged
    four = spatial_ensemble(torch.ones(4, 3, 8, 6))
    torch.testing.assert_close(four, torch.ones(3, 8, 6))


def test_model_inputs_normalise_uint8_canvases():
    from seggpt_lab.canvas import IMAGENET_MEAN, IMAGENET_STD, InContextBatch, model_inputs

    canvas = torch.full((2, 3, 8, 4), 255, dtype=torch.uint8)
    batch = InContextBatch(image_canvas=canvas, target_canvas=torch.zeros_like(canvas), valid=torch.ones(2, 1, 8, 4),
                           bool_masked_pos=torch.ones(2, 2, dtype=torch.bool), seg_type=torch.zeros(2).long())
    image, target = model_inputs(batch)
    expected_white = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    expected_black = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    torch.testing.assert_close(image[0, :, 0, 0], torch.tensor(expected_white))
    torch.testing.assert_close(target[1, :, 7, 3], torch.tensor(expected_black))
    unfinished = InContextBatch(image_canvas=canvas, bool_masked_pos=batch["bool_masked_pos"],
                                seg_type=batch["seg_type"])
    with pytest.raises(ValueError, match="no target_canvas: it is unfinished.*on_after_batch_transfer"):
        model_inputs(unfinished)


def test_float_images_keep_the_torch_resize():
    from seggpt_lab.canvas import resize_image

    image = torch.rand(3, 40, 30)
    expected = torch.nn.functional.interpolate(image[None], size=(32, 32), mode="bicubic", antialias=True)[0]
    torch.testing.assert_close(resize_image(image, (32, 32)), expected.clamp(0, 1), rtol=0, atol=0)
    uint8 = (image * 255).round().byte()
    assert torch.equal(resize_image(uint8, (40, 30)), uint8.float() / 255)  # already at size: only scaled


def test_predictions_go_back_to_the_query_size_as_the_official_float64_output_does():
    """seggpt_engine.py resizes its float64 output with F.interpolate(mode="nearest"); torch picks the source
    pixels in the input's precision, so labels are resized in float64 too (float32 picks others at 854 columns)."""
    from seggpt_lab.canvas import resize_prediction

    labels = torch.arange(448 * 448).view(448, 448)  # every pixel its own label: any other source pixel shows
    official = torch.nn.functional.interpolate(labels[None, None].double(), size=(480, 854), mode="nearest")[0, 0]
    assert torch.equal(resize_prediction(labels, (480, 854)), official.long())
    float32 = torch.nn.functional.interpolate(labels[None, None].float(), size=(480, 854), mode="nearest")[0, 0]
    assert not torch.equal(float32.long(), official.long())

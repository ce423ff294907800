from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from seggpt_lab.canvas import denormalize, make_canvas, normalize, split_canvas
from seggpt_lab.demo import main as demo_main
from seggpt_lab.demo import scene
from seggpt_lab.inference import Predictor, to_tensor
from seggpt_lab.model import seggpt_vit_tiny


def tiny_predictor() -> Predictor:
    torch.manual_seed(0)
    return Predictor(seggpt_vit_tiny(img_size=(64, 32), patch_size=8, depth=3, feature_indices=(2,)))


def test_canvas_round_trip():
    images = torch.rand(2, 3, 8, 4)
    canvas = make_canvas(images, images.flip(0))
    assert canvas.shape == (2, 3, 16, 4)
    top, bottom = split_canvas(denormalize(normalize(canvas)))
    torch.testing.assert_close(top, images)
    torch.testing.assert_close(bottom, images.flip(0))


def test_prediction_is_the_denormalised_query_half_at_the_query_size():
    predictor = tiny_predictor()
    prompt, mask = scene(0, size=40)
    query, _ = scene(1, size=40)
    query = query.resize((50, 30))
    out = predictor.predict(query, [prompt], [mask])
    assert out.size == (50, 30) and out.mode == "RGB"

    half = predictor.half
    image = normalize(make_canvas(to_tensor(prompt, half, Image.Resampling.BICUBIC)[None],
                                  to_tensor(query, half, Image.Resampling.BICUBIC)[None]))
    target = normalize(make_canvas(*[to_tensor(mask, half, Image.Resampling.NEAREST)[None]] * 2))
    with torch.no_grad():
        pred = predictor.model(image, target, predictor.model.query_mask(1), torch.tensor([1]))
    expected = (split_canvas(denormalize(pred))[1][0] * 255).round().byte()
    expected = torch.nn.functional.interpolate(expected[None].float(), size=(30, 50), mode="nearest")[0]
    got = torch.from_numpy(__import__("numpy").asarray(out).copy()).permute(2, 0, 1).float()
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_identical_prompts_give_the_one_prompt_prediction():
    predictor = tiny_predictor()
    prompt, mask = scene(0, size=40)
    query, _ = scene(1, size=40)
    one = predictor.predict(query, [prompt], [mask])
    three = predictor.predict(query, [prompt] * 3, [mask] * 3)
    assert one.tobytes() == three.tobytes()


def test_official_preprocessing_matches_the_published_numbers(shared_data):
    # transformers SegGptImageProcessor reference values for the official demo images (seggpt_reference.md §11)
    examples = shared_data / "painter_examples" / "SegGPT" / "SegGPT_inference" / "examples"
    query = normalize(to_tensor(Image.open(examples / "hmbb_2.jpg"), (448, 448), Image.Resampling.BICUBIC))
    torch.testing.assert_close(query[0, 0, :3], torch.tensor([1.6324, 1.6153, 1.5810]), atol=2e-3, rtol=0)
    prompt = normalize(to_tensor(Image.open(examples / "hmbb_1.jpg"), (448, 448), Image.Resampling.BICUBIC))
    torch.testing.assert_close(prompt[:, :3, :3].mean((1, 2)), torch.tensor([-0.6965, 1.6583, 2.3088]),
                               atol=2e-3, rtol=0)
    mask = normalize(to_tensor(Image.open(examples / "hmbb_1_target.png"), (448, 448), Image.Resampling.NEAREST))
    torch.testing.assert_close(mask[:, 0, 0], torch.tensor([-2.1179, -2.0357, -1.8044]), atol=1e-3, rtol=0)


def test_predict_output_is_the_unrounded_prediction_that_the_demo_overlays():
    from seggpt_lab.inference import overlay

    predictor = tiny_predictor()
    (prompt, mask), (query, _) = scene(0, size=64), scene(1, size=64)
    output = predictor.predict_output(query, [prompt], [mask])
    assert output.dtype == np.float64 and output.shape == (64, 64, 3)
    rounded = np.asarray(predictor.predict(query, [prompt], [mask]))
    np.testing.assert_array_equal(rounded, output.round().astype(np.uint8))
    # seggpt_engine.py inference_image's formula on the unrounded output, value for value
    expected = (np.asarray(query) * (0.6 * output / 255 + 0.4)).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(overlay(query, output)), expected)


def test_demo_writes_the_picture(tmp_path):
    out = demo_main(["--output", str(tmp_path / "demo.png")])
    image = Image.open(out)
    assert image.size == (6 * 256, 256)


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


@pytest.mark.parametrize("ensemble", ["feature", "spatial"])
def test_predict_labels_paints_prompts_and_decodes_the_prediction(monkeypatch, ensemble):
    import seggpt_lab.inference as inference
    from seggpt_lab.palette import build_palette, paint

    model = tiny_predictor().model
    truth = torch.zeros(30, 50, dtype=torch.long)
    truth[5:20, 10:30], truth[22:, 35:] = 1, 2
    seen = {}

    def fake_canvas(model, prompts, masks, query, seg_type, ens):
        seen.update(prompts=prompts.shape, masks=masks, ensemble=ens)
        return paint(inference.resize_labels(truth, query.shape[-2:]), build_palette(2))

    monkeypatch.setattr(inference, "predict_canvas", fake_canvas)
    images = [torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8) for _ in range(3)]
    labels = [torch.randint(0, 3, (40, 40)) for _ in range(3)]
    pred = inference.predict_labels(model, images, labels, torch.zeros(3, 30, 50, dtype=torch.uint8), 2,
                                    ensemble=ensemble)
    assert seen["prompts"] == (3, 3, 32, 32) and seen["ensemble"] == ensemble
    # prompts in by PIL's nearest neighbours, the prediction out by torch's, as seggpt_engine.py does
    assert torch.equal(pred, inference.resize_prediction(inference.resize_labels(truth, (32, 32)), (30, 50)))
    # prompt masks are painted with the palette: class 2 of the first prompt is (255, 255, 127)
    first = inference.resize_labels(labels[0], (32, 32))
    assert torch.allclose(seen["masks"][0][:, first == 2], torch.tensor([1.0, 1.0, 127 / 255])[:, None])


def test_predict_labels_with_a_real_model_returns_valid_labels():
    from seggpt_lab.inference import predict_labels

    model = tiny_predictor().model
    images = [torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8) for _ in range(2)]
    labels = [torch.randint(0, 2, (40, 40)) for _ in range(2)]
    for ensemble in ("feature", "spatial"):
        pred = predict_labels(model, images, labels, torch.zeros(3, 30, 50, dtype=torch.uint8), 1, ensemble=ensemble)
        assert pred.shape == (30, 50) and pred.dtype == torch.long and set(pred.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("background", [True, False])
def test_predict_with_prompt_maps_palette_rows_to_the_prompt_class_ids(monkeypatch, background):
    import seggpt_lab.inference as inference
    from seggpt_lab.palette import build_palette, paint
    from seggpt_lab.prompts import prompt_from_examples

    model = tiny_predictor().model  # half-canvas (32, 32)
    label = torch.zeros(20, 20, dtype=torch.long)
    label[:10], label[10:, :5] = 7, 3
    prompt = prompt_from_examples([torch.full((3, 20, 20), 90, dtype=torch.uint8)], [label], [7, 3, 12], (32, 32))
    rows = torch.zeros(32, 32, dtype=torch.long)  # palette rows the fake model paints: 0 black, 1..3 classes
    rows[:8], rows[8:16, :16], rows[16:, 24:] = 1, 2, 3
    seen = {}

    def fake_canvas(model, prompts, masks, query, seg_type, ensemble="feature"):
        seen.update(prompts=prompts, masks=masks, query=query.shape, seg_type=seg_type)
        return paint(rows, build_palette(3))

    monkeypatch.setattr(inference, "predict_canvas", fake_canvas)
    pred = inference.predict_with_prompt(model, prompt, torch.zeros(3, 64, 48, dtype=torch.uint8),
                                         background=background)
    # the prompt file's own example is the prompt half, its painted target the prompt mask
    assert torch.equal(seen["prompts"][0], prompt["image"]) and torch.equal(seen["masks"][0], prompt["target"])
    assert seen["query"] == (3, 32, 32) and seen["seg_type"] == "semantic"
    assert pred.shape == (64, 48) and pred.dtype == torch.long
    # palette row k -> class_ids[k - 1], at the query's size
    expected = inference.resize_prediction(torch.tensor([0, 7, 3, 12])[rows], (64, 48))
    black = inference.resize_prediction(rows, (64, 48)) == 0
    assert torch.equal(pred[~black], expected[~black])
    if background:
        assert (pred[black] == 0).all()
    else:  # black is not a class: such pixels take the nearest class colour
        assert set(pred[black].unique().tolist()) <= {7, 3, 12}


def test_predict_with_prompt_with_a_real_model_gives_prompt_classes():
    from seggpt_lab.inference import predict_with_prompt
    from seggpt_lab.prompts import prompt_from_examples

    model = tiny_predictor().model
    label = torch.randint(0, 3, (40, 40)) * 4  # classes 4 and 8
    prompt = prompt_from_examples([torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)], [label], [4, 8], (32, 32))
    pred = predict_with_prompt(model, prompt, torch.randint(0, 256, (3, 30, 50), dtype=torch.uint8))
    assert pred.shape == (30, 50) and set(pred.unique().tolist()) <= {0, 4, 8}


def reference_components(labels: torch.Tensor) -> torch.Tensor:
    """Breadth-first search, pixel by pixel: the definition connected_components must meet."""
    from collections import deque

    h, w = labels.shape
    values, out, count = labels.tolist(), [[0] * w for _ in range(h)], 0
    for y in range(h):
        for x in range(w):
            if values[y][x] > 0 and not out[y][x]:
                count += 1
                out[y][x], queue = count, deque([(y, x)])
                while queue:
                    a, b = queue.popleft()
                    for c, d in ((a + i, b + j) for i in (-1, 0, 1) for j in (-1, 0, 1)):
                        if 0 <= c < h and 0 <= d < w and not out[c][d] and values[c][d] == values[a][b]:
                            out[c][d] = count
                            queue.append((c, d))
    return torch.tensor(out, dtype=torch.long).view(h, w)


def test_connected_components_match_a_breadth_first_search():
    from seggpt_lab.inference import connected_components

    generator = torch.Generator().manual_seed(0)
    for h, w, k in [(1, 1, 2), (1, 17, 3), (23, 1, 3), (19, 31, 2), (40, 40, 4), (32, 48, 3)]:
        labels = torch.randint(0, k, (h, w), generator=generator)
        assert torch.equal(connected_components(labels), reference_components(labels)), (h, w, k)
    # a square spiral: one long, winding region
    spiral = torch.zeros(41, 41, dtype=torch.long)
    for r in range(0, 20, 2):
        spiral[r, r:41 - r] = spiral[r:41 - r, 40 - r] = spiral[40 - r, r:41 - r] = 1
        spiral[r + 2:41 - r, r] = 1
    assert torch.equal(connected_components(spiral), reference_components(spiral))
    # diagonal contact joins (8-connectivity); different values never join
    checker = torch.tensor([[1, 0, 2], [0, 1, 0], [2, 0, 1]])
    assert connected_components(checker).tolist() == [[1, 0, 2], [0, 1, 0], [3, 0, 1]]


def test_panoptic_from_classes_splits_things_and_keeps_one_segment_per_stuff_class():
    from seggpt_lab.inference import panoptic_from_classes

    classes = torch.zeros(10, 12, dtype=torch.long)
    classes[:, 8:] = 9  # stuff, two separate bands below
    classes[0:3, 0:3] = 5  # a thing instance
    classes[6:9, 2:6] = 5  # a second instance of the same class
    classes[4, 0] = 5  # a one-pixel instance
    classes[5:10, 0:2] = 7  # a class neither thing nor stuff: no segment
    classes[9, 6:12] = 9
    segments, info = panoptic_from_classes(classes, things=[5], stuff=[9])
    assert info == {1: 5, 2: 5, 3: 5, 4: 9}
    assert segments[0, 0] == 1 and segments[4, 0] == 2 and segments[7, 3] == 3
    assert (segments[classes == 9] == 4).all() and (segments[classes == 7] == 0).all()
    segments, info = panoptic_from_classes(classes, things=[5], stuff=[9], min_area=2)
    assert info == {1: 5, 2: 5, 3: 9} and segments[4, 0] == 0


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
    with pytest.raises(ValueError, match="no target_canvas.*finish_batch"):
        model_inputs(unfinished)


EXAMPLES = ("painter_examples", "SegGPT", "SegGPT_inference", "examples")


def test_evaluation_resizes_images_and_masks_as_pil_does(shared_data, monkeypatch):
    """predict_labels (every `seggpt-lab test` run, and videos) resizes the official examples as seggpt_engine.py
    does, value for value: images by PIL's bicubic `resize((448, 448))`, masks by PIL's NEAREST."""
    from types import SimpleNamespace

    import numpy as np

    import seggpt_lab.inference as inference
    from seggpt_lab.palette import build_palette, paint

    folder = shared_data.joinpath(*EXAMPLES)
    seen = {}

    def fake_canvas(model, prompts, masks, query, seg_type, ensemble):
        seen.update(prompts=prompts, masks=masks, query=query)
        return masks[0]

    monkeypatch.setattr(inference, "predict_canvas", fake_canvas)
    model = SimpleNamespace(img_size=(896, 448))  # predict_labels reads only the canvas size of the faked model
    for name in ("hmbb_1", "hmbb_2", "hmbb_3", "video_1", "video_2", "video_3"):
        image = Image.open(folder / f"{name}.jpg").convert("RGB")
        target = Image.open(folder / f"{name}_target.png").convert("RGB")
        tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
        labels = torch.from_numpy(np.asarray(target)[..., 0] > 127).long()
        inference.predict_labels(model, [tensor], [labels], tensor, 1)
        expected = torch.from_numpy(np.asarray(image.resize((448, 448))).copy()).permute(2, 0, 1).float() / 255
        assert torch.equal(seen["prompts"][0], expected) and torch.equal(seen["query"], expected), name
        pil_labels = np.asarray(Image.fromarray(labels.numpy().astype(np.uint8)).resize((448, 448), Image.NEAREST))
        assert torch.equal(seen["masks"][0], paint(torch.from_numpy(pil_labels.copy()).long(), build_palette(1))), name
        grey = np.asarray(target)[..., 0].copy()  # every grey level of the anti-aliased edge a label of its own
        for size in ((448, 448), (37, 61), (900, 700)):
            pil = np.asarray(Image.fromarray(grey).resize(size[::-1], Image.NEAREST))
            assert np.array_equal(inference.resize_labels(torch.from_numpy(grey).long(), size).numpy(), pil), name


def test_float_images_keep_the_torch_resize():
    from seggpt_lab.inference import resize_image

    image = torch.rand(3, 40, 30)
    expected = torch.nn.functional.interpolate(image[None], size=(32, 32), mode="bicubic", antialias=True)[0]
    torch.testing.assert_close(resize_image(image, (32, 32)), expected.clamp(0, 1), rtol=0, atol=0)
    uint8 = (image * 255).round().byte()
    assert torch.equal(resize_image(uint8, (40, 30)), uint8.float() / 255)  # already at size: only scaled


def test_predictions_go_back_to_the_query_size_as_the_official_float64_output_does():
    """seggpt_engine.py resizes its float64 output with F.interpolate(mode="nearest"); torch picks the source
    pixels in the input's precision, so labels are resized in float64 too (float32 picks others at 854 columns)."""
    from seggpt_lab.inference import resize_prediction

    labels = torch.arange(448 * 448).view(448, 448)  # every pixel its own label: any other source pixel shows
    official = torch.nn.functional.interpolate(labels[None, None].double(), size=(480, 854), mode="nearest")[0, 0]
    assert torch.equal(resize_prediction(labels, (480, 854)), official.long())
    float32 = torch.nn.functional.interpolate(labels[None, None].float(), size=(480, 854), mode="nearest")[0, 0]
    assert not torch.equal(float32.long(), official.long())

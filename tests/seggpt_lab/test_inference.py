from __future__ import annotations

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
    assert torch.equal(pred, inference.resize_labels(inference.resize_labels(truth, (32, 32)), (30, 50)))
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

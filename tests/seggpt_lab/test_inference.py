from __future__ import annotations

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

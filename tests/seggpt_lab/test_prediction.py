from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import seggpt_lab.prediction as prediction
from seggpt_lab.canvas import resize_image, resize_labels, resize_prediction
from seggpt_lab.model import seggpt_vit_tiny
from seggpt_lab.palette import build_palette, fixed_color, paint
from seggpt_lab.prediction import predict_canvas, predict_labels, predict_with_prompt
from seggpt_lab.prompts import prompt_from_examples


def tiny_model():
    torch.manual_seed(0)
    return seggpt_vit_tiny(img_size=(64, 32), patch_size=8, depth=3, feature_indices=(2,)).eval()


@pytest.mark.parametrize("ensemble", ["feature", "spatial"])
def test_predict_labels_paints_prompts_and_decodes_the_prediction(monkeypatch, ensemble):
    model = tiny_model()
    truth = torch.zeros(30, 50, dtype=torch.long)
    truth[5:20, 10:30], truth[22:, 35:] = 1, 2
    seen = {}

    def fake_canvas(model, prompts, masks, query, seg_type, ens):
        seen.update(prompts=prompts.shape, masks=masks, ensemble=ens)
        return paint(resize_labels(truth, query.shape[-2:]), build_palette(2))

    monkeypatch.setattr(prediction, "predict_canvas", fake_canvas)
    images = [torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8) for _ in range(3)]
    labels = [torch.randint(0, 3, (40, 40)) for _ in range(3)]
    pred = prediction.predict_labels(model, images, labels, torch.zeros(3, 30, 50, dtype=torch.uint8), 2,
                                     ensemble=ensemble)
    assert seen["prompts"] == (3, 3, 32, 32) and seen["ensemble"] == ensemble
    # prompts in by PIL's nearest neighbours, the prediction out by torch's, as seggpt_engine.py does
    assert torch.equal(pred, resize_prediction(resize_labels(truth, (32, 32)), (30, 50)))
    # prompt masks are painted with the palette: class 2 of the first prompt is (255, 255, 127)
    first = resize_labels(labels[0], (32, 32))
    assert torch.allclose(seen["masks"][0][:, first == 2], torch.tensor([1.0, 1.0, 127 / 255])[:, None])


def test_predict_labels_paints_and_decodes_with_a_given_palette(monkeypatch):
    """A palette other than build_palette (the fixed colour of a category): the prompt is painted in its colour and
    the prediction decoded over black and it, so a white prediction far from it stays background."""
    colour = fixed_color(7)
    palette = torch.tensor([(0, 0, 0), colour], dtype=torch.uint8)
    truth = torch.zeros(32, 32, dtype=torch.long)
    truth[4:20, 6:30] = 1
    seen = {}

    def fake_canvas(model, prompts, masks, query, seg_type, ens):
        seen["masks"] = masks
        return paint(truth, palette)

    monkeypatch.setattr(prediction, "predict_canvas", fake_canvas)
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    pred = prediction.predict_labels(tiny_model(), [image], [truth], image, 1, palette=palette)
    assert torch.equal(pred, truth)
    assert torch.allclose(seen["masks"][0][:, truth == 1], torch.tensor(colour)[:, None] / 255)
    with pytest.raises(ValueError, match="palette: need 2 colours"):
        prediction.predict_labels(tiny_model(), [image], [truth], image, 1, palette=build_palette(2))


def test_predict_labels_with_a_real_model_decodes_the_nearest_of_black_and_white():
    model = tiny_model()
    images = [torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8) for _ in range(2)]
    labels = [torch.randint(0, 2, (40, 40)) for _ in range(2)]
    query = torch.randint(0, 256, (3, 30, 50), dtype=torch.uint8)
    prompts = torch.stack([resize_image(im, (32, 32)) for im in images])
    masks = torch.stack([paint(resize_labels(lab, (32, 32)), build_palette(1)) for lab in labels])
    for ensemble in ("feature", "spatial"):
        pred = predict_labels(model, images, labels, query, 1, ensemble=ensemble)
        assert pred.shape == (30, 50) and pred.dtype == torch.long
        # one label: white where the predicted colour is nearer white than black, its channel mean above one half
        rgb = predict_canvas(model, prompts, masks, resize_image(query, (32, 32)), "instance", ensemble)
        white = (rgb.mean(0) > 0.5).long()
        assert 0 < white.float().mean() < 1 and torch.equal(pred, resize_prediction(white, (30, 50)))


@pytest.mark.parametrize("background", [True, False])
def test_predict_with_prompt_maps_palette_rows_to_the_prompt_class_ids(monkeypatch, background):
    model = tiny_model()  # half-canvas (32, 32)
    label = torch.zeros(20, 20, dtype=torch.long)
    label[:10], label[10:, :5] = 7, 3
    prompt = prompt_from_examples([torch.full((3, 20, 20), 90, dtype=torch.uint8)], [label], [7, 3, 12], (32, 32))
    rows = torch.zeros(32, 32, dtype=torch.long)  # palette rows the fake model paints: 0 black, 1..3 classes
    rows[:8], rows[8:16, :16], rows[16:, 24:] = 1, 2, 3
    seen = {}

    def fake_canvas(model, prompts, masks, query, seg_type, ensemble="feature"):
        seen.update(prompts=prompts, masks=masks, query=query.shape, seg_type=seg_type)
        return paint(rows, build_palette(3))

    monkeypatch.setattr(prediction, "predict_canvas", fake_canvas)
    pred = prediction.predict_with_prompt(model, prompt, torch.zeros(3, 64, 48, dtype=torch.uint8),
                                          background=background)
    # the prompt file's own example is the prompt half, its painted target the prompt mask
    assert torch.equal(seen["prompts"][0], prompt["image"]) and torch.equal(seen["masks"][0], prompt["target"])
    assert seen["query"] == (3, 32, 32) and seen["seg_type"] == "semantic"
    assert pred.shape == (64, 48) and pred.dtype == torch.long
    # palette row k -> class_ids[k - 1], at the query's size
    expected = resize_prediction(torch.tensor([0, 7, 3, 12])[rows], (64, 48))
    black = resize_prediction(rows, (64, 48)) == 0
    assert torch.equal(pred[~black], expected[~black])
    if background:
        assert (pred[black] == 0).all()
    else:  # black is not a class: such pixels take the class colour nearest to black
        nearest = int((build_palette(3)[1:].float() ** 2).sum(1).argmin())
        assert (pred[black] == [7, 3, 12][nearest]).all()


def test_predict_with_prompt_with_a_real_model_gives_prompt_classes():
    model = tiny_model()
    label = torch.randint(0, 3, (40, 40)) * 4  # classes 4 and 8
    prompt = prompt_from_examples([torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)], [label], [4, 8], (32, 32))
    query = torch.randint(0, 256, (3, 30, 50), dtype=torch.uint8)
    pred = predict_with_prompt(model, prompt, query)
    assert pred.shape == (30, 50) and pred.dtype == torch.long
    # without black, a pixel whose nearest colour is a class colour keeps that class
    classes = predict_with_prompt(model, prompt, query, background=False)
    shown = pred > 0
    assert shown.any() and torch.equal(classes[shown], pred[shown])


EXAMPLES = ("painter_examples", "SegGPT", "SegGPT_inference", "examples")


def test_evaluation_resizes_images_and_masks_as_pil_does(shared_data, monkeypatch):
    """predict_labels (every `seggpt-lab test` run, and videos) resizes the official examples as seggpt_engine.py
    does, value for value: images by PIL's bicubic `resize((448, 448))`, masks by PIL's NEAREST."""
    from types import SimpleNamespace

    folder = shared_data.joinpath(*EXAMPLES)
    seen = {}

    def fake_canvas(model, prompts, masks, query, seg_type, ensemble):
        seen.update(prompts=prompts, masks=masks, query=query)
        return masks[0]

    monkeypatch.setattr(prediction, "predict_canvas", fake_canvas)
    model = SimpleNamespace(img_size=(896, 448))  # predict_labels reads only the canvas size of the faked model
    for name in ("hmbb_1", "hmbb_2", "hmbb_3", "video_1", "video_2", "video_3"):
        image = Image.open(folder / f"{name}.jpg").convert("RGB")
        target = Image.open(folder / f"{name}_target.png").convert("RGB")
        tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
        labels = torch.from_numpy(np.asarray(target)[..., 0] > 127).long()
        prediction.predict_labels(model, [tensor], [labels], tensor, 1)
        expected = torch.from_numpy(np.asarray(image.resize((448, 448))).copy()).permute(2, 0, 1).float() / 255
        assert torch.equal(seen["prompts"][0], expected) and torch.equal(seen["query"], expected), name
        pil_labels = np.asarray(Image.fromarray(labels.numpy().astype(np.uint8)).resize((448, 448), Image.NEAREST))
        assert torch.equal(seen["masks"][0], paint(torch.from_numpy(pil_labels.copy()).long(), build_palette(1))), name
        grey = np.asarray(target)[..., 0].copy()  # every grey level of the anti-aliased edge a label of its own
        for size in ((448, 448), (37, 61), (900, 700)):
            pil = np.asarray(Image.fromarray(grey).resize(size[::-1], Image.NEAREST))
            assert np.array_equal(resize_labels(torch.from_numpy(grey).long(), size).numpy(), pil), name

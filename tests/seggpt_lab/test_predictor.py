"""Predictor: inputs of every kind, the official demo's pre- and post-processing, prompt files, videos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import seggpt_lab.prediction as prediction
from seggpt_lab.canvas import IMAGENET_MEAN, IMAGENET_STD, denormalize, make_canvas, normalize, split_canvas
from seggpt_lab.checkpoint import save_checkpoint
from seggpt_lab.demo import scene
from seggpt_lab.images import load_rgb, prompt_masks, read_frames, to_tensor
from seggpt_lab.model import SegGPT, seggpt_vit_tiny
from seggpt_lab.palette import build_palette
from seggpt_lab.pictures import overlay
from seggpt_lab.predictor import Predictor
from seggpt_lab.prompts import prompt_from_examples, save_prompt

EXAMPLES = ("painter_examples", "SegGPT", "SegGPT_inference", "examples")


def _model(half: int = 32) -> SegGPT:
    torch.manual_seed(0)
    return SegGPT(img_size=(2 * half, half), patch_size=8, embed_dim=32, depth=2, num_heads=2, merge_index=0,
                  feature_indices=(0, 1), decoder_embed_dim=8, pretrain_img_size=half, init="xavier")


def _scene(seed: int, size=(40, 50)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    label = np.zeros(size, np.int64)
    label[5:20, 10:30] = 1
    label[25:35, 5:15] = 2
    return image, label


def _palette_png(label: np.ndarray) -> Image.Image:
    """A DAVIS-style palette PNG of a label map (PIL writes a "P" image without a palette lossily)."""
    image = Image.fromarray(label.astype(np.uint8))
    image.putpalette(build_palette(int(label.max())).flatten().tolist())
    return image


def test_mask_kinds_are_read_as_documented() -> None:
    _, label = _scene(0)
    binary = (label > 0).astype(np.uint8) * 255
    labels, palette, canvas = prompt_masks([Image.fromarray(binary)])  # "L" {0, 255}: binary, shown as given
    assert set(np.unique(labels[0])) == {0, 1} and palette.tolist() == build_palette(1).tolist()
    assert (canvas[0][..., 0] == binary).all()
    labels, palette, canvas = prompt_masks([label > 0])  # bool: binary, painted white
    assert (labels[0] == (label > 0)).all() and (canvas[0][label > 0] == 255).all()
    indexed = _palette_png(label)
    labels, palette, canvas = prompt_masks([indexed])  # palette PNG: its indices, painted with build_palette
    assert (labels[0] == label).all() and len(palette) == 3 and (canvas[0] == palette[label]).all()
    labels, _, _ = prompt_masks([label])  # an integer map with values {0, 1, 2}: indices
    assert (labels[0] == label).all()
    colour = np.zeros((*label.shape, 3), np.uint8)
    colour[label == 1] = (255, 0, 0)
    colour[label == 2] = (0, 0, 255)
    colour[19, 10:13] = (128, 0, 0)  # an anti-aliased edge, under 1% of the coloured pixels: snaps to red
    labels, palette, canvas = prompt_masks([colour])
    assert palette.tolist() == [[0, 0, 0], [255, 0, 0], [0, 0, 255]]  # the most frequent colour first
    assert (labels[0] == label).all() and (canvas[0] == colour).all()  # the canvas keeps the given pixels
    soft = Image.fromarray(np.linspace(0, 255, 40 * 50).reshape(40, 50).astype(np.uint8))  # grey up to white
    labels, _, _ = prompt_masks([soft])
    assert set(np.unique(labels[0])) == {0, 1} and labels[0].mean() == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="kind='color'"):
        prompt_masks([colour], kind="binary")
    with pytest.raises(ValueError, match="no prompt masks"):
        prompt_masks([])


def test_images_of_any_depth_become_rgb(tmp_path) -> None:
    grey16 = (np.arange(20 * 30).reshape(20, 30) * 100).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "deep.png")
    rgb = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert rgb.shape == (20, 30, 3) and rgb[-1, -1, 0] == round(599 * 100 / 257)  # scaled, not clipped to white
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 1] = 7
    assert np.asarray(load_rgb(rgba))[..., 1].max() == 7 and np.asarray(load_rgb(rgba)).shape == (4, 5, 3)
    assert np.asarray(load_rgb(torch.full((3, 4, 5), 0.5))).max() == 128  # float tensors in [0, 1]
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"text\.png: not an image"):
        load_rgb(tmp_path / "text.png")
    with pytest.raises(FileNotFoundError, match=r"missing\.jpg: no such image file"):
        load_rgb(tmp_path / "missing.jpg")


def test_official_demo_canvases_and_output(shared_data) -> None:
    """The canvases built from the official example files equal seggpt_engine.py's recipe, written out here
    with PIL and numpy; the colour output is its clip, resize and overlay."""
    folder = shared_data.joinpath(*EXAMPLES)
    predictor = Predictor(_model(half=64))
    prompt, mask, query = folder / "hmbb_1.jpg", folder / "hmbb_1_target.png", folder / "hmbb_2.jpg"
    images, masks, palette = predictor.prepare([(prompt, mask)])
    query_tensor = predictor.query_tensor(query)

    def official(path, resample=None):  # seggpt_engine.py: convert("RGB").resize((w, h)[, NEAREST]) / 255
        image = Image.open(path).convert("RGB")
        image = image.resize((64, 64)) if resample is None else image.resize((64, 64), resample)
        return (np.asarray(image) / 255 - IMAGENET_MEAN) / IMAGENET_STD

    expected_image = np.concatenate([official(prompt), official(query)], axis=0)
    expected_target = np.concatenate([official(mask, Image.NEAREST)] * 2, axis=0)
    image_canvas = normalize(make_canvas(images, query_tensor[None]))[0].permute(1, 2, 0).numpy()
    target_canvas = normalize(make_canvas(masks, masks))[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(image_canvas, expected_image, atol=1e-5)
    np.testing.assert_allclose(target_canvas, expected_target, atol=1e-5)
    assert palette.tolist() == [[0, 0, 0], [255, 255, 255]]  # an anti-aliased white-on-black mask: binary

    result = predictor.segment(query, [(prompt, mask)])
    size = Image.open(query).size
    with torch.no_grad():  # the official post-processing of the same forward
        pred = predictor.model(torch.from_numpy(expected_image).permute(2, 0, 1)[None].float(),
                               torch.from_numpy(expected_target).permute(2, 0, 1)[None].float(),
                               predictor.model.query_mask(1), torch.ones(1, dtype=torch.long))
    out = pred[0, :, 64:].permute(1, 2, 0).numpy()
    out = np.clip((out * IMAGENET_STD + IMAGENET_MEAN) * 255, 0, 255)
    out = torch.nn.functional.interpolate(torch.from_numpy(out).permute(2, 0, 1)[None], size=size[::-1],
                                          mode="nearest")[0].permute(1, 2, 0).numpy()
    assert result.mask.size == size and result.labels.shape == size[::-1]
    np.testing.assert_allclose(np.asarray(result.mask), out, atol=0.5 + 1e-3)
    white = ((out - 255) ** 2).sum(-1) < (out**2).sum(-1)
    assert (result.labels == white).mean() > 0.999  # labels: the nearest of black and white (ties aside)

    # the overlay, value for value: inference_image's formula on the unrounded float64 output of the same forward
    # (our canvases, equal to the official ones above within float32 rounding), not on the rounded mask
    with torch.no_grad():
        pred = predictor.model(normalize(make_canvas(images, query_tensor[None])), normalize(make_canvas(masks, masks)),
                               predictor.model.query_mask(1), torch.ones(1, dtype=torch.long))
    out = pred[0, :, 64:].permute(1, 2, 0).numpy()
    out = np.clip((out * IMAGENET_STD + IMAGENET_MEAN) * 255, 0, 255)  # float32 * numpy float64: float64
    np.testing.assert_array_equal(result.output, out)
    out = torch.nn.functional.interpolate(torch.from_numpy(out).permute(2, 0, 1)[None], size=size[::-1],
                                          mode="nearest")[0].permute(1, 2, 0).numpy()
    expected_overlay = (np.asarray(Image.open(query).convert("RGB")) * (0.6 * out / 255 + 0.4)).astype(np.uint8)
    from_mask = (np.asarray(Image.open(query).convert("RGB")) * (0.6 * np.asarray(result.mask) / 255 + 0.4))
    assert (from_mask.astype(np.uint8) != expected_overlay).any()  # the rounded mask would not do
    np.testing.assert_array_equal(np.asarray(result.overlay(query)), expected_overlay)
    np.testing.assert_array_equal(np.asarray(overlay(Image.open(query), result.output)), expected_overlay)


def test_segment_inputs_batches_and_errors(tmp_path) -> None:
    predictor = Predictor(_model())
    image, label = _scene(0)
    query, _ = _scene(1, size=(37, 61))
    result = predictor.segment(query, [(image, label)])
    assert result.labels.shape == (37, 61) and set(np.unique(result.labels)) <= {0, 1, 2}
    assert result.label_image().mode == "P" and result.label_image().size == (61, 37)
    Image.fromarray(image).save(tmp_path / "p.png")
    _palette_png(label).save(tmp_path / "m.png")
    from_files = predictor.segment(torch.from_numpy(query).permute(2, 0, 1), [(tmp_path / "p.png", tmp_path / "m.png")])
    assert (from_files.labels == result.labels).all()  # paths, tensors and arrays give one answer
    batch = predictor.segment([query, image], [(image, label), (image, label)], ensemble="spatial")
    assert [r.labels.shape for r in batch] == [(37, 61), (40, 50)]
    with pytest.raises(ValueError, match="prompt 0: the mask is 20x10 pixels, the image 50x40"):
        predictor.segment(query, [(image, np.zeros((10, 20), np.uint8))])
    with pytest.raises(ValueError, match="mark nothing"):
        predictor.segment(query, [(image, np.zeros((40, 50), np.uint8))])
    with pytest.raises(ValueError, match=r"either prompts=\[\(image, mask\), \.\.\.\] or prompt_file"):
        predictor.segment(query)
    with pytest.raises(ValueError, match="pairs"):
        predictor.segment(query, [image])


def test_segment_with_a_prompt_file_returns_its_class_ids(tmp_path) -> None:
    model = _model()
    image, label = _scene(0)
    prompt = prompt_from_examples([torch.from_numpy(image).permute(2, 0, 1)], [torch.from_numpy(label * 7)],
                                  [7, 14], (32, 32), ["cat", "dog"])
    save_prompt(prompt, tmp_path / "tuned.pt")
    save_checkpoint(model, tmp_path / "model.pth")
    result = Predictor.from_pretrained(tmp_path / "model.pth").segment(image, prompt_file=tmp_path / "tuned.pt",
                                                                        seg_type="semantic")
    assert set(np.unique(result.labels)) <= {0, 7, 14} and result.labels.shape == (40, 50)


def test_video_propagation_keeps_the_first_mask_and_reads_gifs(tmp_path) -> None:
    predictor = Predictor(_model())
    frames = [Image.fromarray(_scene(s)[0]) for s in range(4)]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:])
    first = _palette_png(_scene(0)[1])
    results = predictor.segment_video(tmp_path / "clip.gif", first, num_frames=2)
    assert len(results) == 4 and (results[0].labels == _scene(0)[1]).all()
    assert all(r.labels.shape == (40, 50) and set(np.unique(r.labels)) <= {0, 1, 2} for r in results)
    assert len(read_frames(tmp_path / "clip.gif", max_frames=2)) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no frames"):
        predictor.segment_video(tmp_path / "empty", first)
    with pytest.raises(ValueError, match="the video has no frames"):
        predictor.segment_video([], first)


def test_video_files_are_read_with_pyav(tmp_path) -> None:
    av = pytest.importorskip("av")
    frames = [_scene(s, size=(48, 64))[0] for s in range(5)]
    with av.open(str(tmp_path / "clip.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    read = read_frames(tmp_path / "clip.mp4")
    assert len(read) == 5 and read[0].shape == (3, 48, 64) and read[0].dtype == torch.uint8
    first = np.zeros((48, 64), np.uint8)
    first[10:30, 20:40] = 255
    assert len(Predictor(_model()).segment_video(tmp_path / "clip.mp4", first, num_frames=1)) == 5
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match=r"broken\.mp4: not a video PyAV can read"):
        read_frames(tmp_path / "broken.mp4")


def test_video_mode_binarises_as_the_official_video_mode(monkeypatch) -> None:
    """seggpt_engine.py inference_video: foreground where the 0..255 channel mean exceeds 128, for the results and
    for the predictions fed back as prompts; the nearest of black and white (mean > 127.5) elsewhere."""
    rgb = torch.zeros(3, 32, 32)
    rgb[:, 0, 0] = 127.75 / 255  # mean in (127.5, 128]: white by nearest colour, background by the official rule
    rgb[:, 0, 1] = 128.25 / 255  # foreground by both
    calls = []

    def fake_canvas(model, prompts, masks, query, seg_type, ensemble):
        calls.append(masks)
        return rgb

    monkeypatch.setattr(prediction, "predict_canvas", fake_canvas)
    frames = [_scene(s, size=(32, 32))[0] for s in range(3)]  # the half-canvas size: no resizing
    first = np.zeros((32, 32), np.uint8)
    first[:2, :2] = 255
    results = Predictor(_model()).segment_video(frames, first, num_frames=1)
    assert [r.labels[0, :2].tolist() for r in results[1:]] == [[0, 1], [0, 1]]
    memory = calls[1][1]  # frame 2's second prompt: frame 1's prediction, painted
    assert memory[:, 0, 0].tolist() == [0, 0, 0] and memory[:, 0, 1].tolist() == [1, 1, 1]
    tensors = [torch.from_numpy(f).permute(2, 0, 1) for f in frames]
    image_path = prediction.predict_labels(_model(), tensors[:1], [torch.from_numpy(first > 0).long()], tensors[1], 1)
    assert image_path[0, :2].tolist() == [1, 1]


def tiny_predictor() -> Predictor:
    torch.manual_seed(0)
    return Predictor(seggpt_vit_tiny(img_size=(64, 32), patch_size=8, depth=3, feature_indices=(2,)))


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
    # transformers' SegGptImageProcessor values for the official demo images (its test_image_processing_seggpt.py
    # test_pixel_values and convert_seggpt_to_hf.py)
    examples = shared_data / "painter_examples" / "SegGPT" / "SegGPT_inference" / "examples"
    query = normalize(to_tensor(Image.open(examples / "hmbb_2.jpg"), (448, 448), Image.Resampling.BICUBIC))
    torch.testing.assert_close(query[0, 0, :3], torch.tensor([1.6324, 1.6153, 1.5810]), atol=2e-3, rtol=0)
    prompt = normalize(to_tensor(Image.open(examples / "hmbb_1.jpg"), (448, 448), Image.Resampling.BICUBIC))
    torch.testing.assert_close(prompt[:, :3, :3].mean((1, 2)), torch.tensor([-0.6965, 1.6583, 2.3088]),
                               atol=2e-3, rtol=0)
    mask = normalize(to_tensor(Image.open(examples / "hmbb_1_target.png"), (448, 448), Image.Resampling.NEAREST))
    torch.testing.assert_close(mask[:, 0, 0], torch.tensor([-2.1179, -2.0357, -1.8044]), atol=1e-3, rtol=0)


def test_predict_output_is_the_unrounded_prediction_that_the_demo_overlays():
    predictor = tiny_predictor()
    (prompt, mask), (query, _) = scene(0, size=64), scene(1, size=64)
    output = predictor.predict_output(query, [prompt], [mask])
    assert output.dtype == np.float64 and output.shape == (64, 64, 3)
    rounded = np.asarray(predictor.predict(query, [prompt], [mask]))
    np.testing.assert_array_equal(rounded, output.round().astype(np.uint8))
    # seggpt_engine.py inference_image's formula on the unrounded output, value for value
    expected = (np.asarray(query) * (0.6 * output / 255 + 0.4)).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(overlay(query, output)), expected)

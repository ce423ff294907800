"""Pair augmentation: crops, flips and jitter, the training example and its collation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.augment import (
    GRAY,
    PairTransform,
    _decode,
    _hue_rotation,
    _jitter,
    _resize_image,
    color_jitter,
    crop_box,
    finish_batch,
    flip,
    random_resized_crop,
)
from datamodules.masking import query_half_mask
from datamodules.pairing import Pair
from datamodules.pretrain import collate
from datamodules.schema import SEM_VOID, Sample
from seggpt_lab.palette import fixed_color

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def _encode(image: np.ndarray, ext: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG" if ext == "png" else "JPEG", quality=95)
    return buf.getvalue()


def _sample(key: str, image: np.ndarray, label: np.ndarray, task: str = "semantic", ext: str = "png") -> Sample:
    field = "ins" if task == "instance" else "sem"
    return Sample(key=key, image=_encode(image, ext), image_ext=ext, meta={"task": task}, **{field: label})


def _scene(h: int = 96, w: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Left half class 1 (red), right half class 2 (blue), a void square (green) in the middle."""
    image = np.zeros((h, w, 3), np.uint8)
    label = np.zeros((h, w), np.int32)
    image[:, : w // 2], label[:, : w // 2] = RED, 1
    image[:, w // 2 :], label[:, w // 2 :] = BLUE, 2
    image[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3], label[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = GREEN, SEM_VOID
    return image, label


def _pair(task: str = "semantic", ext: str = "png") -> Pair:
    image, label = _scene()
    sample = _sample("a", image, label, task, ext)
    return Pair(sample, sample, [1, 2], "ins" if task == "instance" else "sem", True, task)


def _where(half: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """(3, h, w) canvas half -> (h, w) bool: pixels exactly `color`."""
    return (half == np.array(color, np.uint8)[:, None, None]).all(0)


def test_crop_box_inside_and_area_in_scale():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = crop_box(60, 90, rng, scale=(0.3, 1.0))
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 90
        assert 0.25 <= h * w / (60 * 90) <= 1.0  # 0.3 up to rounding, or the centred fallback
    assert crop_box(10, 100, rng, scale=(1.0, 1.0)) == (0, 43, 10, 13)  # too wide: centred crop at ratio 4/3


def test_random_resized_crop_labels_never_interpolated_and_aligned():
    image, label = _scene(120, 100)
    label[label == 2] = 60000  # far-apart values: any interpolation would invent new ones
    rng = np.random.default_rng(1)
    for _ in range(20):
        img, lab = random_resized_crop(image, label, rng, size=(48, 64))
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8 and lab.shape == (48, 64)
        assert set(np.unique(lab)) <= {1, 60000, SEM_VOID}
        for value, color in [(1, RED), (60000, BLUE), (SEM_VOID, GREEN)]:
            # pixels whose 3 x 3 neighbourhood has one label sit inside a region, away from bilinear blends
            inner = np.ones_like(lab, bool)
            inner[1:-1, 1:-1] = np.all([lab[1 + dy : lab.shape[0] - 1 + dy, 1 + dx : lab.shape[1] - 1 + dx] == value
                                        for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
            inner[[0, -1]], inner[:, [0, -1]] = False, False
            assert (np.abs(img[inner].astype(int) - color) <= 1).all()


def test_resize_is_pils_filter_on_the_crop():
    """torch's uint8 antialiased bilinear on the crop equals PIL's `resize` of the cropped image, to one level."""
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    for top, left, h, w in [(5, 7, 80, 100), (0, 0, 90, 120), (20, 30, 30, 40)]:  # shrink, shrink, enlarge
        ours = _resize_image(image, (top, left, h, w), (48, 64))
        pil = np.asarray(Image.fromarray(image[top : top + h, left : left + w]).resize((64, 48), Image.BILINEAR))
        assert ours.shape == (48, 64, 3) and np.abs(ours.astype(int) - pil).max() <= 1


def test_flip_moves_image_and_label_together():
    image, label = _scene()
    img, lab = flip(image, label, np.random.default_rng(0), p=1.0)
    np.testing.assert_array_equal(img, image[:, ::-1])
    np.testing.assert_array_equal(lab, label[:, ::-1])
    img, lab = flip(image, label, np.random.default_rng(0), p=0.0)
    assert img is image and lab is label


def test_color_jitter():
    image = np.random.default_rng(0).integers(0, 200, (40, 30, 3), dtype=np.uint8)
    out = color_jitter(image, np.random.default_rng(0), brightness=0, contrast=0, saturation=0)
    np.testing.assert_array_equal(out, image)  # all factors 1: identity
    out = color_jitter(image, np.random.default_rng(3), brightness=0.4, contrast=0, saturation=0)
    assert out.shape == image.shape and out.dtype == np.uint8
    ratio = out[image > 50] / image[image > 50]  # brightness alone scales every value by one factor
    assert np.ptp(ratio) < 0.02 and 0.6 <= ratio.mean() <= 1.4 and abs(ratio.mean() - 1) > 1e-3
    gray = np.full((8, 8, 3), 120, np.uint8)
    out = color_jitter(gray, np.random.default_rng(0), brightness=0, contrast=0.4, saturation=0.4)
    np.testing.assert_array_equal(out, gray)  # a flat grey image is its own mean and its own grey
    a, b = (color_jitter(image, np.random.default_rng(5)) for _ in range(2))
    np.testing.assert_array_equal(a, b)


def test_default_jitter_is_torchvisions_three_steps_in_a_random_order():
    """The default jitter (brightness, contrast, saturation 0.4, no hue, always on): one permutation of the three
    steps, then one factor per step in that order, each applied as torchvision's operation (clipping only at the
    end). This fixes the draws, and with them every batch of a recipe that keeps the default."""
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        ref = image.astype(float)
        for step in rng.permutation(3):
            f = rng.uniform(0.6, 1.4)
            if step == 0:
                ref = f * ref
            elif step == 1:
                ref = f * ref + (1 - f) * (ref @ GRAY).mean()
            else:
                ref = f * ref + (1 - f) * (ref @ GRAY)[..., None]
        out = color_jitter(image, np.random.default_rng(seed))
        assert np.abs(out.astype(int) - np.clip(np.round(ref), 0, 255)).max() <= 1
    transform = PairTransform(size=(64, 64), patch_size=8, on_device=True)
    explicit = PairTransform(size=(64, 64), patch_size=8, on_device=True, jitter=(0.4, 0.4, 0.4, 0.0), jitter_prob=1)
    a, b = (t(_pair(), np.random.default_rng(1)) for t in (transform, explicit))
    for key in ("image_canvas", "label_canvas", "jitter", "flip", "bool_masked_pos"):
        np.testing.assert_array_equal(a[key], b[key])


def _hue(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 3) uint8 -> HSV hue in turns [0, 1) and saturation."""
    x = image.astype(float)
    top, spread = x.max(-1), np.maximum(x.max(-1) - x.min(-1), 1e-9)
    r, g, b = np.moveaxis(x, -1, 0)
    hue = np.where(top == r, ((g - b) / spread) % 6, np.where(top == g, (b - r) / spread + 2, (r - g) / spread + 4))
    return hue / 6, spread / np.maximum(top, 1e-9)


def _turns(delta: np.ndarray) -> np.ndarray:
    return (delta + 0.5) % 1 - 0.5  # a hue difference in (-1/2, 1/2]


def test_hue_rotation_follows_torchvisions_hue_shift():
    """The linear hue step: torchvision's exactly at a third of a turn, within a hundredth of a turn at +-0.1."""
    from torchvision.transforms.functional import adjust_hue

    image = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    start, saturation = _hue(image)
    coloured = saturation > 0.5
    for shift in (1 / 3, 0.1, -0.1):
        stacked = np.zeros((3, 7))
        stacked[:, :3] = _hue_rotation(shift)
        ours = _jitter(image, stacked, np.empty((3, 48, 48), np.uint8)).transpose(1, 2, 0)
        theirs = adjust_hue(torch.from_numpy(image).permute(2, 0, 1), shift).permute(1, 2, 0).numpy()
        if shift == 1 / 3:
            assert np.abs(ours.astype(int) - theirs).max() <= 1  # red -> green, green -> blue, blue -> red
        moved, gap = _turns(_hue(ours)[0] - start)[coloured], _turns(_hue(ours)[0] - _hue(theirs)[0])[coloured]
        assert abs(np.median(moved) - shift) < 0.01 and np.median(np.abs(gap)) < 0.01
    np.testing.assert_allclose(_hue_rotation(0.1) @ np.ones(3), np.ones(3))  # grey stays grey
    np.testing.assert_allclose(_hue_rotation(0.1) @ _hue_rotation(0.1).T, np.eye(3), atol=1e-12)


def test_color_jitter_hue_shifts_hue_both_ways_within_its_range():
    colour = np.array([200, 110, 60], np.uint8)  # inside the gamut after any shift up to 0.1 turn
    image = np.broadcast_to(colour, (8, 8, 3)).copy()
    shifts = []
    for seed in range(40):
        out = color_jitter(image, np.random.default_rng(seed), brightness=0, contrast=0, saturation=0, hue=0.1)
        shifts.append(float(_turns(_hue(out[0, 0])[0] - _hue(colour)[0])))
        assert abs(out[0, 0].astype(float).mean() - colour.mean()) <= 1  # the rotation keeps the mean level
    shifts = np.array(shifts)
    assert np.abs(shifts).max() <= 0.1 + 0.01 and shifts.min() < -0.03 and shifts.max() > 0.03
    np.testing.assert_array_equal(color_jitter(image, np.random.default_rng(0), 0, 0, 0, hue=0.0), image)


def test_jitter_prob_jitters_that_share_of_the_views():
    """p = 0: each view is its crop untouched; p = 1: every view is jittered; in between, that share of views."""
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    sample = _sample("a", image, np.ones((64, 64), np.int32))
    pair = Pair(sample, sample, [1], "sem", True, "semantic")
    kw = {"size": (64, 64), "scale": (1.0, 1.0), "flip": False, "patch_size": 8, "jitter": (0.4, 0.4, 0.2, 0.1)}
    for p in (0.0, 1.0):
        ex = PairTransform(**kw, jitter_prob=p)(pair, np.random.default_rng(3))
        for half in (ex["image_canvas"][:, :64], ex["image_canvas"][:, 64:]):  # the crop is the whole image
            assert np.array_equal(half.transpose(1, 2, 0), image) == (p == 0)
    transform = PairTransform(**kw, jitter_prob=0.5, on_device=True)
    maps = np.concatenate([transform(pair, np.random.default_rng(s))["jitter"] for s in range(200)])
    jittered = ~np.all(maps == np.eye(3, 7), axis=(1, 2))
    assert 0.4 < jittered.mean() < 0.6  # 400 views: 0.5 +- 0.1 is 4 standard deviations
    with pytest.raises(ValueError, match="jitter_prob"):
        PairTransform(jitter_prob=1.5)
    with pytest.raises(ValueError, match="hue"):
        PairTransform(jitter=(0.4, 0.4, 0.2, 0.6))


def test_a_pair_can_bring_its_own_crop_scale():
    """`scale` per call (a source's own, `ShardSource.scale`): the views show that share of the image's area."""
    h, w = 96, 80
    ids = np.arange(1, h * w + 1, dtype=np.int32).reshape(h, w)  # every pixel its own id, which tells where it is
    sample = _sample("a", np.zeros((h, w, 3), np.uint8), ids)
    pair = Pair(sample, sample, [1], "sem", True, "semantic")
    transform = PairTransform(size=(64, 64), scale=(0.8, 1.0), jitter=0.0, patch_size=8)
    for scale, (low, high) in ((None, (0.7, 1.0)), ((0.05, 0.1), (0.03, 0.12))):
        for s in range(5):
            _, labels = transform.views(pair, np.random.default_rng(s), scale=scale)
            for half in (labels[0, :64], labels[0, 64:]):
                rows, cols = np.divmod(half.astype(int) - 1, w)  # the source pixels the view shows
                assert low <= (np.ptp(rows) + 1) * (np.ptp(cols) + 1) / (h * w) <= high
        ex = transform(pair, np.random.default_rng(0), scale=scale)
        assert ex["image_canvas"].shape == (3, 128, 64)


def test_example_shapes_dtypes_and_batch():
    transform = PairTransform(size=(64, 48), patch_size=8)
    rng = np.random.default_rng(0)
    examples = [transform(_pair(task), rng) for task in ("semantic", "instance", "semantic")]
    ex = examples[0]
    assert ex["image_canvas"].shape == ex["target_canvas"].shape == (3, 128, 48)
    assert ex["image_canvas"].dtype == ex["target_canvas"].dtype == np.uint8
    assert ex["valid"].shape == (1, 128, 48) and ex["valid"].dtype == np.uint8
    assert ex["bool_masked_pos"].shape == (16 * 6,) and ex["bool_masked_pos"].dtype == bool
    assert [e["seg_type"] for e in examples] == [0, 1, 0]
    batch = collate(examples)
    assert batch["image_canvas"].shape == batch["target_canvas"].shape == (3, 3, 128, 48)
    assert batch["image_canvas"].dtype == batch["target_canvas"].dtype == torch.uint8
    assert batch["valid"].shape == (3, 1, 128, 48) and batch["valid"].dtype == torch.uint8
    assert batch["bool_masked_pos"].shape == (3, 96) and batch["bool_masked_pos"].dtype == torch.bool
    assert batch["seg_type"].tolist() == [0, 1, 0] and batch["seg_type"].dtype == torch.long


def test_halves_share_one_colour_mapping_and_void_is_invalid():
    transform = PairTransform(size=(64, 64), scale=(0.8, 1.0), jitter=0.0, patch_size=8)
    rng = np.random.default_rng(0)
    coloured = 0
    for _ in range(30):
        ex = transform(_pair(), rng)
        image, target, valid = ex["image_canvas"], ex["target_canvas"], ex["valid"][0]
        for color in (RED, BLUE):
            top, bottom = _where(image[:, :64], color), _where(image[:, 64:], color)
            assert top.any() and bottom.any()  # crops of >= 80% hold both classes
            colours = {tuple(c) for c in target[:, :64][:, top].T} | {tuple(c) for c in target[:, 64:][:, bottom].T}
            assert len(colours) == 1  # one class, one colour, in both halves
            coloured += colours != {(0, 0, 0)}
        void = _where(image, GREEN)
        assert void.any() and (valid[void] == 0).all() and (target[:, void] == 0).all()
        assert (valid[_where(image, RED) | _where(image, BLUE)] == 1).all()
    assert coloured >= 30  # at least one class is painted in each example


def test_views_of_one_image_are_independent():
    transform = PairTransform(size=(64, 64), patch_size=8)
    image = np.random.default_rng(0).integers(0, 255, (96, 80, 3), dtype=np.uint8)
    sample = _sample("a", image, np.ones((96, 80), np.int32))
    ex = transform(Pair(sample, sample, [1], "sem", True, "semantic"), np.random.default_rng(0))
    assert not np.array_equal(ex["image_canvas"][:, :64], ex["image_canvas"][:, 64:])


def test_on_device_finish_is_the_worker_result():
    """`on_device` leaves jitter and painting to `finish_batch`: the same draws, so the same batch."""
    image = np.random.default_rng(0).integers(0, 256, (96, 80, 3), dtype=np.uint8)
    image[:20, :20] = 128  # a flat patch: rounding differences there are rare, the level must match
    scene_image, scene_label = _scene()
    label = np.ones((96, 80), np.int32)
    label[40:] = scene_label[40:]  # classes 1, 2 and void
    sample = _sample("a", image, label)
    pairs = [Pair(sample, sample, [1, 2], "sem", True, "semantic"), _pair()]
    here, later = (PairTransform(size=(64, 64), patch_size=8, on_device=d) for d in (False, True))
    a = [here(pairs[s % 2], np.random.default_rng(s)) for s in range(6)]
    b = [later(pairs[s % 2], np.random.default_rng(s)) for s in range(6)]
    assert b[0]["jitter"].shape == (2, 3, 7) and "jitter" not in a[0] and "target_canvas" not in b[0]
    assert b[0]["label_canvas"].shape == (1, 128, 64) and b[0]["label_canvas"].dtype == np.int16
    assert [x["coloured"] for x in a] == [y["coloured"] for y in b]
    assert b[0]["flip"].shape == (2,) and any(y["flip"].any() for y in b)  # mirrored on the device, too
    raw = collate(b)
    assert raw["palette"].shape[0] == 6 and raw["palette"].shape[2] == 4
    batch, ref = finish_batch(raw), collate(a)
    assert {"jitter", "flip", "label_canvas", "palette"}.isdisjoint(batch)
    assert batch["image_canvas"].dtype == torch.uint8
    for key in ("target_canvas", "valid", "bool_masked_pos", "seg_type"):
        torch.testing.assert_close(batch[key], ref[key], rtol=0, atol=0)
    assert (batch["valid"] == 0).any() and batch["target_canvas"].any()  # void and colours are both there
    diff = (batch["image_canvas"].int() - ref["image_canvas"].int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01  # float rounding of one product, rarely


def test_mixed_on_device_is_the_worker_result():
    """Mix-context stitches label maps; painted in the worker or after the transfer, the example is the same."""
    pairs = [_pair(), _pair()]
    here, later = (PairTransform(size=(64, 64), patch_size=8, on_device=d) for d in (False, True))
    a = [here.mixed(pairs, np.random.default_rng(s)) for s in range(4)]
    b = [later.mixed(pairs, np.random.default_rng(s)) for s in range(4)]
    np.testing.assert_array_equal(b[0]["jitter"], np.eye(3, 7)[None].repeat(2, 0))  # jittered in the worker...
    assert not any(y["flip"].any() for y in b)  # ...and flipped there
    batch, ref = finish_batch(collate(b)), collate(a)
    for key in ("image_canvas", "target_canvas", "valid", "bool_masked_pos"):
        torch.testing.assert_close(batch[key], ref[key], rtol=0, atol=0)
    assert all(x["coloured"] for x in a) and (batch["valid"] == 0).any()  # classes and void in view


def test_paint_batch_pads_palettes_and_keeps_void_black():
    labels = torch.tensor([[[[0, 1, 7], [SEM_VOID, 7, 1]]], [[[3, 3, SEM_VOID], [0, 1, 9]]]], dtype=torch.int32)
    palettes = [[(7, 10, 20, 30), (1, 255, 0, 0)], [(9, 1, 2, 3)]]
    examples = [{"image_canvas": np.zeros((3, 2, 3), np.uint8), "bool_masked_pos": np.zeros(1, bool), "seg_type": 0,
                 "label_canvas": lab.numpy().astype(np.uint16).view(np.int16),  # as PairTransform stores the ids
                 "palette": np.array(pal, np.int32).reshape(-1, 4)} for lab, pal in zip(labels, palettes, strict=True)]
    batch = finish_batch(collate(examples))
    target = batch["target_canvas"].permute(0, 2, 3, 1).tolist()
    assert target[0] == [[[0, 0, 0], [255, 0, 0], [10, 20, 30]], [[0, 0, 0], [10, 20, 30], [255, 0, 0]]]
    assert target[1] == [[[0, 0, 0], [0, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0], [1, 2, 3]]]  # 1 and 3 unmapped
    assert batch["valid"][:, 0].tolist() == [[[1, 1, 1], [0, 1, 1]], [[1, 1, 0], [1, 1, 1]]]


def test_masking_kinds():
    pair = _pair()
    query = PairTransform(size=(64, 64), patch_size=8, mask="query")(pair, np.random.default_rng(0))
    np.testing.assert_array_equal(query["bool_masked_pos"], query_half_mask((16, 8)))
    painter = PairTransform(size=(64, 64), patch_size=8, query_half_prob=0.0)
    masks = [painter(pair, np.random.default_rng(s))["bool_masked_pos"] for s in range(3)]
    assert all(m.sum() == 64 for m in masks)  # Painter: half of the canvas's patches
    assert not any(np.array_equal(m, query_half_mask((16, 8))) for m in masks)


def test_deterministic_by_seed():
    transform = PairTransform(size=(64, 64), patch_size=8)
    a, b, c = (transform(_pair(), np.random.default_rng(s)) for s in (7, 7, 8))
    for key in ("image_canvas", "target_canvas", "valid", "bool_masked_pos"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image_canvas"], c["image_canvas"])


def test_jpeg_decoded_at_reduced_size_stays_aligned():
    h, w = 600, 800
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 128)], -1).astype(np.uint8)  # smooth
    label = np.ones((h, w), np.int32)
    sample = _sample("big", image, label, ext="jpg")
    decoded, factor = _decode(sample, (h, w), [(0, 0, h, w)], (64, 64))
    assert factor == 8 and decoded.shape == (75, 100, 3)
    transform = PairTransform(size=(64, 64), jitter=0.0, flip=False, patch_size=8)
    ex = transform(Pair(sample, sample, [1], "sem", True, "semantic"), np.random.default_rng(0))
    rng = np.random.default_rng(0)  # the transform draws the two crop boxes first
    full = Image.fromarray(image)
    for half, box in zip((ex["image_canvas"][:, :64], ex["image_canvas"][:, 64:]),
                         (crop_box(h, w, rng, (0.3, 1.0)), crop_box(h, w, rng, (0.3, 1.0))), strict=True):
        top, left, bh, bw = box
        ref = np.asarray(full.resize((64, 64), Image.Resampling.BILINEAR, box=(left, top, left + bw, top + bh)))
        assert np.abs(half.transpose(1, 2, 0).astype(int) - ref).mean() < 3


def test_errors():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        PairTransform(size=(60, 64))
    image, label = _scene()
    sample = _sample("a", image, label[:-1])
    with pytest.raises(ValueError, match="sizes differ"):
        PairTransform(size=(64, 64), patch_size=8)(Pair(sample, sample, [1], "sem", True, "semantic"),
                                                   np.random.default_rng(0))
    with pytest.raises(ValueError, match="does not have"):
        PairTransform(size=(64, 64), patch_size=8)(Pair(sample, sample, [1], "ins", True, "instance"),
                                                   np.random.default_rng(0))


def test_recolor_permutes_and_inverts_channels_per_view():
    """Without jitter, a recoloured view is its pixels with the channels permuted and some inverted (one of 48
    transforms), drawn for each view on its own; on the accelerator the same."""
    image, label = _scene()
    sample = _sample("a", image, label)
    pair = Pair(sample, sample, [1, 2], "sem", True, "semantic")
    seen = set()
    for on_device in (False, True):
        transform = PairTransform(size=(64, 64), scale=(0.9, 1.0), jitter=0.0, flip=False, patch_size=8,
                                  recolor=1.0, on_device=on_device)
        for s in range(24):
            ex = transform(pair, np.random.default_rng(s))
            canvas = finish_batch(collate([ex]))["image_canvas"][0].numpy() if on_device else ex["image_canvas"]
            views = tuple(tuple(int(v) for v in half[:, 5, 2]) for half in (canvas[:, :64], canvas[:, 64:]))
            assert all(set(colour) <= {0, 255} for colour in views)  # red, its channels moved and some inverted
            seen.add(views)
    assert len({v for pair in seen for v in pair}) >= 6  # of the 8 corners of the colour cube red can become
    assert any(a != b for a, b in seen)  # the views are remapped independently
    plain = PairTransform(size=(64, 64), jitter=0.0, flip=False, patch_size=8)
    ex = plain(pair, np.random.default_rng(0))
    assert {tuple(int(v) for v in ex["image_canvas"][:, 5, 2])} <= {RED, BLUE}
    with pytest.raises(ValueError, match="recolor must lie in"):
        PairTransform(recolor=1.5)


def test_fixed_coloring_gives_each_id_one_colour_in_every_example():
    """coloring="fixed" (Painter): an id's colour is the same in every example, `palette.fixed_color` of its label
    kind; the ids coloured and every other draw stay those of random colouring, whose colours vary."""
    colours = {"random": {}, "fixed": {}}
    for kind, task in (("sem", "semantic"), ("ins", "instance")):
        pair = _pair(task)
        for coloring, seen in colours.items():
            transform = PairTransform(size=(64, 64), patch_size=8, coloring=coloring, on_device=True)
            for s in range(12):
                palette = transform(pair, np.random.default_rng(s))["palette"]
                for i, *rgb in palette.tolist():
                    seen.setdefault((kind, i), set()).add(tuple(rgb))
            on_cpu = PairTransform(size=(64, 64), patch_size=8, coloring=coloring)(pair, np.random.default_rng(0))
            painted = {tuple(c) for c in on_cpu["target_canvas"].reshape(3, -1).T.tolist()} - {(0, 0, 0)}
            assert painted and painted <= {c for (k, _), found in seen.items() if k == kind for c in found}
    for (kind, i), found in colours["fixed"].items():
        assert found == {fixed_color(i, kind)}
    assert colours["fixed"].keys() == colours["random"].keys()  # the same ids drawn
    assert fixed_color(1, "sem") != fixed_color(1, "ins")
    assert min(len(found) for found in colours["random"].values()) > 3
    with pytest.raises(ValueError, match="coloring must be"):
        PairTransform(coloring="painter")

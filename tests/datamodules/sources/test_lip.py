"""LIP converter on the real images of mmsegmentation's fixture (pseudo_lip_dataset: {train,val}_images,
{train,val}_segmentations) and on the official layout (TrainVal_images/{split}_images + {split}_id.txt,
TrainVal_parsing_annotations/{split}_segmentations; LIP website, sysu-hcp.net/lip)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.schema import SampleError, decode_sample, encode_sample
from datamodules.sources import get_source
from datamodules.sources.lip import LIP


@pytest.fixture(scope="module")
def fixture_root(shared_data: Path) -> Path:
    return shared_data / "mmseg_fixtures" / "tests" / "data" / "pseudo_lip_dataset"


@pytest.mark.parametrize(("split", "stem", "size", "parts"), [
    ("train", "684_2150041", [220, 154], {2: "hair", 5: "upper clothes", 13: "face", 14: "left arm", 15: "right arm"}),
    ("val", "86_185913", [377, 130], {1: "hat", 5: "upper clothes", 9: "pants", 13: "face", 15: "right arm"}),
])
def test_fixture_roundtrips_pixel_for_pixel(fixture_root: Path, split: str, stem: str, size: list[int],
                                            parts: dict[int, str]) -> None:
    source = LIP(fixture_root, split)
    assert get_source("lip") is LIP
    assert source.items() == [stem]
    assert len(source.items()) == len(list((fixture_root / f"{split}_images").glob("*.jpg")))
    sample = decode_sample(encode_sample(source.load(stem)))  # type: ignore[arg-type]
    native = np.asarray(Image.open(fixture_root / f"{split}_segmentations" / f"{stem}.png")).astype(np.int32)
    np.testing.assert_array_equal(sample.sem, native)  # values are kept as they are
    assert sample.meta["classes"] == {str(k): v for k, v in parts.items()}
    assert sample.meta["size"] == size and sample.meta["file"] == f"{split}_images/{stem}.jpg"
    assert sample.image == (fixture_root / f"{split}_images" / f"{stem}.jpg").read_bytes()
    assert sample.rgb().shape == (*size, 3)  # the val JPEG is greyscale; it decodes to RGB
    assert sample.key == f"lip__{stem}" and sample.ins is None


def test_official_layout_reads_the_split_list(fixture_root: Path, tmp_path: Path) -> None:
    images = tmp_path / "TrainVal_images" / "train_images"
    labels = tmp_path / "TrainVal_parsing_annotations" / "train_segmentations"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for stem in ("684_2150041", "9_1"):
        shutil.copy(fixture_root / "train_images" / "684_2150041.jpg", images / f"{stem}.jpg")
        shutil.copy(fixture_root / "train_segmentations" / "684_2150041.png", labels / f"{stem}.png")
    (tmp_path / "TrainVal_images" / "train_id.txt").write_text("9_1\n")  # the list, not the folder, decides
    source = LIP(tmp_path, "train")
    assert source.items() == ["9_1"]
    sample = source.load("9_1")
    assert sample.meta["file"] == "TrainVal_images/train_images/9_1.jpg"
    assert sorted(sample.meta["classes"]) == ["13", "14", "15", "2", "5"]


def test_bad_inputs_name_the_file(fixture_root: Path, tmp_path: Path) -> None:
    shutil.copytree(fixture_root, tmp_path / "lip")
    label = tmp_path / "lip" / "val_segmentations" / "86_185913.png"
    raw = np.asarray(Image.open(label)).copy()
    raw[0, 0] = 20
    Image.fromarray(raw).save(label)
    with pytest.raises(SampleError, match=r"val_segmentations/86_185913\.png: expected a one-channel map with "
                                          r"values 0\.\.19, got shape \(377, 130\) and values \[20\]"):
        LIP(tmp_path / "lip", "val").load("86_185913")
    raw[0, 0] = 0
    Image.fromarray(raw[:-1]).save(label)
    with pytest.raises(SampleError, match=r"86_185913\.png: semantic mask is 130x376 but the image "
                                          r"val_images/86_185913\.jpg is 130x377"):
        LIP(tmp_path / "lip", "val").load("86_185913")

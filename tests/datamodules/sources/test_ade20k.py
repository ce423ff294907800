"""ADE20K converter on a fabricated ADEChallengeData2016 tree: images/{training,validation}/*.jpg and
annotations/{training,validation}/*.png, L labels 0 = other, 1..150 = classes (CSAILVision/sceneparsing README
and objectInfo150.csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.schema import SEM_VOID, SampleError, decode_sample, encode_sample
from datamodules.sources import get_source
from datamodules.sources.ade20k import ADE20K

RAW = np.array([[0, 1, 1, 150], [13, 0, 21, 150], [3, 3, 3, 3]], dtype=np.uint8)


def ade_tree(root: Path, folder: str, stems: list[str]) -> None:
    for stem in stems:
        for kind in ("images", "annotations"):
            (root / kind / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((3, 4, 3), 200, dtype=np.uint8)).save(root / "images" / folder / f"{stem}.jpg")
        Image.fromarray(RAW).save(root / "annotations" / folder / f"{stem}.png")


def test_other_is_ignored_and_classes_keep_their_ids(tmp_path: Path) -> None:
    ade_tree(tmp_path, "validation", ["ADE_val_00000002", "ADE_val_00000001"])
    ade_tree(tmp_path, "training", ["ADE_train_00000001"])
    source = ADE20K(tmp_path, "val")
    assert get_source("ade20k") is ADE20K
    assert source.items() == ["ADE_val_00000001", "ADE_val_00000002"]
    assert ADE20K(tmp_path, "train").items() == ["ADE_train_00000001"]
    assert len(source.classes) == 150
    sample = decode_sample(encode_sample(source.load("ADE_val_00000001")))  # type: ignore[arg-type]
    np.testing.assert_array_equal(sample.sem, np.where(RAW == 0, SEM_VOID, RAW.astype(np.int32)))
    assert sample.meta["classes"] == {"1": "wall", "3": "sky", "13": "person", "21": "car", "150": "flag"}
    assert sample.meta["size"] == [3, 4] and sample.meta["file"] == "images/validation/ADE_val_00000001.jpg"
    assert sample.key == "ade20k__ADE_val_00000001" and sample.ins is None


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    ade_tree(tmp_path, "validation", ["ADE_val_00000001"])
    label = tmp_path / "annotations" / "validation" / "ADE_val_00000001.png"
    Image.fromarray(np.array([[0, 151, 200]], dtype=np.uint8)).save(label)
    source = ADE20K(tmp_path, "val")
    with pytest.raises(SampleError, match=r"ADE_val_00000001\.png: expected a one-channel map with values 0\.\.150, "
                                          r"got shape \(1, 3\) and values \[151, 200\]"):
        source.load("ADE_val_00000001")
    label.unlink()
    with pytest.raises(SampleError, match=r"annotations/validation/ADE_val_00000001\.png: annotation file is missing"):
        source.load("ADE_val_00000001")
    with pytest.raises(SampleError, match=r"images/training: no such directory"):
        ADE20K(tmp_path, "train").items()

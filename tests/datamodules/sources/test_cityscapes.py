"""Cityscapes converter on a fabricated tree: leftImg8bit/{split}/<city>/*_leftImg8bit.png and
gtFine/{split}/<city>/*_gtFine_{labelIds,instanceIds}.png, labelIds and trainIds from cityscapesScripts'
helpers/labels.py, instanceIds = labelId * 1000 + k for objects and the bare labelId elsewhere (the
cityscapesScripts README, "Dataset Structure")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.schema import SEM_VOID, SampleError, decode_sample, encode_sample
from datamodules.sources import get_source
from datamodules.sources.cityscapes import Cityscapes

LABEL_IDS = np.array([
    [7, 7, 23, 23, 23, 23],  # road, sky
    [26, 26, 26, 26, 0, 0],  # two cars, unlabeled
    [24, 24, 26, 26, 29, 29],  # person, a car group, a caravan (instances, but not evaluated)
    [1, 4, 33, 33, 8, 8],  # ego vehicle, static, bicycle, sidewalk
], dtype=np.uint8)
INSTANCE_IDS = np.array([
    [7, 7, 23, 23, 23, 23],
    [26001, 26001, 26002, 26002, 0, 0],
    [24000, 24000, 26, 26, 29000, 29000],
    [1, 4, 33001, 33001, 8, 8],
], dtype=np.uint16)


def city_tree(root: Path, split: str, city: str, frame: str) -> Path:
    stem = f"{city}_000000_{frame}"
    image = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
    gt = root / "gtFine" / split / city
    image.parent.mkdir(parents=True, exist_ok=True)
    gt.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (4, 6, 3), dtype=np.uint8)).save(image)
    Image.fromarray(LABEL_IDS).save(gt / f"{stem}_gtFine_labelIds.png")
    Image.fromarray(INSTANCE_IDS).save(gt / f"{stem}_gtFine_instanceIds.png")
    return gt


def test_train_ids_plus_one_and_instances(tmp_path: Path) -> None:
    city_tree(tmp_path, "val", "lindau", "000019")
    city_tree(tmp_path, "val", "frankfurt", "000294")
    source = Cityscapes(tmp_path, "val")
    assert get_source("cityscapes") is Cityscapes
    assert len(source.classes) == 19 and source.classes[1] == "road" and source.classes[19] == "bicycle"
    assert source.items() == ["leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png",
                              "leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png"]
    sample = decode_sample(encode_sample(source.load(source.items()[1])))  # type: ignore[arg-type]
    assert sample.key == "cityscapes__lindau_000000_000019" and sample.image_ext == "png"
    i = SEM_VOID
    np.testing.assert_array_equal(sample.sem, [[1, 1, 11, 11, 11, 11], [14, 14, 14, 14, i, i],
                                               [12, 12, 14, 14, i, i], [i, i, 19, 19, 2, 2]])
    # raw ids in ascending order: 26 (car group, crowd), 24000, 26001, 26002, 33001; the caravan is left out
    np.testing.assert_array_equal(sample.ins, [[0, 0, 0, 0, 0, 0], [3, 3, 4, 4, 0, 0],
                                               [2, 2, 1, 1, 0, 0], [0, 0, 5, 5, 0, 0]])
    assert sample.meta["instances"] == {"1": {"category": 14, "iscrowd": True}, "2": {"category": 12, "iscrowd": False},
                                        "3": {"category": 14, "iscrowd": False},
                                        "4": {"category": 14, "iscrowd": False},
                                        "5": {"category": 19, "iscrowd": False}}
    assert sample.meta["classes"] == {"1": "road", "2": "sidewalk", "11": "sky", "12": "person", "14": "car",
                                      "19": "bicycle"}


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    gt = city_tree(tmp_path, "train", "aachen", "000019")
    source = Cityscapes(tmp_path, "train")
    item = source.items()[0]
    bad = LABEL_IDS.copy()
    bad[0, 0] = 40
    Image.fromarray(bad).save(gt / "aachen_000000_000019_gtFine_labelIds.png")
    with pytest.raises(SampleError, match=r"aachen_000000_000019_gtFine_labelIds\.png: expected a one-channel map "
                                          r"with labelIds 0\.\.33, got shape \(4, 6\) and values \[40\]"):
        source.load(item)
    Image.fromarray(LABEL_IDS).save(gt / "aachen_000000_000019_gtFine_labelIds.png")
    (gt / "aachen_000000_000019_gtFine_instanceIds.png").unlink()
    with pytest.raises(SampleError, match=r"gtFine/train/aachen/aachen_000000_000019_gtFine_instanceIds\.png: "
                                          "annotation file is missing"):
        source.load(item)
    Image.fromarray(INSTANCE_IDS[:, :5]).save(gt / "aachen_000000_000019_gtFine_instanceIds.png")
    with pytest.raises(SampleError, match=r"instanceIds\.png: instanceIds has shape \(4, 5\), labelIds \(4, 6\)"):
        source.load(item)
    with pytest.raises(SampleError, match=r"leftImg8bit/val: no such directory"):
        Cityscapes(tmp_path, "val").items()

"""iSAID converter on fabricated trees in the official layout ({split}/Annotations/iSAID_{split}.json beside the
DOTA images in {split}/images, CAPTAIN-WHU/iSAID_Devkit README) and the devkit's patch layout
({split}/instancesonly_filtered_{split}.json, iSAID_Devkit preprocess/preprocess.py): COCO-format polygons."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.schema import SampleError, decode_sample, encode_sample
from datamodules.sources import get_source
from datamodules.sources.isaid import ISAID

H, W = 10, 12


def isaid_tree(json_file: Path, image_dir: Path, categories: list[dict]) -> bytes:
    image_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(image_dir / "P0003.png")
    data = {
        "images": [{"id": 0, "file_name": "P0003.png", "height": H, "width": W}],
        "categories": categories,
        "annotations": [  # polygons as the devkit writes them; pycocotools fills x in [x0, x1), y in [y0, y1)
            {"id": 0, "image_id": 0, "category_id": categories[0]["id"], "iscrowd": 0,
             "segmentation": [[0, 0, 8, 0, 8, 6, 0, 6]]},
            {"id": 1, "image_id": 0, "category_id": categories[1]["id"], "iscrowd": 0,
             "segmentation": [[6, 4, 11, 4, 11, 9, 6, 9]]},
        ],
    }
    json_file.parent.mkdir(parents=True, exist_ok=True)
    json_file.write_text(json.dumps(data))
    return (image_dir / "P0003.png").read_bytes()


def expected_maps(first: int, second: int) -> tuple[np.ndarray, np.ndarray]:
    ins = np.zeros((H, W), dtype=np.int32)
    ins[0:6, 0:8] = 1  # 48 px, painted first
    ins[4:9, 6:11] = 2  # 25 px, on top
    return np.array([0, first, second])[ins], ins


def test_official_layout_maps_categories_by_name(tmp_path: Path) -> None:
    # the devkit numbers categories in the order it meets them, so json ids say nothing; names decide
    categories = [{"id": 1, "name": "Large_Vehicle"}, {"id": 2, "name": "plane"}, {"id": 3, "name": "Small Vehicle"}]
    png = isaid_tree(tmp_path / "val" / "Annotations" / "iSAID_val.json", tmp_path / "val" / "images", categories)
    source = ISAID(tmp_path, "val")
    assert get_source("isaid") is ISAID
    assert len(source.classes) == 15 and source.classes[1] == "ship" and source.classes[15] == "harbor"
    assert source.items() == [0]
    sample = decode_sample(encode_sample(source.load(0)))  # type: ignore[arg-type]
    sem, ins = expected_maps(8, 14)  # large_vehicle, plane
    np.testing.assert_array_equal(sample.sem, sem)
    np.testing.assert_array_equal(sample.ins, ins)
    assert sample.meta["classes"] == {"8": "large_vehicle", "14": "plane"}
    assert sample.meta["instances"] == {"1": {"category": 8, "iscrowd": False}, "2": {"category": 14, "iscrowd": False}}
    assert sample.image == png and sample.image_ext == "png"  # an RGB PNG keeps its bytes
    assert sample.meta["file"] == "val/images/P0003.png" and sample.key == "isaid__0"


def test_patch_layout(tmp_path: Path) -> None:
    categories = [{"id": 1, "name": "Harbor"}, {"id": 2, "name": "storage_tank"}]
    isaid_tree(tmp_path / "train" / "instancesonly_filtered_train.json", tmp_path / "train" / "images", categories)
    sample = ISAID(tmp_path, "train").load(0)
    sem, _ = expected_maps(15, 2)
    np.testing.assert_array_equal(sample.sem, sem)


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SampleError, match=r"val/Annotations/iSAID_val\.json: annotation file is missing"):
        ISAID(tmp_path, "val")
    categories = [{"id": 1, "name": "ship"}, {"id": 2, "name": "windmill"}]
    isaid_tree(tmp_path / "val" / "Annotations" / "iSAID_val.json", tmp_path / "val" / "images", categories)
    with pytest.raises(SampleError, match=r"iSAID_val\.json: categories \['windmill'\] are not iSAID's 15"):
        ISAID(tmp_path, "val")
    isaid_tree(tmp_path / "val" / "Annotations" / "iSAID_val.json", tmp_path / "val" / "images",
               [{"id": 1, "name": "ship"}, {"id": 2, "name": "bridge"}])
    (tmp_path / "val" / "images" / "P0003.png").unlink()
    with pytest.raises(SampleError, match=r"val/images/P0003\.png: image file is missing"):
        ISAID(tmp_path, "val").load(0)

"""PACO converter on a fabricated PACO-LVIS tree: COCO-format json with object and object-part categories and
`obj_ann_id` links, RLE masks, `file_name` relative to the COCO image root (facebookresearch/paco
docs/PACO_DATASET.md, "Dataset Format"; README, "Dataset setup")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from datamodules.schema import SampleError, decode_sample, encode_sample
from datamodules.sources import get_source
from datamodules.sources.paco import PACO

H, W = 6, 8
CATEGORIES = [  # ids as in the release: objects and object-parts share one id space
    {"id": 1, "name": "mug", "supercategory": "OBJECT"},
    {"id": 41, "name": "cup", "supercategory": "OBJECT"},
    {"id": 300, "name": "mug:handle", "supercategory": "OBJECT"},
    {"id": 301, "name": "mug:body", "supercategory": "OBJECT"},
    {"id": 500, "name": "cup:rim", "supercategory": "OBJECT"},
]


def rle(rows: slice, cols: slice) -> dict:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[rows, cols] = 1
    encoded = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [H, W], "counts": encoded["counts"].decode()}


def annotation(ann_id: int, category: int, obj: int, segmentation: dict | list) -> dict:
    return {"id": ann_id, "image_id": 9, "category_id": category, "obj_ann_id": obj, "segmentation": segmentation,
            "attribute_ids": [], "bbox": [0, 0, 1, 1], "area": 1.0}


def paco_tree(root: Path) -> None:
    image = root / "val2017" / "000000000009.jpg"
    image.parent.mkdir(parents=True)
    Image.fromarray(np.full((H, W, 3), 90, dtype=np.uint8)).save(image)
    annotations = [
        annotation(10, 1, 10, rle(slice(0, 6), slice(0, 5))),  # mug, 30 px
        annotation(20, 41, 20, rle(slice(2, 5), slice(3, 8))),  # cup, 15 px, on top of the mug at columns 3-4
        annotation(11, 300, 10, rle(slice(0, 6), slice(3, 5))),  # mug handle: its part under the cup stays cup
        annotation(12, 301, 10, rle(slice(0, 2), slice(0, 3))),  # mug body
        annotation(30, 41, 30, []),  # a cup with a box but no mask (PACO's object segments < boxes)
        annotation(31, 500, 30, rle(slice(5, 6), slice(6, 8))),  # its rim, on free pixels
    ]
    data = {"images": [{"id": 9, "file_name": "val2017/000000000009.jpg", "height": H, "width": W}],
            "categories": CATEGORIES, "annotations": annotations, "part_categories": [], "attributes": []}
    (root / "annotations").mkdir()
    (root / "annotations" / "paco_lvis_v1_val.json").write_text(json.dumps(data))


def test_parts_are_semantic_classes_objects_are_instances(tmp_path: Path) -> None:
    paco_tree(tmp_path)
    source = PACO(tmp_path, "val")
    assert get_source("paco") is PACO
    assert source.classes == {1: "mug", 2: "cup", 3: "mug:handle", 4: "mug:body", 5: "cup:rim"}
    assert source.items() == [9]
    sample = decode_sample(encode_sample(source.load(9)))  # type: ignore[arg-type]
    assert sample.key == "paco__9" and sample.meta["file"] == "val2017/000000000009.jpg"
    expected_ins = np.zeros((H, W), dtype=np.int32)
    expected_ins[0:6, 0:5] = 1  # mug
    expected_ins[2:5, 3:8] = 2  # cup
    np.testing.assert_array_equal(sample.ins, expected_ins)
    expected_sem = np.array([0, 1, 2])[expected_ins]
    handle = np.zeros((H, W), dtype=bool)
    handle[0:6, 3:5] = True
    expected_sem[handle & (expected_ins == 1)] = 3
    expected_sem[0:2, 0:3] = 4
    expected_sem[5, 6:8] = 5
    np.testing.assert_array_equal(sample.sem, expected_sem)
    assert sample.meta["instances"] == {"1": {"category": 1, "iscrowd": False}, "2": {"category": 2, "iscrowd": False}}
    assert sample.meta["classes"] == {"1": "mug", "2": "cup", "3": "mug:handle", "4": "mug:body", "5": "cup:rim"}
    assert sample.meta["task"] == "semantic"


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SampleError, match=r"paco_lvis_v1_train\.json: annotation file is missing"):
        PACO(tmp_path, "train")
    paco_tree(tmp_path)
    json_file = tmp_path / "annotations" / "paco_lvis_v1_val.json"
    data = json.loads(json_file.read_text())
    data["annotations"][2]["segmentation"] = {"size": [H, W + 1], "counts": "PQ1"}
    json_file.write_text(json.dumps(data))
    with pytest.raises(SampleError, match=r"paco_lvis_v1_val\.json: annotation 11 of image 9: RLE size \[6, 9\]"):
        PACO(tmp_path, "val").load(9)
    json_file.write_text(json.dumps(data)[:-10])
    with pytest.raises(SampleError, match=r"paco_lvis_v1_val\.json: not valid JSON"):
        PACO(tmp_path, "val")

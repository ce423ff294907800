"""COCO converters: coco-instance on the real labelme2coco export in ../shared/data, and on fabricated trees in the
official layouts (instance json, panoptic json + PNGs, stuffthingmaps) as cocodataset.org/#format-data, the
panopticapi README and the cocostuff README describe them."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from datamodules.schema import SEM_VOID, SampleError
from datamodules.sources import get_source
from datamodules.sources.coco import CocoInstance, CocoPanoptic, CocoStuff, decode_segmentation
from tests.datamodules.sources.native_files import roundtrip


def jpeg(path: Path, height: int, width: int, seed: int = 0) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")
    return path.read_bytes()


# --- coco-instance on the real labelme2coco export -------------------------------------------------------------

@pytest.fixture(scope="module")
def labelme_root(shared_data: Path) -> Path:
    return shared_data / "labelme_coco" / "examples" / "instance_segmentation" / "data_dataset_coco"


def test_labelme_export_matches_pycocotools_masks(labelme_root: Path) -> None:
    source = CocoInstance(labelme_root, "train")
    coco = COCO(str(labelme_root / "annotations.json"))
    assert source.items() == sorted(coco.getImgIds()) == [0, 1, 2]
    assert len(source.items()) == len(list((labelme_root / "JPEGImages").glob("*.jpg")))
    # `_background_` (id 0) is not a class; the 20 VOC categories keep ids 1..20 (already contiguous)
    assert len(source.classes) == 20 and source.classes[1] == "aeroplane" and source.classes[15] == "person"
    instances_seen = 0
    for image_id in source.items():
        info = coco.loadImgs(image_id)[0]
        sample = roundtrip(source.load(image_id))
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        masks = [coco.annToMask(a).astype(bool) for a in anns]
        areas = [int(m.sum()) for m in masks]
        assert sample.key == f"coco-instance__{image_id}"
        assert sample.image == (labelme_root / info["file_name"]).read_bytes() and sample.image_ext == "jpg"
        assert sample.meta["size"] == [info["height"], info["width"]] and sample.meta["file"] == info["file_name"]
        assert sample.meta["task"] == "instance"
        # each object shows exactly its own mask minus the masks of smaller objects, which lie on top of it
        ids = []
        for i, ann in enumerate(anns):
            smaller = np.zeros_like(masks[i])
            for j in range(len(anns)):
                if areas[j] < areas[i]:
                    smaller |= masks[j]
            visible = masks[i] & ~smaller
            assert visible.any()
            k = int(np.bincount(sample.ins[visible]).argmax())
            np.testing.assert_array_equal(sample.ins == k, visible)
            assert (sample.sem[visible] == ann["category_id"]).all()
            assert sample.meta["instances"][str(k)] == {"category": ann["category_id"], "iscrowd": False}
            ids.append((k, areas[i]))
        # ids 1..N in painting order: largest first
        assert sorted(k for k, _ in ids) == list(range(1, len(anns) + 1))
        assert [a for _, a in sorted(ids)] == sorted(areas, reverse=True)
        covered = np.any(masks, axis=0)
        np.testing.assert_array_equal(sample.ins > 0, covered)
        assert (sample.sem[~covered] == 0).all()
        assert sample.meta["classes"] == {str(a["category_id"]): source.classes[a["category_id"]] for a in anns}
        instances_seen += len(sample.meta["instances"])
    assert instances_seen == len(coco.getAnnIds()) == 12
    assert get_source("coco-instance") is CocoInstance


# --- coco-instance on a fabricated official tree: RLE, crowd, hidden objects, category gaps ---------------------

def official_tree(root: Path, split: str = "val") -> dict:
    """annotations/instances_{split}2017.json + {split}2017/*.jpg with one 8x10 image (cocodataset.org/#format-data)."""
    h, w = 8, 10
    jpeg(root / f"{split}2017" / "000000000001.jpg", h, w)
    big = np.zeros((h, w), dtype=np.uint8)
    big[1:7, 1:9] = 1
    compressed = mask_utils.encode(np.asfortranarray(big))
    compressed["counts"] = compressed["counts"].decode()
    # the crowd region covers the whole image, yet lies beneath everything else. Uncompressed RLE: column-major
    # run lengths starting with a run of zeros, here 0 zeros then h * w ones
    crowd = {"size": [h, w], "counts": [0, h * w]}
    data = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "height": h, "width": w}],
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": crowd},
            {"id": 5, "image_id": 1, "category_id": 3, "iscrowd": 0, "segmentation": compressed},
            # a 2x2 polygon-square inside the car: pycocotools rasterises x in [4, 6), y in [3, 5)
            {"id": 6, "image_id": 1, "category_id": 90, "iscrowd": 0, "segmentation": [[4, 3, 6, 3, 6, 5, 4, 5]]},
            # a one-pixel car on the big car: smaller, so painted later and visible
            {"id": 8, "image_id": 1, "category_id": 3, "iscrowd": 0, "segmentation": [[1, 1, 2, 1, 2, 2, 1, 2]]},
        ],
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))
    return data


def test_official_layout_rle_crowd_and_painting_order(tmp_path: Path) -> None:
    official_tree(tmp_path)
    source = pickle.loads(pickle.dumps(CocoInstance(tmp_path, "val")))  # sources travel to worker processes
    # category ids 1, 3, 90 -> 1, 2, 3
    assert source.classes == {1: "person", 2: "car", 3: "toothbrush"}
    assert source.items() == [1]
    sample = roundtrip(source.load(1))
    assert sample.meta["file"] == "val2017/000000000001.jpg"
    # painting order: crowd (1), car (2, 48 px), toothbrush square (3, 4 px), car square (4, 1 px at y 1, x 1)
    expected_ins = np.ones((8, 10), dtype=np.int32)
    expected_ins[1:7, 1:9] = 2
    expected_ins[3:5, 4:6] = 3
    expected_ins[1, 1] = 4
    np.testing.assert_array_equal(sample.ins, expected_ins)
    np.testing.assert_array_equal(sample.sem, np.array([0, 1, 2, 3, 2])[expected_ins])
    assert sample.meta["instances"] == {"1": {"category": 1, "iscrowd": True}, "2": {"category": 2, "iscrowd": False},
                                        "3": {"category": 3, "iscrowd": False}, "4": {"category": 2, "iscrowd": False}}


def test_fully_covered_objects_leave_no_gap_in_ids(tmp_path: Path) -> None:
    data = official_tree(tmp_path)
    # the same toothbrush square twice: the second (equal area, later id) covers the first completely
    data["annotations"].append(dict(data["annotations"][2], id=9))
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    sample = CocoInstance(tmp_path, "val").load(1)
    assert sorted(np.unique(sample.ins).tolist()) == [1, 2, 3, 4]
    assert len(sample.meta["instances"]) == 4


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    data = official_tree(tmp_path)
    json_file = tmp_path / "annotations" / "instances_val2017.json"
    json_file.write_text("{not json")
    with pytest.raises(SampleError, match=r"instances_val2017\.json: not valid JSON"):
        CocoInstance(tmp_path, "val")
    json_file.write_text(json.dumps({"images": []}))
    with pytest.raises(SampleError, match=r"instances_val2017\.json: not a COCO-format instance json"):
        CocoInstance(tmp_path, "val")
    bad = dict(data, annotations=[dict(data["annotations"][1], category_id=2)])
    json_file.write_text(json.dumps(bad))
    with pytest.raises(SampleError, match=r"instances_val2017\.json: annotation 5 of image 1 has category_id 2"):
        CocoInstance(tmp_path, "val").load(1)
    bad = dict(data, images=[dict(data["images"][0], height=9)])
    bad["annotations"] = [a for a in data["annotations"] if isinstance(a["segmentation"], list)]
    json_file.write_text(json.dumps(bad))
    with pytest.raises(SampleError, match=r"instances_val2017\.json: semantic mask is 10x9 but the image "
                                          r"val2017/000000000001\.jpg is 10x8"):
        CocoInstance(tmp_path, "val").load(1)
    bad = dict(data, annotations=[data["annotations"][1]], images=[dict(data["images"][0], width=11)])
    json_file.write_text(json.dumps(bad))
    with pytest.raises(SampleError, match=r"instances_val2017\.json: annotation 5 of image 1: RLE size \[8, 10\]"):
        CocoInstance(tmp_path, "val").load(1)
    json_file.write_text(json.dumps(data))
    (tmp_path / "val2017" / "000000000001.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(SampleError, match=r"000000000001\.jpg: unreadable image"):
        CocoInstance(tmp_path, "val").load(1)
    with pytest.raises(SampleError, match=r"instances_train2017\.json: annotation file is missing"):
        CocoInstance(tmp_path, "train")


# --- coco-panoptic ---------------------------------------------------------------------------------------------

def panoptic_tree(root: Path, segment_ids: np.ndarray, segments_info: list[dict]) -> None:
    """annotations/panoptic_val2017.json + annotations/panoptic_val2017/*.png + val2017/*.jpg (panopticapi README:
    PNG segment id = R + 256 G + 256^2 B, 0 void; `isthing` on categories)."""
    h, w = segment_ids.shape
    jpeg(root / "val2017" / "000000000139.jpg", h, w)
    png_dir = root / "annotations" / "panoptic_val2017"
    png_dir.mkdir(parents=True)
    rgb = np.stack([segment_ids % 256, segment_ids // 256 % 256, segment_ids // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(png_dir / "000000000139.png")
    data = {
        "images": [{"id": 139, "file_name": "000000000139.jpg", "height": h, "width": w}],
        "annotations": [{"image_id": 139, "file_name": "000000000139.png", "segments_info": segments_info}],
        "categories": [{"id": 1, "name": "person", "isthing": 1}, {"id": 3, "name": "car", "isthing": 1},
                       {"id": 184, "name": "tree-merged", "isthing": 0},
                       {"id": 187, "name": "sky-other-merged", "isthing": 0}],
    }
    (root / "annotations" / "panoptic_val2017.json").write_text(json.dumps(data))


def test_panoptic_semantic_instances_and_void(tmp_path: Path) -> None:
    seg = np.zeros((6, 7), dtype=np.int64)
    seg[0:2] = 70000  # sky: id 70000 = (112, 17, 1) exercises all three channels
    seg[2:4, 0:3] = 300  # person
    seg[2:4, 3:7] = 5  # tree
    seg[4, 0:4] = 2  # car crowd
    seg[4, 4:7] = 301  # person
    # row 5 stays void
    segments = [{"id": 70000, "category_id": 187, "iscrowd": 0}, {"id": 301, "category_id": 1, "iscrowd": 0},
                {"id": 5, "category_id": 184, "iscrowd": 0}, {"id": 2, "category_id": 3, "iscrowd": 1},
                {"id": 300, "category_id": 1, "iscrowd": 0}]
    panoptic_tree(tmp_path, seg, segments)
    source = CocoPanoptic(tmp_path, "val")
    assert source.classes == {1: "person", 2: "car", 3: "tree-merged", 4: "sky-other-merged"}
    assert source.items() == [139]
    sample = roundtrip(source.load(139))
    contiguous = {0: SEM_VOID, 70000: 4, 300: 1, 5: 3, 2: 2, 301: 1}
    np.testing.assert_array_equal(sample.sem, np.vectorize(contiguous.get)(seg))
    # things numbered in segments_info order: 301 -> 1, 2 (crowd car) -> 2, 300 -> 3; stuff and void -> 0
    np.testing.assert_array_equal(sample.ins, np.vectorize({0: 0, 70000: 0, 5: 0, 301: 1, 2: 2, 300: 3}.get)(seg))
    assert sample.meta["instances"] == {"1": {"category": 1, "iscrowd": False}, "2": {"category": 2, "iscrowd": True},
                                        "3": {"category": 1, "iscrowd": False}}
    assert sample.meta["task"] == "panoptic" and sample.meta["size"] == [6, 7]
    assert sample.meta["classes"] == {"1": "person", "2": "car", "3": "tree-merged", "4": "sky-other-merged"}


def test_panoptic_unknown_segment_names_the_png(tmp_path: Path) -> None:
    seg = np.full((3, 4), 7, dtype=np.int64)
    seg[0, 0] = 9
    panoptic_tree(tmp_path, seg, [{"id": 7, "category_id": 187, "iscrowd": 0}])
    with pytest.raises(SampleError, match=r"panoptic_val2017/000000000139\.png: segment ids \[9\] are not in the "
                                          r"segments_info of image 139"):
        CocoPanoptic(tmp_path, "val").load(139)
    Image.fromarray(np.zeros((3, 4), dtype=np.uint8)).save(tmp_path / "annotations" / "panoptic_val2017" /
                                                           "000000000139.png")
    with pytest.raises(SampleError, match=r"000000000139\.png: panoptic PNGs are RGB"):
        CocoPanoptic(tmp_path, "val").load(139)


# --- coco-stuff ------------------------------------------------------------------------------------------------

def test_stuffthingmaps_shift_by_one_and_unlabeled_is_ignored(tmp_path: Path) -> None:
    raw = np.array([[0, 181, 255, 91], [90, 255, 0, 5]], dtype=np.uint8)  # person, wood, unlabeled, banner, ...
    for stem in ("000000000285", "000000000139"):
        jpeg(tmp_path / "images" / "val2017" / f"{stem}.jpg", 2, 4)
        (tmp_path / "annotations" / "val2017").mkdir(parents=True, exist_ok=True)
        Image.fromarray(raw).save(tmp_path / "annotations" / "val2017" / f"{stem}.png")
    source = CocoStuff(tmp_path, "val")
    assert len(source.classes) == 182 and source.classes[92] == "banner" and source.classes[182] == "wood"
    assert source.items() == ["000000000139", "000000000285"]
    sample = roundtrip(source.load("000000000139"))
    np.testing.assert_array_equal(sample.sem, [[1, 182, SEM_VOID, 92], [91, SEM_VOID, 1, 6]])
    assert sample.meta["classes"] == {"1": "person", "6": "bus", "91": "hair brush", "92": "banner", "182": "wood"}
    assert sample.key == "coco-stuff__000000000139" and sample.meta["file"] == "images/val2017/000000000139.jpg"
    assert sample.ins is None


def test_stuff_bad_values_and_missing_image_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "annotations" / "val2017").mkdir(parents=True)
    Image.fromarray(np.array([[0, 200]], dtype=np.uint8)).save(tmp_path / "annotations" / "val2017" / "x.png")
    source = CocoStuff(tmp_path, "val")
    with pytest.raises(SampleError, match=r"images/val2017/x\.jpg: image file is missing"):
        source.load("x")
    jpeg(tmp_path / "images" / "val2017" / "x.jpg", 1, 2)
    with pytest.raises(SampleError, match=r"annotations/val2017/x\.png: expected a one-channel map with values "
                                          r"0\.\.181 and 255, got shape \(1, 2\) and values \[200\]"):
        source.load("x")


def test_segmentation_forms_and_bad_segmentations() -> None:
    mask = np.zeros((5, 6), dtype=np.uint8)
    mask[1:4, 2:5] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    compressed = json.loads(json.dumps({"size": rle["size"], "counts": rle["counts"].decode()}))  # as in json files
    np.testing.assert_array_equal(decode_segmentation({"segmentation": compressed}, 5, 6, Path("a.json")), mask)
    assert not decode_segmentation({"segmentation": []}, 5, 6, Path("a.json")).any()
    with pytest.raises(SampleError, match=r"a\.json: annotation 3 of image 4: segmentation is neither polygons"):
        decode_segmentation({"id": 3, "image_id": 4, "segmentation": "oops"}, 5, 6, Path("a.json"))
    with pytest.raises(SampleError, match=r"a\.json: annotation 3 of image 4: undecodable segmentation"):
        decode_segmentation({"id": 3, "image_id": 4, "segmentation": {"size": [5, 6], "counts": "garbage!!"}}, 5, 6,
                            Path("a.json"))
    with pytest.raises(SampleError, match=r"a\.json: annotation 3 of image 4: undecodable segmentation"):
        decode_segmentation({"id": 3, "image_id": 4, "segmentation": [[1, 2, "x", 4, 5, 6]]}, 5, 6, Path("a.json"))
    with pytest.raises(SampleError, match=r"annotation 3 of image 4: segmentation is neither polygons nor RLE"):
        decode_segmentation({"id": 3, "image_id": 4, "segmentation": [1, 2, 3, 4, 5, 6]}, 5, 6, Path("a.json"))

"""Panoptic evaluation and prompt-file semantic evaluation end to end on real shards: the data module's
segments, the recipes through the CLI with the oracle, the empty prediction and a tiny model with a prompt file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.convert import convert
from datamodules.panoptic import PanopticDataModule
from datamodules.schema import IGNORE
from datamodules.shards import ShardReader, read_index
from tests.seggpt_lab.modules.recipe_runs import prompt_file, run


@pytest.fixture(scope="module")
def synthetic_index(tmp_path_factory) -> Path:
    from datamodules.sources.synthetic import Synthetic

    out = tmp_path_factory.mktemp("shards")
    convert(Synthetic(None, "val", samples=6), out, progress=False)
    return out / "synthetic" / "val-index.json"


@pytest.fixture(scope="module")
def labelme_index(shared_data, tmp_path_factory) -> Path:
    from datamodules.sources.coco import CocoInstance

    out = tmp_path_factory.mktemp("shards")
    root = shared_data / "labelme_coco" / "examples" / "instance_segmentation" / "data_dataset_coco"
    convert(CocoInstance(root, "val"), out, progress=False)
    return out / "coco-instance" / "val-index.json"


def test_ground_truth_segments_are_the_instances_of_the_synthetic_scenes(synthetic_index):
    data = PanopticDataModule(str(synthetic_index), max_images=4)
    data.setup()
    assert data.things == sorted(int(c) for c in read_index(synthetic_index)["class_images"]) and data.stuff == []
    assert len(data.dataset) == 4
    reader = ShardReader(synthetic_index)
    for i, item in enumerate(data.dataset):
        sample = reader.sample(reader.keys()[i])
        assert torch.equal(item["segments"], torch.from_numpy(sample.ins.astype(np.int64)))  # no void, no stuff
        assert item["segment_info"] == {int(k): (m["category"], m["iscrowd"]) for k, m in
                                        sample.meta["instances"].items()}
        assert item["image"].shape == (3, *item["segments"].shape) and item["image"].dtype == torch.uint8


def test_panoptic_recipe_on_synthetic_scenes(synthetic_index, tmp_path):
    oracle = run("eval_coco_panoptic.yaml", synthetic_index, tmp_path / "oracle", "oracle")
    assert oracle["PQ"] == 100 and oracle["SQ"] == 100 and oracle["RQ"] == 100 and oracle["PQ_th"] == 100
    assert np.isnan(oracle["PQ_st"])  # the scenes hold no stuff
    empty = run("eval_coco_panoptic.yaml", synthetic_index, tmp_path / "empty", "empty")
    assert empty["PQ"] == 0 and empty["RQ"] == 0
    classes = sorted(int(c) for c in read_index(synthetic_index)["class_images"])
    prompt = prompt_file(synthetic_index, tmp_path / "synthetic.pt", classes)
    model = run("eval_coco_panoptic.yaml", synthetic_index, tmp_path / "model", "model",
                "--model.init_args.prompt_file", prompt, "--model.init_args.min_area", "4")
    assert 0 <= model["PQ"] <= 100
    rows = list(csv.DictReader(open(tmp_path / "model" / "images.csv")))
    assert len(rows) == 6 and all(int(r["ground_truth_segments"]) >= 1 for r in rows)
    truth = list(csv.DictReader(open(tmp_path / "oracle" / "images.csv")))
    assert [r["predicted_segments"] for r in truth] == [r["ground_truth_segments"] for r in truth]
    assert len(list((tmp_path / "model" / "pictures").glob("image-*.png"))) == 6


def test_panoptic_recipe_on_the_labelme_coco_photos(labelme_index, tmp_path):
    data = PanopticDataModule(str(labelme_index))
    data.setup()
    assert data.things == [5, 6, 7, 9, 15, 18] and data.stuff == []
    assert run("eval_coco_panoptic.yaml", labelme_index, tmp_path / "oracle", "oracle")["PQ"] == 100
    assert run("eval_coco_panoptic.yaml", labelme_index, tmp_path / "empty", "empty")["PQ"] == 0
    prompt = prompt_file(labelme_index, tmp_path / "labelme.pt", data.things)
    model = run("eval_coco_panoptic.yaml", labelme_index, tmp_path / "model", "model",
                "--model.init_args.prompt_file", prompt)
    assert 0 <= model["PQ"] <= 100 and len(list((tmp_path / "model" / "pictures").glob("*.png"))) == 3


@pytest.fixture(scope="module")
def coco_panoptic_index(labelme_index, tmp_path_factory) -> Path:
    """The labelme photos in COCO panoptic's own layout, converted as the recipe says: their instances are the
    things (the first one a crowd region), the unannotated rest a stuff category, a 3-pixel frame void."""
    root = tmp_path_factory.mktemp("coco")
    (root / "val2017").mkdir()
    (root / "annotations" / "panoptic_val2017").mkdir(parents=True)
    reader = ShardReader(labelme_index)
    names = read_index(labelme_index)["classes"]
    categories = [{"id": int(c), "name": n, "isthing": 1} for c, n in names.items()]
    categories.append({"id": 201, "name": "rest", "isthing": 0})
    images, annotations = [], []
    for image_id, key in enumerate(reader.keys(), 1):
        sample = reader.sample(key)
        (root / "val2017" / f"{image_id}.jpg").write_bytes(sample.image)
        ids = np.where(sample.sem == 0, 1000, sample.ins)  # rest: segment 1000
        ids[:3], ids[-3:], ids[:, :3], ids[:, -3:] = 0, 0, 0, 0
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
        Image.fromarray(rgb).save(root / "annotations" / "panoptic_val2017" / f"{image_id}.png")
        segments = [{"id": int(i), "category_id": m["category"], "iscrowd": int(image_id == 1 and i == "1")}
                    for i, m in sample.meta["instances"].items()]
        segments.append({"id": 1000, "category_id": 201, "iscrowd": 0})
        images.append({"id": image_id, "file_name": f"{image_id}.jpg"})
        annotations.append({"image_id": image_id, "file_name": f"{image_id}.png", "segments_info": segments})
    (root / "annotations" / "panoptic_val2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    from datamodules.sources.coco import CocoPanoptic

    convert(CocoPanoptic(root, "val"), root / "shards", progress=False)
    return root / "shards" / "coco-panoptic" / "val-index.json"


def test_coco_panoptic_shards_give_things_stuff_crowd_and_void(coco_panoptic_index, tmp_path):
    data = PanopticDataModule(str(coco_panoptic_index))
    data.setup()
    assert data.things == [5, 6, 7, 9, 15, 18] and data.stuff == [21]  # "rest": category 201 -> the 21st id
    first = data.dataset[0]
    segments, info = first["segments"], first["segment_info"]
    assert (segments[:3] == 0).all() and (segments[:, -3:] == 0).all()  # void frame
    assert sorted(info.values()) == sorted([(15, True), (15, False), (5, False), (21, False)])
    assert set(segments.unique().tolist()) == {0, *info}
    sample = ShardReader(coco_panoptic_index).sample(ShardReader(coco_panoptic_index).keys()[0])
    assert (sample.sem[:3] == IGNORE).all()
    oracle = run("eval_coco_panoptic.yaml", coco_panoptic_index, tmp_path / "oracle", "oracle")
    assert oracle["PQ"] == 100 and oracle["PQ_th"] == 100 and oracle["PQ_st"] == 100
    empty = run("eval_coco_panoptic.yaml", coco_panoptic_index, tmp_path / "empty", "empty")
    assert empty["PQ"] == 0 and empty["PQ_st"] == 0
    prompt = prompt_file(coco_panoptic_index, tmp_path / "coco.pt", data.things + data.stuff)
    model = run("eval_coco_panoptic.yaml", coco_panoptic_index, tmp_path / "model", "model",
                "--model.init_args.prompt_file", prompt, "--data.init_args.max_images", "2")
    assert 0 <= model["PQ"] <= 100
    assert len(list(csv.DictReader(open(tmp_path / "model" / "images.csv")))) == 2


def test_panoptic_model_run_needs_a_prompt_file(synthetic_index, tmp_path):
    with pytest.raises(ValueError, match="needs --model.init_args.prompt_file"):
        run("eval_coco_panoptic.yaml", synthetic_index, tmp_path, "model", "--model.init_args.prompt_file", "null")


def test_semantic_recipe_with_a_prompt_file_on_loveda_tiles(loveda_index, tmp_path):
    index = loveda_index
    prompts = ["--data.init_args.prompt_index", str(index)]
    oracle = run("eval_ade20k_prompt.yaml", index, tmp_path / "oracle", "oracle", *prompts)
    assert oracle["mIoU"] == 100 and oracle["pACC"] == 100
    prompt = prompt_file(index, tmp_path / "loveda.pt", list(range(1, 7)))
    for background in ("false", "true"):  # ADE20K's decoding (every pixel a class) and LoveDA's (0 background)
        out = tmp_path / f"model-{background}"
        model = run("eval_ade20k_prompt.yaml", index, out, "model", *prompts, "--model.init_args.prompt_file",
                    prompt, "--model.init_args.background", background)
        assert 0 <= model["mIoU"] <= 100 and len(list((out / "pictures").glob("image-*.png"))) == 3
        assert len(list(csv.DictReader(open(out / "images.csv")))) == 3

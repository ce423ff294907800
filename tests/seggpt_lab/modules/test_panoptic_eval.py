"""Panoptic evaluation and prompt-file semantic evaluation end to end on real shards: the data module's
segments, the recipes through the CLI with the oracle, the empty prediction and a tiny model with a prompt file,
its instances from an instance prompt or from connected components."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.convert import convert
from datamodules.panoptic import PanopticDataModule, instance_prompt
from datamodules.schema import SEM_VOID
from datamodules.shards import ShardReader, read_index
from seggpt_lab.canvas import PanopticImage, resize_labels
from seggpt_lab.modules.evaluate import PanopticEvaluation
from seggpt_lab.palette import decode
from seggpt_lab.prompts import instance_prompt_from_examples, prompt_from_examples, save_prompt
from seggpt_lab.segments import connected_components, panoptic_from_classes
from tests.seggpt_lab.modules.recipe_runs import HALF, prompt_file, run


def instance_prompt_file(index: Path, path: Path) -> str:
    """An instance prompt built from the first two samples of the shards, every non-crowd instance painted."""
    save_prompt(instance_prompt(index, HALF, ShardReader(index).keys()[:2]), path)
    return str(path)


def both_paths(index: Path, out: Path, prompt: str, *extra: str) -> tuple[dict, dict]:
    """The tiny model's results with instances from an instance prompt (the recipe's default) and from connected
    components, printed side by side."""
    instances = instance_prompt_file(index, out / "instances.pt")
    by_prompt = run("eval_coco_panoptic.yaml", index, out / "prompt", "model", "--model.init_args.prompt_file",
                    prompt, "--model.init_args.instance_prompt_file", instances, *extra)
    by_components = run("eval_coco_panoptic.yaml", index, out / "components", "model", "--model.init_args.prompt_file",
                        prompt, "--model.init_args.instances", "components", *extra)
    segments = [sum(int(r["predicted_segments"]) for r in csv.DictReader(open(out / path / "images.csv")))
                for path in ("prompt", "components")]
    print(f"\n{index.parent.name}: tiny model PQ {by_prompt['PQ']:.2f} (instance prompt, {segments[0]} segments), "
          f"{by_components['PQ']:.2f} (connected components, {segments[1]} segments)")
    return by_prompt, by_components


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
    for model in both_paths(synthetic_index, tmp_path, prompt, "--model.init_args.min_area", "4"):
        assert 0 <= model["PQ"] <= 100 and 0 <= model["PQ_th"] <= 100
    for path in ("prompt", "components"):
        rows = list(csv.DictReader(open(tmp_path / path / "images.csv")))
        assert len(rows) == 6 and all(int(r["ground_truth_segments"]) >= 1 for r in rows)
        assert len(list((tmp_path / path / "pictures").glob("image-*.png"))) == 6
    truth = list(csv.DictReader(open(tmp_path / "oracle" / "images.csv")))
    assert [r["predicted_segments"] for r in truth] == [r["ground_truth_segments"] for r in truth]


def test_panoptic_recipe_on_the_labelme_coco_photos(labelme_index, tmp_path):
    data = PanopticDataModule(str(labelme_index))
    data.setup()
    assert data.things == [5, 6, 7, 9, 15, 18] and data.stuff == []
    assert run("eval_coco_panoptic.yaml", labelme_index, tmp_path / "oracle", "oracle")["PQ"] == 100
    assert run("eval_coco_panoptic.yaml", labelme_index, tmp_path / "empty", "empty")["PQ"] == 0
    prompt = prompt_file(labelme_index, tmp_path / "labelme.pt", data.things)
    model = run("eval_coco_panoptic.yaml", labelme_index, tmp_path / "model", "model",
                "--model.init_args.prompt_file", prompt, "--model.init_args.instance_prompt_file",
                instance_prompt_file(labelme_index, tmp_path / "instances.pt"))
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
    assert (sample.sem[:3] == SEM_VOID).all()
    oracle = run("eval_coco_panoptic.yaml", coco_panoptic_index, tmp_path / "oracle", "oracle")
    assert oracle["PQ"] == 100 and oracle["PQ_th"] == 100 and oracle["PQ_st"] == 100
    empty = run("eval_coco_panoptic.yaml", coco_panoptic_index, tmp_path / "empty", "empty")
    assert empty["PQ"] == 0 and empty["PQ_st"] == 0
    prompt = prompt_file(coco_panoptic_index, tmp_path / "coco.pt", data.things + data.stuff)
    for model in both_paths(coco_panoptic_index, tmp_path, prompt, "--data.init_args.max_images", "2"):
        assert all(0 <= model[k] <= 100 for k in ("PQ", "PQ_th", "PQ_st"))
    assert len(list(csv.DictReader(open(tmp_path / "prompt" / "images.csv")))) == 2


def test_panoptic_model_run_needs_a_prompt_file(synthetic_index, tmp_path):
    with pytest.raises(ValueError, match="needs --model.init_args.prompt_file"):
        run("eval_coco_panoptic.yaml", synthetic_index, tmp_path, "model", "--model.init_args.prompt_file", "null")
    prompt = prompt_file(synthetic_index, tmp_path / "synthetic.pt", [1])
    with pytest.raises(ValueError, match="instances 'prompt' needs --model.init_args.instance_prompt_file"):
        run("eval_coco_panoptic.yaml", synthetic_index, tmp_path, "model", "--model.init_args.prompt_file", prompt,
            "--model.init_args.instance_prompt_file", "null")


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


def touching_scene() -> tuple[PanopticImage, torch.Tensor, torch.Tensor]:
    """A hand-built image: two touching instances A and B of thing 5, an instance C of thing 6, stuff 9 around;
    with the class map and the instance colours a model might paint (a few of A's pixels called 6, a stray
    patch of 5 outside every instance, a colour painted on stuff)."""
    truth = torch.full((20, 24), 4)  # segment 4: the stuff
    truth[2:10, 2:8], truth[2:10, 8:14], truth[12:18, 16:22] = 1, 2, 3
    info = {1: (5, False), 2: (5, False), 3: (6, False), 4: (9, False)}
    classes = torch.tensor([0, 5, 5, 6, 9])[truth]
    classes[2:4, 2:4], classes[18:20, 0:3] = 6, 5
    colours = torch.zeros(20, 24, dtype=torch.long)
    colours[2:10, 2:8], colours[2:10, 8:14], colours[12:18, 16:22], colours[14:18, 0:4] = 1, 2, 3, 4
    item = PanopticImage(key="touching", image=torch.zeros(3, 20, 24, dtype=torch.uint8), segments=truth,
                         segment_info=info)
    return item, classes, colours


def test_instance_colours_keep_apart_the_touching_instances_that_components_merge():
    item, classes, colours = touching_scene()
    segments, info = panoptic_from_classes(classes, things=[5, 6], stuff=[9], instances=colours)
    assert info == {1: 5, 2: 5, 3: 6, 4: 9}  # A (its 6-pixels outvoted), B, C, stuff
    assert (segments[2:10, 2:8] == 1).all() and (segments[2:10, 8:14] == 2).all()
    assert (segments[12:18, 16:22] == 3).all()
    assert (segments[14:18, 0:4] == 4).all()  # the colour painted on stuff is no instance
    assert (segments[18:20, 0:3] == 0).all()  # thing pixels that no instance covers: no segment
    merged, merged_info = panoptic_from_classes(classes, things=[5, 6], stuff=[9])
    assert merged[5, 5] == merged[5, 10] and merged_info[int(merged[5, 5])] == 5  # A and B: one segment
    assert merged_info[int(merged[2, 2])] == 6 and merged_info[int(merged[18, 0])] == 5
    assert len(merged_info) == len(info) + 1  # A + B merged; the 6-patch and the stray 5 patch on their own
    classes[0:2, 18:22], colours[0:2, 18:22] = 6, 3  # an object D apart from C, painted in C's colour
    segments, info = panoptic_from_classes(classes, things=[5, 6], stuff=[9], instances=colours)
    assert len(info) == 4 and (segments[0:2, 18:22] == segments[12, 16]).all()  # one colour, one instance


def stub_forwards(monkeypatch, maps: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> list[str]:
    """The model's forwards replaced by given maps, per image: the class map for the semantic prompt, the instance
    colours for the instance prompt; returns the seg_types asked for, in order."""
    asked = []

    def forward(model, prompt, image, seg_type="semantic", background=True):
        asked.append(seg_type)
        classes, colours = maps[id(image)]
        return colours if prompt["class_names"][0] == "instance 1" else classes

    monkeypatch.setattr("seggpt_lab.modules.evaluate.predict_with_prompt", forward)
    return asked


def scores(tmp_path: Path, instances: str, items: list[PanopticImage], things: list[int], stuff: list[int]) -> dict:
    """PQ and the rest from PanopticEvaluation.segment on `items`, with prompt files that `stub_forwards` tells
    apart (their contents are not read)."""
    image, label = torch.zeros(3, 8, 8, dtype=torch.uint8), torch.ones(8, 8, dtype=torch.long)
    tmp_path.mkdir(parents=True, exist_ok=True)
    save_prompt(prompt_from_examples([image], [label], things + stuff, HALF), tmp_path / "classes.pt")
    save_prompt(instance_prompt_from_examples([image], [label], HALF), tmp_path / "instances.pt")
    evaluation = PanopticEvaluation(model=torch.nn.Identity(), prompt_file=str(tmp_path / "classes.pt"),
                                    instances=instances, instance_prompt_file=str(tmp_path / "instances.pt"),
                                    things=things, stuff=stuff, output_dir=str(tmp_path))
    evaluation.setup("test")
    for item in items:
        evaluation.metric.update(evaluation.segment(item), (item["segments"], item["segment_info"]))
    return {k: float(v) for k, v in evaluation.metric.compute().items()}


def test_the_instance_path_scores_what_components_lose_on_touching_instances(monkeypatch, tmp_path):
    item, classes, colours = touching_scene()
    asked = stub_forwards(monkeypatch, {id(item["image"]): (classes, colours)})
    by_prompt = scores(tmp_path, "prompt", [item], [5, 6], [9])
    assert asked == ["semantic", "instance"]
    assert by_prompt["PQ_th"] == 100 and by_prompt["RQ_st"] == 100  # every instance exact; stuff less the strays
    asked.clear()
    by_components = scores(tmp_path, "components", [item], [5, 6], [9])
    assert asked == ["semantic"]
    assert by_components["PQ_th"] < by_prompt["PQ_th"] and by_components["RQ_th"] < 100  # A + B match neither


def test_ground_truth_colours_reproduce_the_real_coco_panoptic_segments(coco_panoptic_index, monkeypatch, tmp_path):
    """Given the ground truth's categories and its instances as colours, the instance path gives back the real
    photos' segments, also those in several pieces (occluded); connected components do no better."""
    data = PanopticDataModule(str(coco_panoptic_index))
    data.setup()
    items, maps, split = list(data.dataset), {}, 0
    for item in items:
        truth, info = item["segments"], item["segment_info"]
        category = torch.zeros(int(truth.max()) + 1, dtype=torch.long)
        for segment, (c, _) in info.items():
            category[segment] = c
        is_thing = torch.isin(category[truth], torch.tensor(data.things))
        colours = torch.where(is_thing, truth, 0)
        maps[id(item["image"])] = (category[truth], colours)
        split += int(connected_components(colours).max()) - len(set(colours.unique().tolist()) - {0})
    stub_forwards(monkeypatch, maps)
    by_prompt = scores(tmp_path / "p", "prompt", items, data.things, data.stuff)
    by_components = scores(tmp_path / "c", "components", items, data.things, data.stuff)
    print(f"\nground-truth colours on the photos: PQ_th {by_prompt['PQ_th']:.2f} (instance prompt), "
          f"{by_components['PQ_th']:.2f} (connected components); instances in several pieces: {split}")
    assert by_prompt["PQ"] == by_components["PQ_st"] == 100 and by_components["PQ_th"] <= 100


def test_the_instance_prompt_paints_the_busiest_photo_and_leaves_crowds_black(coco_panoptic_index):
    reader = ShardReader(coco_panoptic_index)
    metas = {key: reader.meta(key)["instances"] for key in reader.keys()}
    solid = {key: [i for i, m in instances.items() if not m["iscrowd"]] for key, instances in metas.items()}
    busiest = max(solid, key=lambda key: len(solid[key]))
    prompt = instance_prompt(coco_panoptic_index, HALF)
    assert prompt["class_ids"] == list(range(1, len(solid[busiest]) + 1))
    assert torch.equal(prompt["target"], instance_prompt(coco_panoptic_index, HALF, [busiest])["target"])
    first = reader.keys()[0]  # the photo with a crowd region
    crowd = [int(i) for i, m in metas[first].items() if m["iscrowd"]]
    prompt = instance_prompt(coco_panoptic_index, HALF, [first])
    ids = resize_labels(torch.from_numpy(reader.sample(first).ins.astype(np.int64)), HALF)
    rows = decode(prompt["target"], prompt["palette"])
    assert len(crowd) == 1 and (ids == crowd[0]).any() and (rows[ids == crowd[0]] == 0).all()
    assert len(prompt["class_ids"]) == len(solid[first]) and set(rows[ids > 0].unique().tolist()) - {0} == set(
        prompt["class_ids"])

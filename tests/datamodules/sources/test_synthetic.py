"""The synthetic source has no native files: it is checked against the generator it wraps."""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from datamodules import schema
from datamodules.schema import SampleError
from datamodules.sources import get_source
from datamodules.sources.synthetic import Synthetic
from datamodules.synthetic import CATEGORIES, HELD_OUT, SEEN, SyntheticScenes


def encoded(source: Synthetic, item: int) -> dict[str, bytes | str]:
    return schema.encode_sample(source.load(item))


def test_registered_and_needs_no_root():
    assert get_source("synthetic") is Synthetic
    assert Synthetic.needs_root is False and Synthetic.task == "panoptic"
    assert Synthetic.classes == CATEGORIES
    assert [len(Synthetic(None, split).items()) for split in Synthetic.splits] == [10_000, 1_000, 1_000]
    assert Synthetic(split="val", samples=7).items() == list(range(7))


def test_samples_round_trip_through_the_schema_pixel_for_pixel():
    source = Synthetic(split="val", samples=4, size=96)
    scenes = SyntheticScenes(size=96, categories=SEEN, seed=Synthetic.SEEDS["val"])
    for item in source.items():
        back = schema.decode_sample(encoded(source, item))  # type: ignore[arg-type]
        rgb, sem, ins, instances = scenes.scene(item)
        assert back.key == f"synthetic__val-{item:06d}" and back.image_ext == "png"
        np.testing.assert_array_equal(back.rgb(), rgb)  # PNG: lossless
        np.testing.assert_array_equal(back.sem, sem)
        np.testing.assert_array_equal(back.ins, ins)
        assert back.meta == {
            "source": "synthetic", "split": "val", "task": "panoptic", "size": [96, 96],
            "file": f"val/{item:06d}.png",
            "classes": {str(c): CATEGORIES[c] for c in sorted(set(instances.values()))},
            "instances": {str(i): {"category": c, "iscrowd": False} for i, c in instances.items()},
        }


def test_held_out_scenes_put_a_held_out_category_first_among_distractors_of_any_category():
    def names(split: str) -> set[str]:
        source = Synthetic(split=split, samples=40, size=48)
        return {name for item in source.items() for name in source.load(item).meta["classes"].values()}

    assert names("train") <= set(SEEN) and names("val") <= set(SEEN)
    assert len(names("train")) == len(SEEN)
    source = Synthetic(split="heldout", samples=200, size=48, min_objects=2, max_objects=2)
    same_shape = same_texture = 0
    for item in source.items():
        sample = source.load(item)
        first = {int(k): v for k, v in sample.meta["instances"].items()}[1]["category"]
        assert CATEGORIES[first] in HELD_OUT  # the back object, drawn first, is a held-out category
        for other in {i["category"] for i in sample.meta["instances"].values()} - {first}:
            shape, texture = CATEGORIES[first].split("-"), CATEGORIES[other].split("-")
            same_shape += shape[0] == texture[0]
            same_texture += shape[1] == texture[1]
    assert names("heldout") > set(HELD_OUT)  # seen categories appear as distractors
    assert same_shape >= 15 and same_texture >= 15  # composition: told apart by texture alone, by shape alone


def test_splits_draw_different_scenes():
    images = {split: encoded(Synthetic(split=split, samples=1), 0)["png"] for split in Synthetic.splits}
    assert len(set(images.values())) == 3


def test_samples_are_byte_identical_in_a_fresh_worker_process_and_in_any_order():
    source = Synthetic(split="train", samples=50)
    items = [0, 17, 3, 49]
    here = [encoded(source, item) for item in reversed(items)][::-1]
    # spawn: a new interpreter, as a DataLoader worker or another machine's converter would be
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        there = list(pool.map(encoded, [pickle.loads(pickle.dumps(source))] * len(items), items))
    assert there == here
    assert len({member["png"] for member in here}) == len(items)


def test_an_index_outside_the_split_names_the_sample():
    source = Synthetic(split="heldout", samples=5)
    with pytest.raises(SampleError) as error:
        source.load(5)
    assert str(error.value) == "heldout/000005.png: index 5 is outside the split's 5 samples"
    with pytest.raises(ValueError, match="synthetic has splits"):
        Synthetic(split="test")


def test_objects_per_scene_reach_the_generator():
    counts = {n: [len(Synthetic(split="val", samples=12, size=32, max_objects=n).load(i).meta["instances"])
                  for i in range(12)] for n in (1, 2)}
    assert counts[1] == [1] * 12
    assert set(counts[2]) == {1, 2}  # both counts occur in 12 scenes

"""PromptSwapDataModule: query plans on small synthetic shards, checked against the label maps they were drawn from
(every rule of `plan_swaps`, completeness, seeds, caps, distractor kinds, errors), and "video_objects" queries on a
DAVIS-2017 tree built from real OSVOS palette annotations, labels against the native masks."""

from __future__ import annotations

import io
import shutil
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.convert import convert
from datamodules.prompt_swap import PromptSwapDataModule, SwapSpec, plan_swaps
from datamodules.shards import ShardReader
from datamodules.sources.synthetic import Synthetic
from datamodules.sources.video import DAVIS
from seggpt_lab.canvas import IGNORE_LABEL
from tests.datamodules.sources.native_files import native, write_jpeg

OSVOS = Path("davis2017_osvos/results/semi-supervised/osvos")


def test_plan_swaps_on_hand_made_areas() -> None:
    # q holds 1 and 2, and 5 pixels of 3: too few to be one of its objects, too many for 3 to be absent from it
    areas = {"q": {1: 50, 2: 50, 3: 5}, "p1": {1: 50, 2: 5}, "p2": {2: 50}, "p12": {1: 50, 2: 50}, "p3": {3: 50},
             "p4": {4: 50}}
    for seed in range(8):
        q, p12 = plan_swaps(areas, min_pixels=16, seed=seed, kind_of=lambda a, b: int(a + b == 3))
        # exclusive: p1's 5 pixels of 2 do not count, p12 holds both; the only absent object of q is 4
        assert q == SwapSpec("q", (1, 2), ("p1", "p2"), ("p4", 4), 1)
        assert p12.query == "p12" and p12.prompts == ("p1", "p2") and p12.absent in (("p3", 3), ("p4", 4))
    shared = plan_swaps(areas, min_pixels=16, exclusive=False, seed=0)
    assert [s.query for s in shared] == ["q", "p12"] and shared[0].prompts[0] in ("p1", "p12")
    assert plan_swaps(areas, min_pixels=60) == []
    # one group per video: prompts from the query's video, the absent object from another; a lone frame has none
    frames = {"a-0": {1: 50, 2: 50}, "a-1": {1: 50, 2: 50}, "b-0": {1: 50, 2: 50}}
    videos = {"a-0": "a", "a-1": "a", "b-0": "b"}
    plan = plan_swaps(frames, videos, exclusive=False)
    assert [(s.query, s.prompts) for s in plan] == [("a-0", ("a-1", "a-1")), ("a-1", ("a-0", "a-0"))]
    assert all(s.absent in (("b-0", 1), ("b-0", 2)) for s in plan)


@pytest.fixture(scope="module")
def synthetic_index(tmp_path_factory: pytest.TempPathFactory) -> str:
    """40 val scenes of 48 px with 1-3 objects: images of one object, of two, of three; two shards."""
    out = tmp_path_factory.mktemp("synthetic")
    convert(Synthetic(None, "val", samples=40, size=48, min_objects=1, max_objects=3), out, shard_size=25,
            progress=False)
    return str(out / "synthetic" / "val-index.json")


def pixel_counts(index: str) -> dict[str, dict[int, int]]:
    """{key: {class id: pixels}} of each sample's sem map (0 and void 255 left out)."""
    reader = ShardReader(index)
    counts = {}
    for key in reader.keys():
        values, n = np.unique(reader.sample(key).sem, return_counts=True)
        counts[key] = {int(v): int(c) for v, c in zip(values, n, strict=True) if 0 < v < 255}
    return counts


def usable_pairs(counts: dict[str, dict[int, int]], key: str, min_pixels: int, exclusive: bool,
                 same_group=lambda k: True) -> list[tuple[int, int]]:
    """The pairs of `key` that plan_swaps may draw, found by brute force over every other image."""
    present = {k: {i for i, n in c.items() if n >= min_pixels} for k, c in counts.items()}

    def prompted(a: int, b: int) -> bool:
        return any(a in present[k] and not (exclusive and b in present[k]) for k in present
                   if k != key and same_group(k))

    return [(a, b) for a, b in combinations(sorted(present[key]), 2) if prompted(a, b) and prompted(b, a)]


def binary(label: np.ndarray, value: int) -> np.ndarray:
    return np.where(label == 255, IGNORE_LABEL, label == value).astype(np.int64)


def shape(name: str) -> str:
    return name.split("-")[0]


@pytest.mark.parametrize(("min_pixels", "exclusive"), [(16, True), (16, False), (150, True)])
def test_synthetic_plan_follows_every_rule(synthetic_index: str, min_pixels: int, exclusive: bool) -> None:
    dm = PromptSwapDataModule(synthetic_index, min_pixels=min_pixels, exclusive=exclusive, groups="name_prefix",
                              group_label="shape")
    dm.setup()
    reader = ShardReader(synthetic_index)
    counts = pixel_counts(synthetic_index)
    names = {int(i): n for k in reader.keys() for i, n in reader.meta(k)["classes"].items()}
    plan = dm.dataset.plan
    # complete: every image with a pair that both prompts exist for is a query, once, in shard order
    expected = [k for k in reader.keys() if usable_pairs(counts, k, min_pixels, exclusive)]
    assert [spec.query for spec in plan] == expected and len(expected) >= 5
    assert dm.kinds == ["same_shape", "other_shape"]
    assert dm.class_ids == sorted({o for spec in plan for o in spec.objects})
    for i, spec in enumerate(plan):
        a, b = spec.objects
        assert (a, b) in usable_pairs(counts, spec.query, min_pixels, exclusive)
        assert counts[spec.query][a] >= min_pixels and counts[spec.query][b] >= min_pixels
        for prompt, target, other in zip(spec.prompts, (a, b), (b, a), strict=True):
            assert prompt != spec.query and counts[prompt].get(target, 0) >= min_pixels
            if exclusive:  # an object counts only from min_pixels on, in prompts as in queries
                assert counts[prompt].get(other, 0) < min_pixels
        absent_key, absent = spec.absent
        assert absent not in (a, b) and counts[absent_key][absent] >= min_pixels
        assert counts[spec.query].get(absent, 0) == 0  # the query holds not one pixel of it
        assert spec.kind == int(shape(names[a]) != shape(names[b]))
        item = dm.dataset[i]
        sem = reader.sample(spec.query).sem
        assert item["key"] == spec.query and item["index"] == i and item["objects"] == [a, b]
        assert item["kind"] == ("same_shape" if shape(names[a]) == shape(names[b]) else "other_shape")
        assert item["query_image"].dtype == torch.uint8 and item["query_image"].shape == (3, 48, 48)
        assert np.array_equal(item["targets"].numpy(), np.stack([binary(sem, a), binary(sem, b)]))
        assert np.array_equal(item["all_objects"].numpy(), (sem > 0).astype(np.int64))
        for r, (prompt, target) in enumerate(zip(spec.prompts, (a, b), strict=True)):
            assert np.array_equal(item["prompt_labels"][r].numpy(), binary(reader.sample(prompt).sem, target))
            rgb = np.asarray(Image.open(io.BytesIO(reader.sample(prompt).image)).convert("RGB"))
            assert np.array_equal(item["prompt_images"][r].permute(1, 2, 0).numpy(), rgb)
        assert item["absent_object"] == absent
        assert np.array_equal(item["absent_label"].numpy(), binary(reader.sample(absent_key).sem, absent))
    # both kinds occur: pairs of one shape (told apart by texture) and of two shapes
    assert {spec.kind for spec in plan} == {0, 1}


def test_plan_is_fixed_by_the_seed_whatever_the_workers(synthetic_index: str) -> None:
    def planned(**kwargs) -> list[tuple]:
        dm = PromptSwapDataModule(synthetic_index, **kwargs)
        dm.setup()
        return [tuple(spec) for spec in dm.dataset.plan]

    assert planned(seed=3) == planned(seed=3)
    assert planned(seed=3) != planned(seed=4)
    assert [s[0] for s in planned(seed=3)] == [s[0] for s in planned(seed=4)]  # the same queries, other draws
    serial = list(PromptSwapDataModule(synthetic_index, seed=3).test_dataloader())
    parallel = list(PromptSwapDataModule(synthetic_index, seed=3, num_workers=2).test_dataloader())
    assert len(serial) == len(parallel) == len(planned(seed=3))
    for x, y in zip(serial, parallel, strict=True):
        assert x.keys() == y.keys()
        for name in x:
            if isinstance(x[name], torch.Tensor):
                assert torch.equal(x[name], y[name]), name
            elif isinstance(x[name], list) and isinstance(x[name][0], torch.Tensor):
                assert all(torch.equal(p, q) for p, q in zip(x[name], y[name], strict=True)), name
            else:
                assert x[name] == y[name], name


def test_queries_caps_with_a_seeded_subset(synthetic_index: str) -> None:
    full = PromptSwapDataModule(synthetic_index)
    full.setup()
    capped = PromptSwapDataModule(synthetic_index, queries=5)
    capped.setup()
    plan = capped.dataset.plan
    assert len(plan) == len(capped.dataset) == 5
    assert set(plan) <= set(full.dataset.plan)  # each query drawn as without the cap
    order = [s.query for s in full.dataset.plan]
    assert [order.index(s.query) for s in plan] == sorted(order.index(s.query) for s in plan)  # shard order
    again = PromptSwapDataModule(synthetic_index, queries=5)
    again.setup()
    assert again.dataset.plan == plan
    other = PromptSwapDataModule(synthetic_index, queries=5, seed=1)
    other.setup()
    assert {s.query for s in other.dataset.plan} != {s.query for s in plan}
    assert [d["index"] for d in capped.test_dataloader()] == [0, 1, 2, 3, 4]
    everything = PromptSwapDataModule(synthetic_index, queries=10_000)
    everything.setup()
    assert everything.dataset.plan == full.dataset.plan


def test_kinds_from_a_mapping_and_without_groups(synthetic_index: str) -> None:
    reader = ShardReader(synthetic_index)
    names = {int(i): n for k in reader.keys() for i, n in reader.meta(k)["classes"].items()}
    texture = {n: n.split("-")[1] for n in names.values()}
    dm = PromptSwapDataModule(synthetic_index, groups=texture, group_label="texture")
    dm.setup()
    assert dm.kinds == ["same_texture", "other_texture"]
    for spec in dm.dataset.plan:
        a, b = spec.objects
        assert spec.kind == int(texture[names[a]] != texture[names[b]])
    plain = PromptSwapDataModule(synthetic_index)
    plain.setup()
    assert plain.kinds == ["all"] and {spec.kind for spec in plain.dataset.plan} == {0}
    assert {d["kind"] for d in plain.test_dataloader()} == {"all"}
    missing = dict(list(texture.items())[1:])
    with pytest.raises(ValueError, match=rf"groups has no entry for the classes \['{list(texture)[0]}'\]") as error:
        PromptSwapDataModule(synthetic_index, groups=missing).setup()
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"objects": "frames"}, r"objects must be 'categories' or 'video_objects', got 'frames'"),
    ({"min_pixels": 0}, r"min_pixels and queries must be >= 1, got 0 and None"),
    ({"queries": 0}, r"min_pixels and queries must be >= 1, got 16 and 0"),
    ({"objects": "video_objects", "groups": "name_prefix"}, r"groups name classes: they apply to "
                                                             r"objects='categories' only"),
    ({"groups": "suffix"}, r"groups must be a \{class name: group\} mapping, 'name_prefix' or None, got 'suffix'"),
])
def test_bad_arguments_are_one_line_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        PromptSwapDataModule("unused-index.json", **kwargs)
    assert "\n" not in str(error.value)


def test_a_split_without_usable_images_is_a_one_line_error(synthetic_index: str, tmp_path: Path) -> None:
    convert(Synthetic(None, "val", samples=6, size=32, min_objects=1, max_objects=1), tmp_path, progress=False)
    single = str(tmp_path / "synthetic" / "val-index.json")
    for index, kwargs in ((single, {}), (synthetic_index, {"min_pixels": 48 * 48})):
        with pytest.raises(ValueError, match=r"val-index\.json: no image holds two objects of at least \d+ pixels that"
                                             r" other images can prompt exclusively; prompt-swap needs such images "
                                             r"\(try exclusive: false or a smaller min_pixels\)") as error:
            PromptSwapDataModule(index, **kwargs).setup()
        assert "\n" not in str(error.value)


# --- "video_objects": two DAVIS-2017 videos whose annotations are real OSVOS palette PNGs -----------------------

def davis2017_tree(shared_data: Path, root: Path, frames: int = 3) -> dict[str, np.ndarray]:
    """DAVIS/JPEGImages and DAVIS/Annotations (480p) under `root` for gold-fish (5 objects) and judo (2 objects),
    `frames` frames each: random JPEGs, the real OSVOS palette PNGs; frame 1 of gold-fish gets a void block (palette
    index 255). Returns {shard key: native ids}."""
    native_ids = {}
    for video in ("gold-fish", "judo"):
        for t in range(frames):
            write_jpeg(root / "JPEGImages" / "480p" / video / f"{t:05d}.jpg", (480, 854), seed=t)
            png = root / "Annotations" / "480p" / video / f"{t:05d}.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shared_data / OSVOS / video / f"{t:05d}.png", png)
            ids = native(png)
            if video == "gold-fish" and t == 1:
                ids[100:180, 300:420] = 255
                void = Image.fromarray(ids.astype(np.uint8), mode="P")
                void.putpalette(Image.open(png).getpalette())
                void.save(png)
                assert (native(png) == ids).all()
            native_ids[f"davis__{video}-{t:05d}"] = ids
    return native_ids


@pytest.fixture(scope="module")
def davis2017(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, np.ndarray]]:
    """(index of `davis2017_tree` with 3 frames a video, its native ids)."""
    root = tmp_path_factory.mktemp("davis2017")
    native_ids = davis2017_tree(shared_data, root)
    convert(DAVIS(root, "2017-val"), root / "shards", progress=False)
    return str(root / "shards" / "davis" / "2017-val-index.json"), native_ids


def test_video_objects_prompts_from_the_same_video_absent_from_the_other(
        davis2017: tuple[str, dict[str, np.ndarray]]) -> None:
    index, native_ids = davis2017
    video = {k: k.rsplit("-", 1)[0] for k in native_ids}
    dm = PromptSwapDataModule(index, objects="video_objects", exclusive=False, min_pixels=16)
    dm.setup()
    plan = dm.dataset.plan
    assert [s.query for s in plan] == sorted(native_ids)  # every frame holds two objects or more
    assert dm.kinds == ["all"]
    counts = {k: {int(v): int(n) for v, n in zip(*np.unique(ids, return_counts=True), strict=True) if 0 < v < 255}
              for k, ids in native_ids.items()}
    for i, spec in enumerate(plan):
        a, b = spec.objects
        assert (a, b) in usable_pairs(counts, spec.query, 16, False, lambda k, q=spec.query: video[k] == video[q])
        for prompt, target in zip(spec.prompts, (a, b), strict=True):
            assert prompt != spec.query and video[prompt] == video[spec.query] and counts[prompt][target] >= 16
        absent_key, absent = spec.absent
        assert video[absent_key] != video[spec.query] and counts[absent_key][absent] >= 16
        item = dm.dataset[i]
        query = native_ids[spec.query]
        assert item["kind"] == "all" and item["objects"] == [a, b]
        assert np.array_equal(item["targets"].numpy(), np.stack([binary(query, a), binary(query, b)]))
        assert np.array_equal(item["all_objects"].numpy(), binary(np.where(query == 255, 255, query > 0), 1))
        for r, (prompt, target) in enumerate(zip(spec.prompts, (a, b), strict=True)):
            assert np.array_equal(item["prompt_labels"][r].numpy(), binary(native_ids[prompt], target))
            assert item["prompt_images"][r].shape == (3, 480, 854)
        assert item["absent_object"] == absent
        assert np.array_equal(item["absent_label"].numpy(), binary(native_ids[absent_key], absent))
    void_query = plan[[s.query for s in plan].index("davis__gold-fish-00001")]
    targets = dm.dataset[plan.index(void_query)]["targets"]
    assert (targets[:, 100:180, 300:420] == IGNORE_LABEL).all()
    # every frame shows every object of its video: no prompt can show one object without the other
    with pytest.raises(ValueError, match=r"2017-val-index\.json: no image holds two objects .* exclusively"):
        PromptSwapDataModule(index, objects="video_objects").setup()

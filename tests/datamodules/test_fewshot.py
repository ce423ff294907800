"""FewShotDataModule on the real FSS-1000 example and on synthetic shards: episodes of the HSNet protocols
(juhongm999/hsnet data/pascal.py, coco.py, fss.py), labels against the native masks, supports, determinism."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.convert import convert
from datamodules.fewshot import FewShotDataModule, binary_label
from datamodules.schema import SEM_VOID, Sample
from datamodules.shards import iter_samples
from datamodules.sources.fewshot import FSS1000
from datamodules.sources.synthetic import Synthetic
from seggpt_lab.canvas import IGNORE_LABEL


def episodes(dm: FewShotDataModule) -> list[dict]:
    return list(dm.test_dataloader())


def plan(dm: FewShotDataModule) -> list[tuple]:
    dm.setup("test")
    return [tuple(spec) for spec in dm.dataset.plan]


def test_binary_label_keeps_void() -> None:
    sem = np.array([[0, 3, 3], [5, SEM_VOID, 3]])
    sample = Sample("s__x", b"", "png", {"task": "semantic"}, sem=sem)
    assert binary_label(sample, 3).tolist() == [[0, 1, 1], [0, IGNORE_LABEL, 1]]
    assert binary_label(sample, 5).dtype == torch.long
    with pytest.raises(ValueError, match=r"s__y: sample has no semantic labels"):
        binary_label(Sample("s__y", b"", "png", {"task": "instance"}), 1)


# --- FSS-1000: the real example class of the FSS-1000 repository (5 images of the Eiffel tower) --------------


@pytest.fixture(scope="module")
def fss(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(index of the converted example, its support folder)."""
    root = shared_data / "fss1000_example"
    out = tmp_path_factory.mktemp("fss")
    convert(FSS1000(root, "train"), out, shard_size=2, progress=False)  # 3 shards
    return str(out / "fss1000" / "train-index.json"), root / "imgs" / "example" / "support"


def test_fss_every_query_episodes_against_native_files(fss: tuple[str, Path]) -> None:
    index, support = fss
    stems = ["1", "2", "3", "4", "5"]

    def mask(key: str) -> np.ndarray:  # FSS1000's documented binarisation of the example: blue channel > 0
        return np.asarray(Image.open(support / "label" / f"{key.split('-')[-1]}.png"))[..., 2] > 0

    def image(key: str) -> np.ndarray:
        return np.asarray(Image.open(support / "image" / f"{key.split('-')[-1]}.jpg").convert("RGB"))

    got = episodes(FewShotDataModule(index, shots=1))
    assert [e["key"] for e in got] == [f"fss1000__example-{s}" for s in stems]  # one episode per image, in order
    for e in got:
        assert e["class_id"] == 1 and len(e["prompt_images"]) == len(e["prompt_labels"]) == 1
        assert e["query_image"].dtype == torch.uint8 and e["query_image"].shape == (3, 224, 224)
        assert e["query_label"].dtype == torch.long and e["query_label"].shape == (224, 224)
        assert np.array_equal(e["query_image"].permute(1, 2, 0).numpy(), image(e["key"]))
        assert np.array_equal(e["query_label"].numpy(), mask(e["key"]).astype(np.int64))
        prompt = e["prompt_labels"][0].numpy()
        assert not np.array_equal(e["prompt_images"][0], e["query_image"])  # the support is another image
        matches = [s for s in stems if np.array_equal(prompt, mask(s))]
        assert len(matches) == 1 and f"fss1000__example-{matches[0]}" != e["key"]
        assert np.array_equal(e["prompt_images"][0].permute(1, 2, 0).numpy(), image(matches[0]))


def test_fss_supports_determinism_and_seeds(fss: tuple[str, Path]) -> None:
    index, _ = fss
    first = plan(FewShotDataModule(index, shots=2, seed=0))
    assert first == plan(FewShotDataModule(index, shots=2, seed=0))
    assert first != plan(FewShotDataModule(index, shots=2, seed=1))
    for query, class_id, supports in first:
        assert class_id == 1 and len(set(supports)) == 2 and query not in supports
    # with 4 shots the supports are exactly the other four images
    for query, _, supports in plan(FewShotDataModule(index, shots=4)):
        assert sorted(supports + (query,)) == [f"fss1000__example-{n}" for n in range(1, 6)]
    # workers give the same episodes as the main process
    serial = episodes(FewShotDataModule(index, shots=2))
    parallel = episodes(FewShotDataModule(index, shots=2, num_workers=2))
    for a, b in zip(serial, parallel, strict=True):
        assert a["key"] == b["key"] and all(torch.equal(x, y) for x, y in zip(a["prompt_labels"], b["prompt_labels"],
                                                                              strict=True))


def test_fss_episode_counts_and_errors(fss: tuple[str, Path]) -> None:
    index, _ = fss
    assert [q for q, _, _ in plan(FewShotDataModule(index, episodes=3))] == [f"fss1000__example-{n}" for n in (1, 2, 3)]
    cycled = plan(FewShotDataModule(index, episodes=12, sampling="cycle"))
    assert [q for q, _, _ in cycled] == [f"fss1000__example-{n % 5 + 1}" for n in range(12)]
    assert cycled[:5] == plan(FewShotDataModule(index))  # the same generator per episode index
    with pytest.raises(ValueError, match=r"every_query has 5 \(image, class\) pairs, fewer than 6 episodes"):
        plan(FewShotDataModule(index, episodes=6))
    with pytest.raises(ValueError, match=r"no class is in the 6 images that a 5-shot episode needs"):
        plan(FewShotDataModule(index, shots=5))
    with pytest.raises(ValueError, match=r"sampling must be one of"):
        FewShotDataModule(index, sampling="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"must be >= 1"):
        FewShotDataModule(index, shots=0)


# --- synthetic shards: many classes, 1-3 per image --------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, dict[int, int]]]:
    """(index of 60 synthetic val scenes, {key: {class id: pixels}} computed from the decoded label maps)."""
    out = tmp_path_factory.mktemp("synthetic")
    convert(Synthetic(None, "val", samples=60, size=64), out, shard_size=16, progress=False)
    index = out / "synthetic" / "val-index.json"
    pixels = {}
    for sample in iter_samples(index):
        ids, counts = np.unique(sample.sem, return_counts=True)
        pixels[sample.key] = {int(i): int(c) for i, c in zip(ids, counts, strict=True) if i > 0}
    return str(index), pixels


def images_of(pixels: dict[str, dict[int, int]], min_pixels: int = 1) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for key, classes in pixels.items():
        for c in sorted(classes):
            if classes[c] >= min_pixels:
                found.setdefault(c, []).append(key)
    return found


def check_episode(e: dict, shots: int) -> None:
    """Query and every support hold the episode's class; labels are binary."""
    assert len(e["prompt_images"]) == len(e["prompt_labels"]) == shots
    pairs = [*zip(e["prompt_images"], e["prompt_labels"], strict=True), (e["query_image"], e["query_label"])]
    for image, label in pairs:
        assert image.dtype == torch.uint8 and image.shape == (3, 64, 64) and label.shape == (64, 64)
        assert set(label.unique().tolist()) == {0, 1}


def test_class_uniform_episodes(synthetic: tuple[str, dict]) -> None:
    index, pixels = synthetic
    images = images_of(pixels)
    got = episodes(FewShotDataModule(index, shots=2, episodes=40, sampling="class_uniform"))
    assert len(got) == 40
    for e in got:
        check_episode(e, 2)
        assert len(images[e["class_id"]]) >= 3
    specs = plan(FewShotDataModule(index, shots=2, episodes=40, sampling="class_uniform"))
    for (query, class_id, supports), e in zip(specs, got, strict=True):
        assert e["key"] == query and e["class_id"] == class_id
        assert query not in supports and len(set(supports)) == 2
        assert all(class_id in pixels[key] for key in (query, *supports))
    assert len({c for _, c, _ in specs}) > 5  # classes vary


def test_cycle_episodes_follow_the_pair_list(synthetic: tuple[str, dict]) -> None:
    index, pixels = synthetic
    images = images_of(pixels)
    pairs = [(key, c) for key, classes in pixels.items() for c in sorted(classes) if len(images[c]) >= 2]
    n = 2 * len(pairs) + 3
    specs = plan(FewShotDataModule(index, episodes=n, sampling="cycle"))
    assert [(q, c) for q, c, _ in specs] == [pairs[i % len(pairs)] for i in range(n)]
    assert plan(FewShotDataModule(index, sampling="cycle")) == specs[:len(pairs)] == plan(FewShotDataModule(index))
    for e in episodes(FewShotDataModule(index, episodes=30, sampling="cycle")):
        check_episode(e, 1)


def test_restricted_classes_and_skipped_ones(synthetic: tuple[str, dict], caplog: pytest.LogCaptureFixture) -> None:
    index, pixels = synthetic
    images = images_of(pixels)
    common = sorted(images, key=lambda c: -len(images[c]))[:2]
    rare = [c for c in images if len(images[c]) < 4]  # too few for 3-shot episodes
    assert rare
    dm = FewShotDataModule(index, shots=3, classes=[*common, *rare, 99], sampling="class_uniform", episodes=50)
    with caplog.at_level(logging.WARNING, logger="datamodules.fewshot"):
        specs = plan(dm)
    assert len(specs) == 50 and {c for _, c, _ in specs} == set(common)
    assert dm.skipped == sorted([*rare, 99])
    assert f"{len(rare) + 1} classes are in fewer than 4 images" in caplog.text
    every = plan(FewShotDataModule(index, classes=common))
    assert Counter(c for _, c, _ in every) == {c: len(images[c]) for c in common}


def test_min_pixels(synthetic: tuple[str, dict]) -> None:
    index, pixels = synthetic
    threshold = int(np.median([n for classes in pixels.values() for n in classes.values()]))
    images = images_of(pixels, threshold)
    pairs = [(key, c) for key, classes in pixels.items() for c in sorted(classes)
             if classes[c] >= threshold and len(images[c]) >= 2]
    specs = plan(FewShotDataModule(index, min_pixels=threshold))
    assert [(q, c) for q, c, _ in specs] == pairs
    assert all(pixels[s][c] >= threshold for _, c, supports in specs for s in supports)

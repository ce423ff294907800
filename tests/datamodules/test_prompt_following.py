"""PromptFollowingDataModule: per named set, its prompt-swap queries and one-shot episodes, in `parts` order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.fewshot import FewShotDataModule
from datamodules.prompt_following import EvaluationSet, PromptFollowingDataModule
from datamodules.prompt_swap import PromptSwapDataModule
from datamodules.shards import ShardReader
from seggpt_lab.canvas import IGNORE_LABEL

WORLD = {"source": "synthetic", "samples": 30, "size": 32}


def sets(folder: Path) -> list[EvaluationSet]:
    return [EvaluationSet("seen", str(folder), "val", WORLD),
            EvaluationSet("heldout", str(folder), "heldout", WORLD, classes=[4, 7, 10, 13, 20, 23])]


def test_each_set_gives_its_swaps_then_its_episodes(tmp_path: Path) -> None:
    folder = tmp_path / "synthetic"
    dm = PromptFollowingDataModule(sets(folder), episodes=5, min_pixels=1, groups="name_prefix",
                                   group_label="shape")
    dm.prepare_data()  # converts both splits of the world
    loaders = dm.test_dataloader()
    assert dm.parts == [("seen", "swap"), ("seen", "one_shot"), ("heldout", "swap"), ("heldout", "one_shot")]
    assert dm.kinds == ["same_shape", "other_shape"]
    for (name, part), loader in zip(dm.parts, loaders, strict=True):
        index = str(folder / f"{'val' if name == 'seen' else 'heldout'}-index.json")
        alone = (PromptSwapDataModule(index, min_pixels=1, groups="name_prefix", group_label="shape")
                 if part == "swap" else
                 FewShotDataModule(index, 1, 5, "class_uniform", [4, 7, 10, 13, 20, 23] if name == "heldout" else None,
                                   1))
        alone.setup()
        assert [tuple(s) for s in loader.dataset.plan] == [tuple(s) for s in alone.dataset.plan], (name, part)
    assert dm.class_ids["heldout"] == {"swap": [4, 7, 10, 13, 20, 23], "one_shot": [4, 7, 10, 13, 20, 23]}
    seen = dm.class_ids["seen"]
    assert seen["one_shot"] == dm.episodes["seen"].class_ids and seen["swap"] == dm.swaps["seen"].class_ids


def test_episodes_carry_every_object_of_the_query(tmp_path: Path) -> None:
    folder = tmp_path / "synthetic"
    dm = PromptFollowingDataModule(sets(folder)[:1], episodes=4, min_pixels=1)
    dm.prepare_data()
    reader = ShardReader(folder / "val-index.json")
    for episode in dm.test_dataloader()[1]:
        sem = reader.sample(episode["key"]).sem
        assert torch.equal(episode["all_objects"], torch.from_numpy((sem > 0).astype(np.int64)))
        assert ((episode["query_label"] == 1) <= (episode["all_objects"] == 1)).all()
        assert not (episode["all_objects"] == IGNORE_LABEL).any()  # the scenes have no void


@pytest.mark.parametrize(("given", "message"), [
    ([], r"give one or more sets with distinct names, got \[\]"),
    (["a", "a"], r"give one or more sets with distinct names, got \['a', 'a'\]"),
])
def test_bad_sets_are_one_line_errors(given: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        PromptFollowingDataModule([EvaluationSet(n, str(tmp_path)) for n in given])


def test_a_set_that_was_never_converted_is_named(tmp_path: Path) -> None:
    dm = PromptFollowingDataModule([EvaluationSet("coco", str(tmp_path / "coco"), "val2017")])
    dm.prepare_data()  # nothing to convert: no spec
    with pytest.raises(FileNotFoundError, match=r"data.sets \(coco\): .*coco/val2017-index.json does not exist"):
        dm.setup("test")

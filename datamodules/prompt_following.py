"""Prompt-swap queries and one-shot episodes on named shard sets, for `PromptFollowingEvaluation`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from datamodules.fewshot import FewShotDataModule
from datamodules.pretrain import ShardSource
from datamodules.prompt_swap import PromptSwapDataModule


@dataclass
class EvaluationSet:
    """One named shard set.

    Args:
        name: the set's name in the results ("seen", "heldout", ...).
        path: a converted folder (DIR/SOURCE, read through `<split>-index.json`) or an index file.
        split: the split read from a folder.
        convert: a `ShardSource.convert` spec, applied when the split's index is missing.
        classes: the one-shot classes and those both mIoUs average over (swaps use every object); None: all present.
    """

    name: str
    path: str
    split: str = "val"
    convert: dict[str, Any] | None = None
    classes: list[int] | None = None

    def source(self) -> ShardSource:
        return ShardSource(self.path, split=self.split, name=self.name, convert=self.convert)


class PromptFollowingDataModule(LightningDataModule):
    """Per set, two test loaders: its prompt-swap queries, then its one-shot episodes (`parts` names them).

    Args:
        sets: the shard sets, each scored on its own.
        episodes: one-shot episodes per set (`FewShotDataModule`'s "class_uniform").
        queries: at most this many prompt-swap queries per set (a seeded draw); None: every usable image.
        min_pixels: an object counts in an image, for both plans, only with at least this many pixels.
        exclusive: a swap prompt must not hold the query's other object.
        groups, group_label: distractor kinds, as in `PromptSwapDataModule` ("name_prefix", "shape": synthetic shapes).
        seed: seeds both plans.
        num_workers: DataLoader workers per loader.
    """

    def __init__(self, sets: list[EvaluationSet], episodes: int = 300, queries: int | None = None,
                 min_pixels: int = 16, exclusive: bool = True,
                 groups: dict[str, str] | Literal["name_prefix"] | None = None, group_label: str = "group",
                 seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        names = [s.name for s in sets]
        if not sets or len(set(names)) != len(names):
            raise ValueError(f"data.sets: give one or more sets with distinct names, got {names}")
        self.save_hyperparameters()
        self.sets = list(sets)
        self.swaps = {s.name: PromptSwapDataModule(str(s.source().index_file()), queries=queries,
                                                   min_pixels=min_pixels, exclusive=exclusive, groups=groups,
                                                   group_label=group_label, seed=seed, num_workers=num_workers)
                      for s in self.sets}
        self.episodes = {s.name: FewShotDataModule(str(s.source().index_file()), 1, episodes, "class_uniform",
                                                   s.classes, min_pixels, seed, num_workers) for s in self.sets}
        self.parts: list[tuple[str, Literal["swap", "one_shot"]]] = [
            (s.name, part) for s in self.sets for part in ("swap", "one_shot")]
        self.kinds = next(iter(self.swaps.values())).kinds
        # set by setup(): {set: {part: the classes its mIoU averages over}}
        self.class_ids: dict[str, dict[str, list[int]]] = {}

    def prepare_data(self) -> None:
        for s in self.sets:
            s.source().ensure_converted()

    def setup(self, stage: str | None = None) -> None:
        for s in self.sets:
            for part in (self.swaps[s.name], self.episodes[s.name]):
                if not Path(part.index).is_file():
                    raise FileNotFoundError(f"data.sets ({s.name}): {part.index} does not exist; convert the split "
                                            "first or give the set a `convert` spec")
                part.setup(stage)
            self.class_ids[s.name] = {"swap": list(s.classes or self.swaps[s.name].class_ids),
                                      "one_shot": self.episodes[s.name].class_ids}

    def test_dataloader(self) -> list[DataLoader]:
        self.setup()
        parts = {"swap": self.swaps, "one_shot": self.episodes}
        return [parts[part][name].test_dataloader() for name, part in self.parts]

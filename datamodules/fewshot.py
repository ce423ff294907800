"""FewShotDataModule: few-shot episodes (a query and K supports of one class) from a converted split, planned once
from the samples' metadata and drawn by index, so that a plan depends on neither the workers nor their order.
"""

from __future__ import annotations

import logging
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.evaluation import EvaluationDataModule
from datamodules.schema import SEM_VOID, Sample
from datamodules.shards import ShardReader
from seggpt_lab.canvas import IGNORE_LABEL, Episode

log = logging.getLogger(__name__)

Sampling = Literal["every_query", "cycle", "class_uniform"]
SAMPLINGS = ("every_query", "cycle", "class_uniform")


class EpisodeSpec(NamedTuple):
    """One episode by sample keys: the query, its class and the supports."""

    query: str
    class_id: int
    supports: tuple[str, ...]


def image_classes(reader: ShardReader, classes: list[int] | None = None, min_pixels: int = 1) -> dict[str, list[int]]:
    """{key: ascending ids of the classes (of `classes`, or any) with at least `min_pixels` pixels}, in shard order,
    from metadata (label maps decoded only for `min_pixels > 1`); samples without semantic labels are left out."""
    wanted = None if classes is None else set(classes)
    present: dict[str, list[int]] = {}
    for key in reader.keys():
        meta = reader.meta(key)
        if "classes" not in meta:
            continue
        ids = sorted(c for c in map(int, meta["classes"]) if wanted is None or c in wanted)
        if min_pixels > 1 and ids:
            sem = reader.sample(key).sem
            ids = [c for c in ids if int((sem == c).sum()) >= min_pixels]
        present[key] = ids
    if not present:
        raise ValueError(f"{reader.index_file}: no sample has semantic labels (sem.png); few-shot episodes need them")
    return present


def plan_episodes(present: dict[str, list[int]], shots: int = 1, episodes: int | None = None,
                  sampling: Sampling = "every_query", seed: int = 0,
                  classes: list[int] | None = None) -> tuple[list[EpisodeSpec], list[int]]:
    """(episodes, skipped class ids) over `present` (`image_classes`); a class (of `classes`, or any) in fewer than
    `shots + 1` images is skipped. Query (image, class) pairs run in image order, ids ascending; episode i draws
    from `default_rng([seed, i])` (for "class_uniform" first its class and query) `shots` other images of the class."""
    images: dict[int, list[str]] = {c: [] for c in classes or []}
    for key, ids in present.items():
        for c in ids:
            images.setdefault(c, []).append(key)
    skipped = sorted(c for c, keys in images.items() if len(keys) <= shots)
    usable = {c: keys for c, keys in sorted(images.items()) if len(keys) > shots}
    pairs = [(key, c) for key, ids in present.items() for c in ids if c in usable]
    if not pairs:
        raise ValueError(f"no class is in the {shots + 1} images that a {shots}-shot episode needs")
    if episodes is None:
        episodes = len(pairs)
    elif sampling == "every_query" and episodes > len(pairs):
        raise ValueError(f"every_query has {len(pairs)} (image, class) pairs, fewer than {episodes} episodes; "
                         "sampling 'cycle' repeats queries")
    class_ids = list(usable)
    plan = []
    for i in range(episodes):
        rng = np.random.default_rng([seed, i])
        if sampling == "class_uniform":
            class_id = class_ids[rng.integers(len(class_ids))]
            query = usable[class_id][rng.integers(len(usable[class_id]))]
        else:
            query, class_id = pairs[i % len(pairs)]
        others = [key for key in usable[class_id] if key != query]
        supports = tuple(others[j] for j in rng.choice(len(others), shots, replace=False))
        plan.append(EpisodeSpec(query, class_id, supports))
    return plan, skipped


def image_tensor(sample: Sample) -> torch.Tensor:
    """The sample's image as (3, H, W) uint8."""
    return torch.from_numpy(sample.rgb().transpose(2, 0, 1).copy())  # the decoded array is read-only


def binary_label(sample: Sample, class_id: int) -> torch.Tensor:
    """(H, W) long: 1 where sem is `class_id`, IGNORE_LABEL on void, 0 elsewhere."""
    if sample.sem is None:
        raise ValueError(f"{sample.key}: sample has no semantic labels (sem.png)")
    label = (sample.sem == class_id).astype(np.int64)
    label[sample.sem == SEM_VOID] = IGNORE_LABEL
    return torch.from_numpy(label)


def objects_label(sample: Sample) -> torch.Tensor:
    """(H, W) long: 1 on every labelled object (any class but background), IGNORE_LABEL on void, 0 elsewhere."""
    label = ((sample.sem > 0) & (sample.sem != SEM_VOID)).astype(np.int64)
    label[sample.sem == SEM_VOID] = IGNORE_LABEL
    return torch.from_numpy(label)


class FewShotEpisodes(Dataset):
    """Episode i of `plan`, read from `reader` at native image size."""

    def __init__(self, reader: ShardReader, plan: list[EpisodeSpec]) -> None:
        self.reader, self.plan = reader, plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> Episode:
        spec = self.plan[i]
        query = self.reader.sample(spec.query)
        supports = [self.reader.sample(key) for key in spec.supports]
        return Episode(key=spec.query, class_id=spec.class_id,
                       prompt_images=[image_tensor(s) for s in supports],
                       prompt_labels=[binary_label(s, spec.class_id) for s in supports],
                       query_image=image_tensor(query), query_label=binary_label(query, spec.class_id),
                       all_objects=objects_label(query))


class FewShotDataModule(EvaluationDataModule):
    """Few-shot episodes from one converted split, one `Episode` at a time at native size, by HSNet's protocols
    (github.com/juhongm999/hsnet data/{fss,pascal,coco}.py; see `sampling`); but episode i has its own generator
    and distinct supports (HSNet: numpy's global stream, independent draws), over the shards' (image, class) pairs.

    Args:
        index: path of a converted split's `<split>-index.json`.
        shots: support images (prompts) per episode.
        episodes: how many; None: one per (image, class present) pair.
        sampling: "every_query" (each (image, class) pair once, in order: FSS-1000), "cycle" (pair i % len, as
            HSNet's `idx %= len(img_metadata)`: PASCAL-5i) or "class_uniform" (a class first, uniformly: COCO-20i).
        classes: class ids to make episodes of (such as a fold's test classes); None: every class present.
        min_pixels: a class counts in an image only with this many pixels there (above 1: label maps decoded).
        seed: seeds episode i's generator as (seed, i).
        num_workers: DataLoader worker processes.
    """

    def __init__(self, index: str, shots: int = 1, episodes: int | None = None, sampling: Sampling = "every_query",
                 classes: list[int] | None = None, min_pixels: int = 1, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        if shots < 1 or min_pixels < 1 or (episodes is not None and episodes < 1):
            raise ValueError(f"shots, min_pixels and episodes must be >= 1, got {shots}, {min_pixels}, {episodes}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        self.save_hyperparameters()
        self.index, self.shots, self.episodes, self.sampling = index, shots, episodes, sampling
        self.classes, self.min_pixels, self.seed, self.num_workers = classes, min_pixels, seed, num_workers
        self.dataset: FewShotEpisodes | None = None
        self.skipped: list[int] = []  # classes with too few images for an episode
        self.class_ids: list[int] = []  # set by setup(): the classes the evaluation averages over

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        reader = ShardReader(self.index)
        present = image_classes(reader, self.classes, self.min_pixels)
        plan, self.skipped = plan_episodes(present, self.shots, self.episodes, self.sampling, self.seed, self.classes)
        if self.skipped:
            log.warning("%s: %d classes are in fewer than %d images and give no %d-shot episodes: %s",
                        self.index, len(self.skipped), self.shots + 1, self.shots, self.skipped)
        self.dataset = FewShotEpisodes(reader, plan)
        # the classes a fold's mean runs over: the requested ones (HSNet counts an unsampled class as 0)
        self.class_ids = list(self.classes) if self.classes else sorted({spec.class_id for spec in plan})

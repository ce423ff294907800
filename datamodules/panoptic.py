"""PanopticDataModule: whole images with their ground-truth panoptic segments (COCO panoptic val and the like):
each instance of ins.png is a segment, the uncovered pixels of each class one stuff segment; void and background
are segment 0, which PQ leaves out. `instance_prompt` builds panoptic evaluation's instance prompt from shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.evaluation import EvaluationDataModule
from datamodules.fewshot import image_tensor
from datamodules.schema import SEM_VOID, Sample
from datamodules.shards import ShardReader, read_index
from seggpt_lab.canvas import PanopticImage
from seggpt_lab.prompts import Prompt, instance_prompt_from_examples


def panoptic_segments(sample: Sample) -> tuple[torch.Tensor, dict[int, tuple[int, bool]]]:
    """((H, W) long segment ids, {segment id: (category, iscrowd)}): instances keep their ins.png ids, stuff
    segments follow them in class order; 0 where sem.png is 0 or SEM_VOID."""
    if sample.sem is None:
        raise ValueError(f"{sample.key}: sample has no semantic labels (sem.png)")
    sem = sample.sem.astype(np.int64)
    ins = np.zeros_like(sem) if sample.ins is None else sample.ins.astype(np.int64)
    instances = {int(i): (int(m["category"]), bool(m["iscrowd"])) for i, m in sample.meta.get("instances", {}).items()}
    labelled = (sem != 0) & (sem != SEM_VOID)
    segments = np.where(labelled, ins, 0)
    unlisted = set(np.unique(segments).tolist()) - {0} - instances.keys()
    if unlisted:
        raise ValueError(f"{sample.key}: ins.png ids {sorted(unlisted)} have no entry in the metadata's instances")
    stuff = labelled & (ins == 0)
    classes = np.unique(sem[stuff])
    first = max([int(ins.max()), *instances]) + 1  # stuff segment ids start after every instance id
    segments[stuff] = first + np.searchsorted(classes, sem[stuff])
    info = {i: instances[i] for i in np.unique(segments).tolist() if i in instances}
    info.update({first + k: (int(c), False) for k, c in enumerate(classes.tolist())})
    return torch.from_numpy(segments), info


class PanopticImages(Dataset):
    """Evaluation image i with its panoptic ground truth."""

    def __init__(self, reader: ShardReader, keys: list[str]) -> None:
        self.reader, self.keys = reader, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> PanopticImage:
        sample = self.reader.sample(self.keys[i])
        segments, info = panoptic_segments(sample)
        return PanopticImage(key=self.keys[i], image=image_tensor(sample), segments=segments, segment_info=info)


class PanopticDataModule(EvaluationDataModule):
    """Panoptic segmentation of every image of a converted split, one `PanopticImage` at a time at native size;
    after `setup()`, `things` are the classes that occur as instances and `stuff` the other classes with pixels.

    Args:
        index: the split's `<split>-index.json` (e.g. COCO panoptic val).
        max_images: evaluate only the first N images (quick runs); `things` and `stuff` still cover the split.
        num_workers: DataLoader processes.
    """

    def __init__(self, index: str, max_images: int | None = None, num_workers: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.index, self.max_images, self.num_workers = index, max_images, num_workers
        self.dataset: PanopticImages | None = None
        self.things: list[int] = []  # set by setup()
        self.stuff: list[int] = []  # set by setup()

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        reader = ShardReader(self.index)
        keys, things = [], set()
        for key in reader.keys():
            meta = reader.meta(key)
            if "classes" in meta:  # samples with semantic labels
                keys.append(key)
                things |= {int(m["category"]) for m in meta.get("instances", {}).values()}
        if not keys:
            raise ValueError(f"{self.index}: no sample has semantic labels (sem.png); panoptic evaluation needs them")
        self.things = sorted(things)
        self.stuff = sorted({int(c) for c in read_index(self.index)["class_images"]} - things)
        self.dataset = PanopticImages(reader, keys[: self.max_images])


def instance_prompt(index: str | Path, size: tuple[int, int] = (448, 448), keys: list[str] | None = None) -> Prompt:
    """An instance prompt from converted shards: the samples `keys` (default: the one with the most non-crowd
    instances), crowd regions left black as instance pairs leave them uncoloured (`pairing.py`).

        save_prompt(instance_prompt("shards/coco-panoptic/train-index.json"), "prompts/coco_panoptic_instances.pt")
    """

    reader = ShardReader(index)

    def solid(key: str) -> list[int]:
        return [int(i) for i, m in reader.meta(key).get("instances", {}).items() if not m["iscrowd"]]

    keys = keys if keys is not None else [max(reader.keys(), key=lambda k: len(solid(k)))]
    images, maps = [], []
    for key in keys:
        sample = reader.sample(key)
        if sample.ins is None:
            raise ValueError(f"{key}: sample has no instance map (ins.png) to paint")
        ids = torch.from_numpy(sample.ins.astype("int64"))
        images.append(image_tensor(sample))
        maps.append(torch.where(torch.isin(ids, torch.tensor(solid(key), dtype=torch.long)), ids, 0))
    return instance_prompt_from_examples(images, maps, size)

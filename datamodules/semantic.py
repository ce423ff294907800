"""SemanticDataModule: whole-image semantic segmentation (ADE20K val and the like) with example prompts: for each
class, `shots` images of the prompt split that hold it (drawn once, seeded), masked to that class, shared by every
evaluation image; with several seeds (SegGPT, Wang et al. 2023, appendix B, Table S1) each draws its own."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.evaluation import EvaluationDataModule
from datamodules.fewshot import binary_label, image_classes, image_tensor
from datamodules.schema import SEM_VOID, Sample
from datamodules.shards import ShardReader, read_index
from seggpt_lab.canvas import IGNORE_LABEL, ClassPrompt, SemanticImage

log = logging.getLogger(__name__)


def semantic_label(sample: Sample) -> torch.Tensor:
    """(H, W) long: the class ids of sem.png, IGNORE_LABEL on void."""
    if sample.sem is None:
        raise ValueError(f"{sample.key}: sample has no semantic labels (sem.png)")
    if sample.sem[sample.sem != SEM_VOID].max(initial=0) >= IGNORE_LABEL:
        raise ValueError(f"{sample.key}: class ids reach {IGNORE_LABEL}, the evaluation void label")
    return torch.from_numpy(np.where(sample.sem == SEM_VOID, IGNORE_LABEL, sample.sem).astype(np.int64))


class SemanticImages(Dataset):
    """Evaluation image i with its labels and the shared class prompts: for each seed in turn, one
    `ClassPrompt` per class (seed-major, so seed k's prompts are `prompts[k * C:(k + 1) * C]`)."""

    def __init__(self, reader: ShardReader, keys: list[str], prompts: list[ClassPrompt]) -> None:
        self.reader, self.keys, self.prompts = reader, keys, prompts

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> SemanticImage:
        sample = self.reader.sample(self.keys[i])
        return SemanticImage(key=self.keys[i], image=image_tensor(sample), label=semantic_label(sample),
                             prompts=self.prompts)


class SemanticDataModule(EvaluationDataModule):
    """Semantic segmentation of every image of a split, prompted per class by examples of another split.

    Args:
        index: the evaluation split's `<split>-index.json` (e.g. ADE20K validation).
        prompt_index: the split the example prompts come from (e.g. ADE20K training).
        shots: example images per class.
        classes: class ids to segment; None: every class with ground truth in the evaluation split that has
            an example in the prompt split.
        max_images: evaluate only the first N images (quick runs).
        seed: draws the examples of each class; a list draws one set per seed, each scored by `SemanticEvaluation`
            (the paper's Table S1 reports the best of [1000, 2000, 3000, 4000]).

        num_workers: DataLoader processes.
    """

    def __init__(self, index: str, prompt_index: str, shots: int = 1, classes: list[int] | None = None,
                 max_images: int | None = None, seed: int | list[int] = 0, num_workers: int = 0) -> None:
        super().__init__()
        if shots < 1:
            raise ValueError(f"shots must be >= 1, got {shots}")
        seeds = [seed] if isinstance(seed, int) else list(seed)
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"data.seed: give one seed or a list of distinct seeds, got {seed}")
        self.save_hyperparameters()
        self.index, self.prompt_index, self.shots, self.classes = index, prompt_index, shots, classes
        self.max_images, self.seeds, self.num_workers = max_images, seeds, num_workers
        self.dataset: SemanticImages | None = None
        self.class_ids: list[int] = []  # set by setup(): the classes segmented
        self.num_classes = 0  # set by setup(): the size of the label space, background 0 included

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        evaluated = {int(c) for c in read_index(self.index)["class_images"]}
        with_examples = {int(c) for c in read_index(self.prompt_index)["class_images"]}
        if self.classes is None and evaluated - with_examples:
            log.warning("%s: classes %s have no example in %s and are not segmented", self.index,
                        sorted(evaluated - with_examples), self.prompt_index)
        self.class_ids = self.classes or sorted(evaluated & with_examples)
        if not self.class_ids:
            raise ValueError(f"{self.index}: no class with ground truth here has an example in {self.prompt_index}")
        self.num_classes = max(evaluated | set(self.class_ids)) + 1  # ground-truth classes without examples count
        source = ShardReader(self.prompt_index)
        present = image_classes(source, self.class_ids)
        holders = {c: [k for k, ids in present.items() if c in ids] for c in self.class_ids}
        missing = [c for c, keys in holders.items() if not keys]
        if missing:
            raise ValueError(f"{self.prompt_index}: no image holds class {missing[0]}, so it has no example prompt")
        prompts = []
        for seed in self.seeds:
            for class_id, keys in holders.items():
                rng = np.random.default_rng([seed, class_id])
                chosen = rng.choice(len(keys), size=min(self.shots, len(keys)), replace=False)
                samples = [source.sample(keys[i]) for i in sorted(chosen)]
                prompts.append(ClassPrompt(class_id=class_id, images=[image_tensor(s) for s in samples],
                                           labels=[binary_label(s, class_id) for s in samples]))
        reader = ShardReader(self.index)
        keys = [k for k in reader.keys() if "classes" in reader.meta(k)][: self.max_images]
        self.dataset = SemanticImages(reader, keys, prompts)

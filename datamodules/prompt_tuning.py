"""Data for in-context tuning (SegGPT, Wang et al. 2023, §3.3): labelled images of a closed class set.

    data = PromptTuningDataModule(index="shards/ade20k/train-index.json", val_index="shards/ade20k/train-index.json",
                                  val_size=2000, size=(448, 448))

Training items are random resized crops (with flips) at the half-canvas size, `{"image": (3, h, w) uint8,
"label": (h, w) long}` in class ids (void IGNORE_LABEL); validation items are `SemanticImage`s, whole or tiled
(`val_tile`). Validation images drawn from the training split are held out of training, so the prompt is
selected on training images, never on the split it is reported on. `example()` is the one-shot example prompt.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, RandomSampler

from datamodules.augment import flip, random_resized_crop
from datamodules.fewshot import image_tensor
from datamodules.semantic import semantic_label
from datamodules.shards import ShardReader, read_index
from seggpt_lab.canvas import SemanticImage


class LabelledCrops(Dataset):
    """Item i: a random resized crop of image `keys[i]` and its class-id label, flipped half the time; drawn from
    torch's generator, which Lightning seeds and each DataLoader worker reseeds per epoch, so runs repeat."""

    def __init__(self, reader: ShardReader, keys: list[str], size: tuple[int, int], scale: tuple[float, float],
                 flips: bool) -> None:
        self.reader, self.keys, self.size, self.scale, self.flips = reader, keys, tuple(size), tuple(scale), flips

    def __len__(self) -> int:
        return len(self.keys)

    @functools.lru_cache(maxsize=16)  # noqa: B019 (one dataset per run): small splits give many crops per image
    def decoded(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        sample = self.reader.sample(self.keys[i])
        return sample.rgb(), semantic_label(sample).numpy()

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(int(torch.randint(2**62, ())))
        image, label = random_resized_crop(*self.decoded(i), rng, self.size, self.scale)
        if self.flips:
            image, label = flip(image, label, rng)
        return {"image": torch.from_numpy(image.transpose(2, 0, 1).copy()),
                "label": torch.from_numpy(np.ascontiguousarray(label))}


class SemanticTiles(Dataset):
    """Whole images of `keys` as `SemanticImage`s, or every full `tile` x `tile` square of them (row-major)."""

    def __init__(self, reader: ShardReader, keys: list[str], tile: int | None = None) -> None:
        self.reader = reader
        self.items: list[tuple[str, int, int]] = []  # key, top, left
        for key in keys:
            if not tile:
                self.items.append((key, 0, 0))
                continue
            h, w = reader.meta(key)["size"]
            self.items += [(key, y, x) for y in range(0, h - tile + 1, tile) for x in range(0, w - tile + 1, tile)]
        self.tile = tile

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> SemanticImage:
        key, y, x = self.items[i]
        sample = self.reader.sample(key)
        image, label = image_tensor(sample), semantic_label(sample)
        if self.tile:
            box = np.s_[y:y + self.tile, x:x + self.tile]
            image, label, key = image[(slice(None), *box)], label[box], f"{key}-{y}-{x}"
        return SemanticImage(key=key, image=image.contiguous(), label=label.contiguous(), prompts=[])


class PromptTuningDataModule(LightningDataModule):
    """Training crops and validation images of one semantic shard set, for `PromptTuningModule`.

    Args:
        index: the training split's `<split>-index.json`.
        val_index: the validation split's index; None: no validation. It may be `index` itself, with `val_keys`.
        size: (h, w) of the model's half canvas (the crop size).
        classes: class ids the prompt paints; None: every class of the training split (`class_names` from it).
        val_keys: validation images (held out of training when `val_index` is `index`); None: every labelled one.
        val_size: validate on this many of those images, drawn with seed 0 (the same set every run); None: all.

        val_tile: cut validation images into squares of this side (None: whole images).
        batch_size, batches_per_epoch: crops per batch, batches per training epoch (drawn with replacement).
        scale: random resized crop area range.
        flips: random horizontal flips.
        num_workers: DataLoader processes.
    """

    def __init__(self, index: str, val_index: str | None = None, size: tuple[int, int] = (448, 448),
                 classes: list[int] | None = None, val_keys: list[str] | None = None, val_size: int | None = None,
                 val_tile: int | None = None, batch_size: int = 8, batches_per_epoch: int = 100,
                 scale: tuple[float, float] = (0.3, 1.0), flips: bool = True, num_workers: int = 0) -> None:
        super().__init__()
        if batch_size < 1 or batches_per_epoch < 1 or (val_tile is not None and val_tile < 1):
            raise ValueError(f"data: need batch_size >= 1, batches_per_epoch >= 1 and val_tile >= 1; got {batch_size},"
                             f" {batches_per_epoch}, {val_tile}")
        if val_size is not None and val_size < 1:
            raise ValueError(f"data.val_size: need >= 1 (or null for every validation image), got {val_size}")
        self.save_hyperparameters()
        self.class_ids: list[int] = []  # set by setup()
        self.class_names: list[str] = []
        self.train_set: LabelledCrops | None = None
        self.val_set: SemanticTiles | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        reader = ShardReader(hp.index)
        names = {int(c): name for c, name in read_index(hp.index).get("classes", {}).items()}
        present = {int(c) for c in read_index(hp.index)["class_images"]}
        self.class_ids = sorted(hp.classes) if hp.classes is not None else sorted(present - {0})
        if not self.class_ids:
            raise ValueError(f"{hp.index}: no class to tune a prompt for (the split holds no labelled class)")
        self.class_names = [names.get(c, str(c)) for c in self.class_ids]
        held_out: set[str] = set()
        if hp.val_index is not None:
            val_reader = reader if Path(hp.val_index) == Path(hp.index) else ShardReader(hp.val_index)
            keys = hp.val_keys if hp.val_keys is not None else [k for k in val_reader.keys()
                                                                 if "classes" in val_reader.meta(k)]
            unknown = sorted(set(keys) - set(val_reader.keys()))
            if unknown:
                raise ValueError(f"data.val_keys: {unknown[:3]} are not in {hp.val_index}")
            if hp.val_size is not None:
                if hp.val_size > len(keys):
                    raise ValueError(f"data.val_size: {hp.val_size} asked for, {hp.val_index} has {len(keys)}")
                keys = [keys[i] for i in sorted(np.random.default_rng(0).choice(len(keys), hp.val_size, replace=False))]
            if val_reader is reader:
                held_out = set(keys)
            self.val_set = SemanticTiles(val_reader, keys, hp.val_tile)
        keys = [k for k in reader.keys() if "classes" in reader.meta(k) and k not in held_out]
        if not keys:
            raise ValueError(f"{hp.index}: no labelled training image left (val_keys hold them all)")
        self.train_set = LabelledCrops(reader, keys, hp.size, hp.scale, hp.flips)

    def example(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The one-shot example: the training image with the most of `class_ids`, (3, H, W) uint8 and labels."""
        self.setup()
        reader, wanted = self.train_set.reader, set(self.class_ids)
        counts = [len(wanted & {int(c) for c in reader.meta(k)["classes"]}) for k in self.train_set.keys]
        sample = reader.sample(self.train_set.keys[int(np.argmax(counts))])
        return image_tensor(sample), semantic_label(sample)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        hp = self.hparams
        sampler = RandomSampler(self.train_set, replacement=True, num_samples=hp.batch_size * hp.batches_per_epoch)
        return DataLoader(self.train_set, batch_size=hp.batch_size, sampler=sampler, num_workers=hp.num_workers,
                          drop_last=True, persistent_workers=hp.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=None, num_workers=self.hparams.num_workers)

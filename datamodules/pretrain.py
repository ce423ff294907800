"""The pretraining data: a weighted mixture of shard sets -> in-context pairs -> coloured, augmented canvases (SegGPT,
Wang et al. 2023, §3.1 and §4), as `PretrainDataModule`; in each DataLoader worker `PretrainStream.stream` reads
samples -> pairs -> groups -> examples -> batches.

Everything random in a worker is seeded by (seed, rank, worker, pass) (`shards.SeededStream`); the pass counter is the
loader's state, so `--ckpt_path last` goes on with fresh passes. Every rank yields `batches_per_epoch` batches per
epoch whatever its shard count (no DDP hang); each batch carries its worker's running counts (`stats`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import webdataset as wds
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from datamodules import remote
from datamodules.augment import PairTransform, UnfinishedBatch, check_scale, finish_batch
from datamodules.fewshot import FewShotEpisodes, image_classes, plan_episodes
from datamodules.pairing import Pair, PairSampler, source_of
from datamodules.prompt_swap import PromptSwapQueries, object_areas, plan_swaps
from datamodules.remote import Network
from datamodules.schema import IMAGE_ERRORS, SEM_VOID, InvalidSample, Sample, SampleError
from datamodules.shards import (
    EpochLoader,
    MixedStream,
    SeededStream,
    ShardReader,
    SkipCounter,
    rank_shards,
    sample_stream,
    shard_sizes,
    shard_urls,
    with_epoch,
)
from seggpt_lab.canvas import InContextBatch

log = logging.getLogger(__name__)
Task = Literal["semantic", "instance", "panoptic"]
# what a bad sample can raise in pairing and augmentation, after `schema.validate` passed it: PIL decoding a
# corrupt image body, and `InvalidSample` from a label map decoded only now (`Sample.label`)
SAMPLE_ERRORS = (SampleError, *IMAGE_ERRORS)


@dataclass
class ShardSource:
    """One shard set of the mixture.

    Args:
        path: a folder written by `seggpt-lab-data convert` (DIR/SOURCE, read through `<split>-index.json`), an index
            file, or a webdataset URL pattern (`https://host/ade20k/train-{000000..000099}.tar`, `pipe:...`).
        weight: relative sampling weight (> 0): source i is drawn with probability w_i / sum(w).
        task: pair the samples as this task (e.g. "instance" for a panoptic source); None: each sample's own.
        split: the split read from a folder.
        name: for logs; default: the folder's name.
        convert: convert a folder without the split's index first (rank 0, `prepare_data`): `{"source": NAME,
            "root": ..., **source arguments}`, e.g. `{"source": "synthetic", "samples": 4000, "size": 64}`.
        scale: this source's crop area range instead of the transform's, for high-resolution images (SegGPT §4.1
            crops the retinal sets more); a mix-context example takes that of the pair completing its group.
    """

    path: str
    weight: float = 1.0
    task: Task | None = None
    split: str = "train"
    name: str | None = None
    convert: dict[str, Any] | None = None
    scale: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.scale is not None:
            self.scale = tuple(self.scale)
            check_scale(self.scale)

    @property
    def label(self) -> str:
        return self.name or remote.basename(self.path.split("{")[0].rstrip("/")) or self.path

    def is_pattern(self) -> bool:
        """A webdataset URL pattern, a shard or a `pipe:` command, read without an index."""
        return "{" in self.path or self.path.endswith(".tar") or self.path.startswith("pipe:")

    def index_file(self) -> str:
        """The split's index: `path` itself when it names a .json file, else `path/<split>-index.json`."""
        return self.path if self.path.endswith(".json") else remote.join(self.path, f"{self.split}-index.json")

    def urls(self, network: Network = Network()) -> list[str]:
        """The shard URLs, checked: a one-line error naming the path when nothing is there (a remote shard that has
        gone is found, and skipped, when read)."""
        if self.is_pattern():
            urls = wds.shardlists.expand_urls(self.path)
            local = [u for u in urls if not remote.is_remote(u) and not u.startswith("pipe:")]
            missing = [u for u in local if not Path(u).is_file()]
            if not urls or missing:
                raise FileNotFoundError(f"source {self.label}: the pattern {self.path} matches no shard"
                                        + (f" ({len(missing)} of {len(urls)} missing, first {missing[0]})" if missing
                                           else ""))
            return urls
        index = self.index_file()
        if not remote.exists(index, network):
            raise FileNotFoundError(f"source {self.label}: {index} does not exist; convert the dataset first "
                                    f"(seggpt-lab-data convert SOURCE --split {self.split} --out ...) or give "
                                    "`convert` in the source's config")
        urls = shard_urls(index, network)
        missing = [] if remote.is_remote(index) else [u for u in urls if not Path(u).is_file()]
        if not urls or missing:
            raise FileNotFoundError(f"source {self.label}: {index} lists {len(urls)} shards"
                                    + (f", {len(missing)} missing (first {missing[0]})" if missing else ""))
        return urls

    def sizes(self, network: Network = Network()) -> dict[str, int]:
        """{shard: sample count} from the index, to count what a damaged shard loses; {} for a URL pattern."""
        return {} if self.is_pattern() else shard_sizes(self.index_file(), network)

    def ensure_converted(self, network: Network = Network()) -> None:
        """Run the `convert` spec when the split's index is missing (into a local folder or object storage); shards
        made with another spec (recorded in `<split>-convert.json`) are refused with a one-line error, so a changed
        setting cannot go unnoticed."""
        if self.convert is None or self.is_pattern():
            return
        record = remote.join(self.path, f"{self.split}-convert.json")
        if remote.exists(self.index_file(), network):
            # no record: converted by hand, or before specs were recorded; nothing to compare
            recorded = remote.read_text(record, network) if remote.exists(record, network) else None
            if recorded is None:
                log.warning("source %s: %s holds %s shards without a record of how they were made; they are used "
                            "as if made with %s (delete the folder to convert again)", self.label, self.path,
                            self.split, json.dumps(self.convert))
            elif json.loads(recorded) != self.convert:
                raise ValueError(f"source {self.label}: {self.path} holds {self.split} shards converted with "
                                 f"{recorded}, not {json.dumps(self.convert)}; delete the folder to "
                                 "convert again, or point path elsewhere")
            return
        from datamodules.convert import convert
        from datamodules.sources import get_source

        spec = dict(self.convert)
        name = spec.pop("source", None)
        if name is None:
            raise ValueError(f"source {self.label}: `convert` needs a `source` key (a seggpt-lab-data source name)")
        if remote.basename(self.path) != name:
            raise ValueError(f"source {self.label}: converted shards land in OUT/{name}; set path to .../{name}")
        log.info("converting %s (%s) into %s", name, self.split, self.path)
        convert(get_source(name)(spec.pop("root", None), self.split, **spec), remote.parent(self.path),
                network=network)
        output = remote.Output(self.path, network)
        try:
            output.write(remote.basename(record), json.dumps(self.convert).encode())
        finally:
            output.close()


@dataclass
class _Stream:
    """What a worker needs to read one source: picklable, built per rank in `setup`."""

    name: str
    urls: list[str]
    weight: float
    task: Task | None
    skips: SkipCounter = field(default_factory=SkipCounter)
    sizes: dict[str, int] = field(default_factory=dict)  # {shard: sample count}, from the index
    scale: tuple[float, float] | None = None  # the source's crop area range (None: the transform's)
    network: Network = field(default_factory=Network)  # retries, timeouts, shards in flight of remote shards


class PretrainStream(SeededStream):
    """One rank's endless stream of training batches; see the module docstring."""

    def __init__(self, streams: list[_Stream], transform: PairTransform, sampler: PairSampler, batch_size: int,
                 seed: int, rank: int, shuffle: int, mix_prob: float, mix_pairs: int) -> None:
        super().__init__(seed, rank)
        self.streams, self.transform, self.sampler, self.batch_size = streams, transform, sampler, batch_size
        self.mix_prob, self.mix_pairs = mix_prob, mix_pairs
        # every source its own seed: the same base seed would shuffle equal-sized sources alike
        # lazy labels: a pair colours one of a sample's maps, and the partner buffer holds samples, not decoded maps
        self.samples = MixedStream([sample_stream(s.urls, seed + 1 + i, resampled=True, shuffle=shuffle,
                                                  handler=s.skips, rank=rank, sizes=s.sizes, lazy_labels=True,
                                                  network=s.network)
                                    for i, s in enumerate(streams)], [s.weight for s in streams], seed, rank)

    def stream(self, seed: int, worker: int, epoch: int) -> Iterator[InContextBatch | UnfinishedBatch]:
        """The pretraining data path of one DataLoader worker in one pass, stage by stage."""
        sampler, rng = self.sampler.fresh(seed), np.random.default_rng([seed, 1])
        counts = {"examples": 0, "mixed": 0}
        samples = self.samples.iterate(worker, epoch)  # shards -> samples, mixed by weight: (source index, Sample)
        pairs = self._pairs(samples, sampler)  # -> pairs: a same-category partner or a second view
        groups = self._groups(pairs, rng)  # -> one pair, or `mix_pairs` semantic pairs of one source
        examples = self._examples(groups, sampler, rng, counts)  # -> views -> colouring -> masks (PairTransform)
        yield from self._batches(examples, sampler, worker, counts)  # -> batches (collate), with the running counts

    def _pairs(self, samples: Iterator[tuple[int, Sample]], sampler: PairSampler) -> Iterator[tuple[int, Pair]]:
        """Each sample as the query of a pair, with its source's index; a sample with nothing to colour is skipped."""
        for index, sample in samples:
            source = self.streams[index]
            if source.task is not None:
                sample.meta["task"] = source.task  # our own freshly decoded sample: no one else holds it
            pair = sampler.pair(sample)
            if pair is None:
                source.skips.skip("unpaired", sample.key)
                continue
            yield index, pair

    def _groups(self, pairs: Iterator[tuple[int, Pair]], rng: np.random.Generator
                ) -> Iterator[tuple[int, list[Pair]]]:
        """The pairs of one example: a pair alone, or with probability `mix_prob` a semantic pair held until
        `mix_pairs` pairs of its source are there, for one mix-context example (with the last one's source index)."""
        pending: dict[str, list[Pair]] = {}  # source -> semantic pairs waiting for a mix-context group
        for index, pair in pairs:
            if not (pair.label == "sem" and self.mix_prob > 0 and rng.random() < self.mix_prob):
                yield index, [pair]
                continue
            group = pending.setdefault(source_of(pair.query), [])
            group.append(pair)
            if len(group) == self.mix_pairs:
                complete = group.copy()
                group.clear()
                yield index, complete

    def _examples(self, groups: Iterator[tuple[int, list[Pair]]], sampler: PairSampler, rng: np.random.Generator,
                  counts: dict[str, int]) -> Iterator[dict]:
        """Each group as one example (`PairTransform`), at its source's crop scale; a group whose images or labels do
        not decode, or whose crops leave nothing coloured in view, is skipped."""
        for index, pairs in groups:
            source, key = self.streams[index], pairs[-1].query.key  # the sample that completed the group
            try:
                example = (self.transform.mixed(pairs, rng, source.scale) if len(pairs) > 1
                           else self.transform(pairs[0], rng, source.scale))
            except SAMPLE_ERRORS as e:  # an image or label map that does not decode or check; any other error is a bug
                sampler.discard(*(s for p in pairs for s in (p.prompt, p.query)))
                source.skips.skip(e.reason if isinstance(e, InvalidSample) else "image_data", f"{key}: {e}")
                continue
            if not example.pop("coloured"):  # the crops left none of the pair's coloured labels in view
                source.skips.skip("empty", key)
                continue
            counts["mixed"] += len(pairs) > 1
            counts["examples"] += 1
            yield example

    def _batches(self, examples: Iterator[dict], sampler: PairSampler, worker: int, counts: dict[str, int]
                 ) -> Iterator[InContextBatch | UnfinishedBatch]:
        """`batch_size` examples a batch (fewer in the last, should the stream end), with the worker's counts."""
        while chunk := list(islice(examples, self.batch_size)):
            batch = collate(chunk)
            batch["stats"] = self._stats(worker, sampler, counts)
            yield batch

    def _stats(self, worker: int, sampler: PairSampler, counts: dict[str, int]) -> dict[str, float]:
        stats = {f"pairs/{k}": v for k, v in sampler.stats().items()}
        stats.update({f"data/{k}": v for k, v in counts.items()})
        for s in self.streams:
            reasons = {f"skipped/{s.name}/{reason}": n for reason, n in s.skips.counts.items()}
            stats[f"read/{s.name}"] = s.skips.seen
            stats[f"skipped/{s.name}"] = sum(reasons.values())
            stats.update(reasons)
        return {"worker": worker, **stats}


def collate(examples: list[dict[str, np.ndarray | int]]) -> InContextBatch | UnfinishedBatch:
    """The stream's last stage: `PairTransform` examples -> an `InContextBatch` of uint8 canvases, or with `on_device`
    an `UnfinishedBatch`, its palettes padded with rows (SEM_VOID, 0, 0, 0), which paint nothing."""
    if not examples:
        raise ValueError("collate needs at least one example")

    def stack(key: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([e[key] for e in examples]))

    batch = {key: stack(key) for key in ("image_canvas", "target_canvas", "valid", "label_canvas", "bool_masked_pos",
                                         "jitter", "flip")  # (B, 2, 3, 7) and (B, 2), for `finish_batch`
             if key in examples[0]}
    batch["seg_type"] = torch.tensor([e["seg_type"] for e in examples], dtype=torch.long)
    if "palette" in examples[0]:
        palette = np.zeros((len(examples), max(len(e["palette"]) for e in examples), 4), np.int32)
        palette[..., 0] = SEM_VOID
        for row, e in zip(palette, examples, strict=True):
            row[: len(e["palette"])] = e["palette"]
        batch["palette"] = torch.from_numpy(palette)
    return batch


class PretrainDataModule(LightningDataModule):
    """SegGPT's pretraining data from shard sets, and one-shot episodes for validation.

    Args:
        sources: the mixture (`ShardSource`); the paper's weights are in recipes/pretrain_vit_l.yaml.
        transform: a pair -> one example (`PairTransform`), its `size` and `patch_size` fitting the model (checked at
            setup). With `on_device: true`, `train_dataloader()` yields `UnfinishedBatch`es, finished on the
            accelerator by `on_after_batch_transfer` (the same distribution; BENCHMARKS.md §7).
        sampler: samples -> pairs (`PairSampler`); each worker pairs with a `fresh` copy seeded from `seed`.
        val: a shard set for one-shot validation episodes (classes drawn uniformly); None: no validation.
        batch_size: pairs per batch per rank (before gradient accumulation).
        num_workers: DataLoader processes per rank; each reads every source's shards of this rank.
        batches_per_epoch: batches every rank yields per epoch (the logging and validation unit).
        seed: seeds every worker's stream as (seed, rank, worker, pass) and the validation episodes; None: the run's
            seed_everything (0 without one).
        shuffle: sample shuffle buffer per source and worker.
        mix_prob: probability that a semantic pair goes into a mix-context example instead of its own.
        mix_pairs: pairs per mix-context example (the paper: "several"; 2 is our choice).
        val_episodes: validation episodes.
        val_min_pixels: smallest class area for an episode.
        val_classes: class ids to validate on; None: every class in `val`.
        val_swap_queries: prompt-swap queries (`datamodules.prompt_swap`: `val/S`, `val/A`...) from the `val` images
            holding two classes; 0: none; None: every usable image.
        pin_memory: page-locked batches, for GPU training.
        max_skip_rate: stop with an error naming the source when more than this share of its samples is corrupt;
            fewer are skipped and counted (`skipped/<source>`); samples with nothing to colour are not judged.
        skip_rate_min_samples: samples a worker reads from a source before its skip rate is judged.
        network: how shards on object storage or HTTP(S) are read: retries with back-off, timeouts, shards in flight
            per worker (`remote.Network`); a shard that still fails is skipped (`skipped/<source>/network`).
    """

    def __init__(
        self,
        sources: list[ShardSource],
        transform: PairTransform,
        sampler: PairSampler,
        val: ShardSource | None = None,
        batch_size: int = 8,
        num_workers: int = 4,
        batches_per_epoch: int = 1000,
        seed: int | None = None,
        shuffle: int = 500,
        mix_prob: float = 0.0,
        mix_pairs: int = 2,  # our choice (no source gives one)
        val_episodes: int = 200,
        val_min_pixels: int = 16,
        val_classes: list[int] | None = None,
        val_swap_queries: int | None = 0,
        pin_memory: bool = False,
        max_skip_rate: float = 0.1,
        skip_rate_min_samples: int = 200,
        network: Network = Network(),
    ) -> None:
        super().__init__()
        if not sources:
            raise ValueError("data.sources: the mixture needs at least one shard source")
        for i, source in enumerate(sources):
            if not source.weight > 0:
                raise ValueError(f"data.sources[{i}] ({source.label}): weight must be > 0, got {source.weight}")
        if batch_size < 1 or num_workers < 0 or batches_per_epoch < 1 or mix_pairs < 2 or not 0 <= mix_prob <= 1:
            raise ValueError("data: need batch_size >= 1, num_workers >= 0, batches_per_epoch >= 1, mix_pairs >= 2 "
                             f"and 0 <= mix_prob <= 1; got {batch_size}, {num_workers}, {batches_per_epoch}, "
                             f"{mix_pairs}, {mix_prob}")
        if not 0 <= max_skip_rate <= 1 or skip_rate_min_samples < 1:
            raise ValueError(f"data: need 0 <= max_skip_rate <= 1 and skip_rate_min_samples >= 1, got {max_skip_rate} "
                             f"and {skip_rate_min_samples}")
        self.save_hyperparameters()
        if seed is None:  # Lightning's global seed (seed_everything), as its own worker seeding takes it
            self.hparams.seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        self.sources, self.val = list(sources), val
        self.transform, self.sampler, self.network = transform, sampler, network
        self.dataset: PretrainStream | None = None
        self.val_dataset: FewShotEpisodes | None = None
        self.val_swaps: PromptSwapQueries | None = None
        self.swap_kinds = ["all"]  # the distractor kinds of the validation swaps (one: no grouping here)
        self.class_ids: list[int] = []  # the validation classes, set by setup
        self._loader: EpochLoader | None = None

    def prepare_data(self) -> None:
        for source in [*self.sources, *([self.val] if self.val else [])]:
            source.ensure_converted(self.network)

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        self._check_model()
        hp = self.hparams
        streams = [_Stream(s.label, rank_shards(s.urls(self.network), rank, world), s.weight, s.task,
                           SkipCounter(s.label, hp.max_skip_rate, hp.skip_rate_min_samples), s.sizes(self.network),
                           s.scale,
                           self.network)
                   for s in self.sources]
        self.dataset = PretrainStream(streams, self.transform, self.sampler, hp.batch_size, hp.seed, rank, hp.shuffle,
                                      hp.mix_prob, hp.mix_pairs)
        if self.val is not None:
            reader = ShardReader(self.val.index_file(), self.network)
            present = image_classes(reader, hp.val_classes, hp.val_min_pixels)
            plan, _ = plan_episodes(present, 1, hp.val_episodes, "class_uniform", hp.seed, hp.val_classes)
            self.val_dataset = FewShotEpisodes(reader, plan)
            self.class_ids = list(hp.val_classes) if hp.val_classes else sorted({e.class_id for e in plan})
            if hp.val_swap_queries != 0:
                areas, _ = object_areas(reader)
                swaps = plan_swaps(areas, min_pixels=hp.val_min_pixels, queries=hp.val_swap_queries, seed=hp.seed)
                if not swaps:
                    raise ValueError(f"data.val_swap_queries: no image of {self.val.index_file()} holds two classes "
                                     "that other images can prompt; set it to 0 or validate on multi-object scenes")
                self.val_swaps = PromptSwapQueries(reader, swaps, "categories", self.swap_kinds)

    def _check_model(self) -> None:
        """The transform's views must tile the model's canvas: one line naming the keys, before any worker starts."""
        model = getattr(getattr(self.trainer, "lightning_module", None), "model", None)
        img_size, patch_size = getattr(model, "img_size", None), getattr(model, "patch_size", None)
        size, canvas = self.transform.size, (2 * self.transform.size[0], self.transform.size[1])
        if img_size is not None and (tuple(img_size) != canvas or patch_size != self.transform.patch_size):
            raise ValueError(f"data.transform.init_args.size {list(size)} and patch_size {self.transform.patch_size} "
                             f"do not fit the model (img_size {list(img_size)}, patch_size {patch_size}): a canvas "
                             f"is two views stacked, so size must be [{img_size[0] // 2}, {img_size[1]}] and "
                             "patch_size the model's")

    def train_dataloader(self) -> EpochLoader:
        if self._loader is None:  # one loader for the whole run: its pass counter seeds the epochs
            hp = self.hparams
            # batch_size None: the stream batches (its last stage), so that each batch carries its worker's counts
            self._loader = with_epoch(self.dataset, hp.batches_per_epoch, None, num_workers=hp.num_workers,
                                      pin_memory=hp.pin_memory, prefetch_factor=4 if hp.num_workers else None)
        return self._loader

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return finish_batch(batch) if isinstance(batch, dict) else batch

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is None:
            return []
        loaders = [DataLoader(d, batch_size=None, num_workers=min(self.hparams.num_workers, 2))
                   for d in (self.val_dataset, self.val_swaps) if d is not None]
        return loaders if len(loaders) > 1 else loaders[0]


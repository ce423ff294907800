"""The streaming pipeline: per-rank shard lists, sample streams, weighted mixing, fixed-length epochs."""

from __future__ import annotations

import itertools
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest
import webdataset as wds
from torch.utils.data import DataLoader

from datamodules.convert import convert
from datamodules.shards import (
    SkipCounter,
    iter_raw,
    mixed_stream,
    rank_shards,
    sample_stream,
    shard_urls,
    with_epoch,
    worker_seed,
)
from datamodules.sources.synthetic import Synthetic


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 synthetic val samples in 6 shards of 10, and 20 train samples in 2 shards."""
    out = tmp_path_factory.mktemp("shards")
    convert(Synthetic(None, "val", samples=60, size=32), out, shard_size=10, progress=False)
    convert(Synthetic(None, "train", samples=20, size=32), out, shard_size=10, progress=False)
    return out / "synthetic"


@pytest.fixture(scope="module")
def urls(root: Path) -> list[str]:
    return shard_urls(root / "val-index.json")


@pytest.fixture(scope="module")
def all_keys(root: Path) -> list[str]:
    return [raw["__key__"] for raw in iter_raw(root / "val-index.json")]


def keys(samples) -> list[str]:
    return [s.key for s in samples]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 6])
def test_rank_split_is_disjoint_and_complete(urls: list[str], world_size: int) -> None:
    parts = [rank_shards(urls, r, world_size) for r in range(world_size)]
    assert sorted(u for p in parts for u in p) == sorted(urls)  # complete and disjoint
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parts == [rank_shards(urls, r, world_size) for r in range(world_size)]  # deterministic


def test_fewer_shards_than_ranks_repeats_round_robin(urls: list[str]) -> None:
    parts = [rank_shards(urls, r, 8) for r in range(8)]
    assert all(len(p) == 1 for p in parts) and {p[0] for p in parts} == set(urls)
    with pytest.raises(ValueError, match="rank"):
        rank_shards(urls, 8, 8)
    with pytest.raises(ValueError, match="no shard"):
        rank_shards([], 0, 1)


def test_fixed_stream_over_all_ranks_reads_every_sample_once(urls: list[str], all_keys: list[str]) -> None:
    world_size = 4
    seen = []
    for rank in range(world_size):
        seen += keys(sample_stream(rank_shards(urls, rank, world_size), seed=0, resampled=False, rank=rank))
    assert len(all_keys) == 60 and sorted(seen) == sorted(all_keys)


def test_fixed_stream_without_shuffle_keeps_shard_order(urls: list[str], all_keys: list[str]) -> None:
    assert keys(sample_stream(urls, seed=0, resampled=False, shuffle=0)) == all_keys


def test_resampled_stream_yields_the_requested_count(urls: list[str]) -> None:
    loader = with_epoch(sample_stream(urls, seed=1), batches_per_rank=7, batch_size=4, collate_fn=list)
    batches = list(loader)
    assert len(loader) == len(batches) == 7 and all(len(b) == 4 for b in batches)
    assert len(list(islice(sample_stream(urls, seed=1), 150))) == 150  # resampled: never runs dry


def test_worker_seeds_differ_across_ranks_workers_and_epochs() -> None:
    grid = list(itertools.product(range(3), range(4), range(4), range(3)))
    seeds = [worker_seed(*args) for args in grid]
    assert len(set(seeds)) == len(grid) and all(0 <= s < 2**64 for s in seeds)
    assert worker_seed(0, 1, 2, 3) == worker_seed(0, 1, 2, 3)
    with pytest.raises(ValueError):
        worker_seed(0, -1, 0)


def test_stream_is_deterministic_by_seed_rank_and_epoch(urls: list[str]) -> None:
    def first(seed: int, rank: int = 0, epoch: int = 0, resampled: bool = True) -> list[str]:
        stream = sample_stream(urls, seed=seed, rank=rank, resampled=resampled, shuffle=20)
        stream.set_epoch(epoch)
        return keys(islice(stream, 40))

    assert first(3) == first(3) and first(3, resampled=False) == first(3, resampled=False)
    assert first(3) != first(4) and first(3) != first(3, rank=1) and first(3) != first(3, epoch=1)
    # the loader reseeds each pass, so two epochs of one loader differ, and a new loader replays both
    a, b = (with_epoch(sample_stream(urls, seed=3), 3, 4, collate_fn=list) for _ in range(2))
    epochs_a = [[keys(batch) for batch in a] for _ in range(2)]
    assert epochs_a[0] != epochs_a[1] and epochs_a == [[keys(batch) for batch in b] for _ in range(2)]


def test_corrupt_sample_is_skipped_and_counted(tmp_path: Path, urls: list[str], all_keys: list[str]) -> None:
    shard = tmp_path / "bad-000000.tar"
    raws = list(wds.WebDataset(urls[0], shardshuffle=False, empty_check=False))
    raws[3]["json"] = b"{not json"
    with wds.TarWriter(str(shard)) as writer:
        for raw in raws:
            writer.write({k: v for k, v in raw.items() if k == "__key__" or not k.startswith("__")})
    counter = SkipCounter("bad")
    seen = keys(sample_stream([str(shard), *urls[1:]], seed=0, resampled=False, shuffle=0, handler=counter))
    assert seen == all_keys[:3] + all_keys[4:]
    assert counter.total == 1 and counter.counts == {"JSONDecodeError": 1}
    assert str(counter) == "bad: skipped 1 (JSONDecodeError: 1)"


def test_truncated_shard_is_skipped_and_counted(tmp_path: Path, urls: list[str], all_keys: list[str]) -> None:
    shard = tmp_path / "cut-000000.tar"
    shard.write_bytes(Path(urls[0]).read_bytes()[:-5000])  # cut inside the last sample's members
    counter = SkipCounter("cut")
    seen = keys(sample_stream([str(shard), *urls[1:]], seed=0, resampled=False, shuffle=0, handler=counter))
    assert counter.total >= 1 and seen[-50:] == all_keys[10:]  # later shards are read in full
    assert set(seen) <= set(all_keys) and len(seen) < 60


def test_weighted_mixing_follows_the_weights(root: Path, urls: list[str]) -> None:
    val = sample_stream(urls, seed=0)
    train = sample_stream(shard_urls(root / "train-index.json"), seed=0)
    drawn = list(islice(mixed_stream([val, train], [3.0, 1.0], seed=5), 600))
    mixed = [s for _, s in drawn]
    assert all(s.meta["split"] == ("val", "train")[i] for i, s in drawn)  # each item with its stream's index
    splits = Counter(s.meta["split"] for s in mixed)
    assert abs(splits["val"] / 600 - 0.75) < 0.06  # binomial sd ~0.018: a 3.4-sigma tolerance
    assert keys(mixed[:50]) == keys(s for _, s in islice(mixed_stream([val, train], [3.0, 1.0], seed=5), 50))
    with pytest.raises(ValueError, match="one weight per stream"):
        mixed_stream([val, train], [1.0], seed=0)


@pytest.mark.parametrize("resampled", [True, False])
def test_every_rank_runs_the_same_number_of_batches(urls: list[str], resampled: bool) -> None:
    world_size, batches = 4, 5  # 6 shards over 4 ranks: 20, 20, 10, 10 samples
    per_rank = []
    for rank in range(world_size):
        stream = sample_stream(rank_shards(urls, rank, world_size), seed=0, resampled=resampled, rank=rank)
        per_rank.append(list(with_epoch(stream, batches, batch_size=4, collate_fn=list)))
    assert [len(b) for b in per_rank] == [batches] * world_size
    # the loader never exposes a per-worker count: two workers still give exactly `batches` (rank 0 has 2 shards,
    # one per worker: a fixed stream refuses more workers than shards, test_reliability.py)
    stream = sample_stream(rank_shards(urls, 0, world_size), seed=0, resampled=resampled, rank=0)
    assert len(list(with_epoch(stream, batches, batch_size=4, num_workers=2, collate_fn=list))) == batches


def test_workers_split_fixed_shards_disjointly(urls: list[str], all_keys: list[str]) -> None:
    stream = sample_stream(urls, seed=0, resampled=False)
    seen = [key for batch in DataLoader(stream, batch_size=4, num_workers=2, collate_fn=keys) for key in batch]
    assert len(seen) == 60 and sorted(seen) == sorted(all_keys)


def test_empty_stream_raises_instead_of_hanging(tmp_path: Path) -> None:
    empty = tmp_path / "empty-000000.tar"
    wds.TarWriter(str(empty)).close()
    loader = with_epoch(sample_stream([str(empty)], seed=0, resampled=False), 2, 4, collate_fn=list)
    with pytest.raises(RuntimeError, match="no batch"):
        list(loader)

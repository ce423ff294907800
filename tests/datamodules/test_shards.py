"""ShardReader: random access by key to a shard set, checked against the webdataset stream of the same shards."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from datamodules.convert import convert
from datamodules.shards import ShardReader, iter_raw, iter_samples, shard_urls
from datamodules.sources.synthetic import Synthetic


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7 synthetic samples in 3 shards (3 + 3 + 1)."""
    out = tmp_path_factory.mktemp("shards")
    convert(Synthetic(None, "val", samples=7, size=32), out, shard_size=3, progress=False)
    return out / "synthetic" / "val-index.json"


def test_reader_matches_the_stream(index: Path) -> None:
    reader = ShardReader(index)
    streamed = list(iter_samples(index))
    assert len(reader) == 7 and len(shard_urls(index)) == 3
    assert reader.keys() == [s.key for s in streamed]  # shard order
    for expected in reversed(streamed):  # random access: any order
        sample = reader.sample(expected.key)
        assert reader.meta(expected.key) == sample.meta == expected.meta
        assert sample.key == expected.key and sample.image == expected.image and sample.image_ext == "png"
        assert np.array_equal(sample.sem, expected.sem) and np.array_equal(sample.ins, expected.ins)


def test_reader_locates_every_member_exactly(index: Path) -> None:
    reader = ShardReader(index)
    for raw in iter_raw(index):
        members = reader.members[raw["__key__"]]
        assert set(members) == {"png", "json", "sem.png", "ins.png"} == {k for k in raw if not k.startswith("__")}
        for ext, (shard, offset, size) in members.items():
            assert shard == raw["__url__"]
            with open(shard, "rb") as f:
                f.seek(offset)
                assert f.read(size) == raw[ext]


def test_reader_pickles_for_workers(index: Path) -> None:
    reader = pickle.loads(pickle.dumps(ShardReader(index)))
    key = reader.keys()[4]
    assert reader.sample(key).meta == reader.meta(key) and reader.meta(key)["file"] == "val/000004.png"


def test_reader_errors_name_what_is_missing(index: Path, tmp_path: Path) -> None:
    reader = ShardReader(index)
    with pytest.raises(KeyError, match=r"synthetic__val-000099: no such sample in .*val-index\.json"):
        reader.sample("synthetic__val-000099")
    with pytest.raises(KeyError, match=r"synthetic__nope: no such sample"):
        reader.meta("synthetic__nope")
    with pytest.raises(FileNotFoundError, match=r"nowhere-index\.json: no such index file"):
        ShardReader(tmp_path / "nowhere-index.json")

    copy = tmp_path / "synthetic"
    copy.mkdir()
    for path in index.parent.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / "val-000001.tar").unlink()
    with pytest.raises(FileNotFoundError, match=r"val-000001\.tar: shard listed in .*val-index\.json is missing"):
        ShardReader(copy / "val-index.json")

"""Reading shard sets written by `seggpt-lab-data convert`: their index, their URLs, their samples.

Streams (`iter_raw`, `iter_samples`) go through webdataset and so read any URL it opens; `ShardReader`
gives random access by key to a local shard set, for evaluation loaders that pick samples by key.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import webdataset as wds

from datamodules.schema import Sample, decode


def find_indexes(folder: str | Path) -> list[Path]:
    """The `<split>-index.json` files of a source folder, sorted; a one-line error when there are none."""
    folder = Path(folder)
    found = sorted(folder.glob("*-index.json"))
    if not found:
        raise FileNotFoundError(f"{folder}: no <split>-index.json here; convert a source into it first "
                                "(seggpt-lab-data convert SOURCE --out ...)")
    return found


def read_index(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def shard_urls(index_file: str | Path) -> list[str]:
    """Paths of the shards an index lists, in order."""
    index_file = Path(index_file)
    return [str(index_file.parent / s["name"]) for s in read_index(index_file)["shards"]]


def iter_raw(index_file: str | Path) -> Iterator[dict[str, bytes]]:
    """Every sample of one split, in shard order, as undecoded tar members."""
    yield from wds.WebDataset(shard_urls(index_file), shardshuffle=False, empty_check=False)


def iter_samples(index_file: str | Path) -> Iterator[Sample]:
    """Every sample of one split, in shard order, decoded to Sample."""
    return map(decode, iter_raw(index_file))


# webdataset's `base_plus_ext`: the key is the name up to the first dot of its last path part
_MEMBER = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
Location = tuple[str, int, int]  # (shard path, payload offset, payload size)


class ShardReader:
    """Random access by key to a local shard set, from its `<split>-index.json`.

    The tar headers are scanned once (no payload is read); each read then opens the shard, seeks and
    reads only the members it needs, so a reader is cheap to pickle into DataLoader workers.
    """

    def __init__(self, index_file: str | Path) -> None:
        self.index_file = Path(index_file)
        if not self.index_file.is_file():
            raise FileNotFoundError(f"{self.index_file}: no such index file; convert a source first "
                                    "(seggpt-lab-data convert SOURCE --out ...)")
        self.members: dict[str, dict[str, Location]] = {}
        for shard in shard_urls(self.index_file):
            if not Path(shard).is_file():
                raise FileNotFoundError(f"{shard}: shard listed in {self.index_file} is missing")
            with tarfile.open(shard, "r:") as tar:  # uncompressed: iterating seeks from header to header
                for info in tar:
                    match = _MEMBER.match(info.name)
                    if not info.isfile() or match is None:
                        continue
                    key, ext = match.groups()
                    members = self.members.setdefault(key, {})
                    if ext in members:
                        raise ValueError(f"{shard}: member {info.name} appears twice in the shard set")
                    members[ext] = (shard, info.offset_data, info.size)

    def __len__(self) -> int:
        return len(self.members)

    def keys(self) -> list[str]:
        """Every sample key, in shard order (the converter's item order)."""
        return list(self.members)

    def _locations(self, key: str) -> dict[str, Location]:
        try:
            return self.members[key]
        except KeyError:
            raise KeyError(f"{key}: no such sample in {self.index_file}") from None

    def _read(self, key: str, exts: list[str]) -> dict[str, bytes]:
        locations = self._locations(key)
        raw = {"__key__": key}
        with ExitStack() as stack:
            files: dict[str, BinaryIO] = {}
            for ext in exts:
                shard, offset, size = locations[ext]
                if shard not in files:
                    files[shard] = stack.enter_context(open(shard, "rb"))
                files[shard].seek(offset)
                raw[ext] = files[shard].read(size)
        return raw

    def meta(self, key: str) -> dict:
        """The sample's json metadata (only that member is read)."""
        if "json" not in self._locations(key):
            raise KeyError(f"{key}: sample has no json member in {self.index_file}")
        return json.loads(self._read(key, ["json"])["json"])

    def sample(self, key: str) -> Sample:
        """The whole sample, decoded."""
        return decode(self._read(key, list(self._locations(key))))

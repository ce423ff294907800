"""Reading shard sets written by `seggpt-lab-data convert`: their index, their URLs, their samples."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

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

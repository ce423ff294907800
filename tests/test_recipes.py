"""Every recipe reads shards where the converters write them: `shards/<source>/<split>-index.json` (or a folder
`shards/<source>` with a `split`) names a source of `seggpt-lab-data convert` and one of its splits."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import yaml

from datamodules.sources import SOURCES, get_source
from tests.conftest import REPO

RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))
INDEX = re.compile(r"shards/(?:[^/]+/)*?([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)-index\.json$")


def shard_reads(node: object) -> Iterator[tuple[str, str]]:
    """(source, split) of every index file and every {path: shards/.../<source>, split} a config names."""
    if isinstance(node, dict):
        path = node.get("path")
        if isinstance(path, str) and path.startswith("shards/") and not path.endswith(".json"):
            yield path.rstrip("/").rsplit("/", 1)[-1], node.get("split", "train")
        for value in node.values():
            yield from shard_reads(value)
    elif isinstance(node, list):
        for value in node:
            yield from shard_reads(value)
    elif isinstance(node, str) and (match := INDEX.search(node)):
        yield match[1], match[2]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_recipes_read_splits_the_converters_write(recipe) -> None:
    for source, split in shard_reads(yaml.safe_load(recipe.read_text())):
        assert source in SOURCES, f"{recipe.name}: shards/{source} is no converter's folder"
        assert split in get_source(source).splits, f"{recipe.name}: {source} writes no split {split!r}"


def test_the_check_sees_the_recipes_reads() -> None:
    reads = {read for recipe in RECIPES for read in shard_reads(yaml.safe_load(recipe.read_text()))}
    assert {("ade20k", "val"), ("ade20k", "train"), ("synthetic", "heldout"), ("davis", "2017-val")} <= reads

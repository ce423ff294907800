"""Shards shared by the evaluation tests, converted once per module from the real fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.convert import convert


@pytest.fixture(scope="module")
def loveda_index(shared_data, tmp_path_factory) -> Path:
    from datamodules.sources.loveda import LoveDA

    out = tmp_path_factory.mktemp("shards")
    convert(LoveDA(shared_data / "mmseg_fixtures" / "tests" / "data" / "pseudo_loveda_dataset", "val"), out,
            progress=False)
    return out / "loveda" / "val-index.json"

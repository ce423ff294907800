"""Shared by the converter tests: read native label files, write native-layout images, round-trip samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.schema import Sample, decode_sample, encode_sample


def roundtrip(sample: Sample) -> Sample:
    """The sample as a shard reader sees it: encoded to tar members and decoded back."""
    return decode_sample(encode_sample(sample))  # type: ignore[arg-type]


def native(path: Path) -> np.ndarray:
    """A label image's values as the dataset stores them (palette indices for P images)."""
    return np.asarray(Image.open(path)).astype(np.int64)


def write_jpeg(path: Path, size: tuple[int, int], seed: int = 0) -> None:
    """A random RGB JPEG of (H, W) `size`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, quality=90)

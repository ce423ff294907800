"""`seggpt-lab-data inspect`: per-class counts of a converted source and a contact sheet of random samples.

Each tile shows one sample with its semantic classes painted over it in distinct colours and its
instance boundaries in white, captioned with the sample key.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from datamodules.schema import SEM_VOID, Sample, decode_sample
from datamodules.shards import find_indexes, iter_raw, read_index
from seggpt_lab.palette import colorize, distinct_colors

TILE = 256  # tile height in pixels


def class_table(index: dict) -> str:
    """Text table of class id, name, images and pixels per class, most frequent first."""
    names = index["classes"]
    rows = sorted(index["class_images"], key=lambda c: (-index["class_images"][c], int(c)))
    lines = [f"{index['source']} / {index['split']}: {index['num_samples']} samples in {len(index['shards'])} shards"
             f" ({index['task']}); {len(index['skipped'])} skipped",
             f"{'id':>6}  {'class':<28} {'images':>8} {'pixels':>14}"]
    lines += [f"{c:>6}  {names.get(c, '?')[:28]:<28} {index['class_images'][c]:>8} {index['class_pixels'][c]:>14}"
              for c in rows]
    return "\n".join(lines)


def painted_sample(sample: Sample, alpha: float = 0.5) -> Image.Image:
    """The sample's image with classes in colour (void blended with grey) and instance boundaries in white."""
    rgb = sample.rgb().astype(np.float32)
    if sample.sem is not None:
        labels = sample.sem
    elif sample.ins is not None:
        labels = np.zeros_like(sample.ins)
        for i, inst in sample.meta["instances"].items():
            labels[sample.ins == int(i)] = inst["category"]
    else:
        labels = np.zeros(rgb.shape[:2], dtype=np.int32)
    num_classes = int(labels[labels < SEM_VOID].max(initial=0))
    palette = torch.cat([torch.zeros(1, 3, dtype=torch.uint8), distinct_colors(num_classes)])
    colour = colorize(torch.from_numpy(labels.astype(np.int64)), palette).numpy().astype(np.float32)
    painted = (labels > 0) & (labels < SEM_VOID)
    rgb[painted] = (1 - alpha) * rgb[painted] + alpha * colour[painted]
    void = labels == SEM_VOID
    rgb[void] = 0.5 * rgb[void] + 0.5 * 128
    if sample.ins is not None:
        ins = sample.ins
        edge = np.zeros(ins.shape, dtype=bool)
        edge[:-1] |= ins[:-1] != ins[1:]
        edge[:, :-1] |= ins[:, :-1] != ins[:, 1:]
        rgb[edge] = 255
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


def contact_sheet(samples: list[Sample], columns: int | None = None) -> Image.Image:
    tiles = []
    for s in samples:
        tile = painted_sample(s)
        tile = tile.resize((max(1, round(tile.width * TILE / tile.height)), TILE))
        ImageDraw.Draw(tile).text((4, 4), s.key, fill=(255, 255, 255))
        tiles.append(tile)
    columns = columns or max(1, int(np.ceil(np.sqrt(len(tiles)))))
    rows = int(np.ceil(len(tiles) / columns))
    width = max(t.width for t in tiles)
    sheet = Image.new("RGB", (columns * width, rows * TILE))
    for n, tile in enumerate(tiles):
        sheet.paste(tile, ((n % columns) * width, (n // columns) * TILE))
    return sheet


def inspect(folder: str | Path, num: int = 16, seed: int = 0, out: str | Path | None = None) -> list[Path]:
    """Print class counts for every split under `folder` and write `<split>-sheet.png` for each (or to `out`);
    returns the sheets' paths."""

    written = []
    for index_file in find_indexes(folder):
        index = read_index(index_file)
        print(class_table(index))
        total = index["num_samples"]
        if total == 0:
            continue
        chosen = set(random.Random(seed).sample(range(total), min(num, total)))
        picked = [decode_sample(raw) for n, raw in enumerate(iter_raw(index_file)) if n in chosen]
        path = Path(out) if out else index_file.parent / f"{index['split']}-sheet.png"
        if out and len(find_indexes(folder)) > 1:
            path = path.with_name(f"{path.stem}-{index['split']}{path.suffix}")
        contact_sheet(picked).save(path)
        print(f"contact sheet of {len(picked)} samples -> {path}")
        written.append(path)
    return written

"""LoveDA aerial land cover (Wang et al., NeurIPS 2021 Datasets and Benchmarks; github.com/Junjue-Wang/LoveDA)."""

from __future__ import annotations

import numpy as np

from datamodules.schema import SEM_VOID, Sample, SampleError
from datamodules.sources.base import Source, list_dir, read_image, read_label

# The LoveDA README: "background – 1, building – 2, road – 3, water – 4, barren – 5, forest – 6, agriculture – 7.
# And the no-data regions were assigned 0 which should be ignored." Raw value v becomes _RAW_TO_ID[v].
_RAW_TO_ID = np.array([SEM_VOID, 0, 1, 2, 3, 4, 5, 6], dtype=np.int32)


class LoveDA(Source):
    """LoveDA: 5987 Google Earth tiles of 1024x1024 px at 0.3 m, urban and rural scenes of three Chinese cities.

    Two layouts (--root; no test split: `Test/` has no masks, the authors' CodaLab server scores it): the official
    release (Zenodo record 5706578, as the LoveDA README lays it out)

           {Train,Val}/{Urban,Rural}/images_png/N.png      RGB tiles
           {Train,Val}/{Urban,Rural}/masks_png/N.png       L labels, same file name

    or mmsegmentation's, as tools/dataset_converters/loveda.py writes it: `img_dir/{train,val}/N.png`,
    `ann_dir/{train,val}/N.png` (a flat `img_dir/N.png` + `ann_dir/N.png` serves any split). Tile numbers are
    unique across the dataset, so the key is `loveda__N` in both. Mapping: 0 no-data -> SEM_VOID; 1 background -> 0;
    2..7 building, road, water, barren, forest, agriculture -> 1..6 (SegGPT's "6 classes"; the official
    benchmark scores background as a class); other values are errors.
    """


    name = "loveda"
    task = "semantic"
    splits = ("train", "val")
    licence = "LoveDA: CC BY-NC-SA 4.0 (github.com/Junjue-Wang/LoveDA)"
    classes = {1: "building", 2: "road", 3: "water", 4: "barren", 5: "forest", 6: "agriculture"}
    _DOMAINS = ("Urban", "Rural")

    def items(self) -> list[tuple[str, str]]:
        """(image, mask) paths relative to the root, sorted."""
        official = self.root / self.split.capitalize()
        if official.is_dir():
            pairs = [(official / d / "images_png", official / d / "masks_png") for d in self._DOMAINS]
        else:
            images, masks = self.root / "img_dir", self.root / "ann_dir"
            split_dir = images / self.split
            pairs = [(split_dir, masks / self.split) if split_dir.is_dir() else (images, masks)]
        found = [(image, mask_dir / image.name) for image_dir, mask_dir in pairs
                 for image in list_dir(image_dir, (".png",))]
        return sorted((self.relative(i), self.relative(m)) for i, m in found)

    def load(self, item: tuple[str, str]) -> Sample:
        image_file, mask_file = self.root / item[0], self.root / item[1]
        image = read_image(image_file)
        raw = read_label(mask_file)
        if raw.ndim != 2 or raw.min() < 0 or raw.max() >= len(_RAW_TO_ID):
            raise SampleError(mask_file, f"expected a one-channel mask with values 0..{len(_RAW_TO_ID) - 1}, "
                                         f"got shape {raw.shape} and values {np.unique(raw)[:10].tolist()}")
        return self.sample(image_file.stem, image, image_file, sem=_RAW_TO_ID[raw], label_file=mask_file)


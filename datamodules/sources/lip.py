"""LIP: Look Into Person, single-person human parsing (Gong et al., CVPR 2017; sysu-hcp.net/lip)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamodules.schema import Sample, SampleError
from datamodules.sources.base import Source, read_image, read_label, read_lines

# The 19 part labels, ids 1..19, in the order of the LIP website's dataset overview (0 is background).
LIP_CLASSES = (
    "hat", "hair", "glove", "sunglasses", "upper clothes", "dress", "coat", "socks", "pants", "jumpsuits", "scarf",
    "skirt", "face", "left arm", "right arm", "left leg", "right leg", "left shoe", "right shoe",
)


class LIP(Source):
    """LIP: 30,462 train and 10,000 val person crops from COCO, each pixel labelled with one of 19 parts.

    Two layouts (--root; no test split, its labels are withheld): the official `TrainVal_images.zip` and
    `TrainVal_parsing_annotations.zip` unpacked side by side

           TrainVal_images/{train,val}_images/<id>.jpg
           TrainVal_images/{train,val}_id.txt                               one <id> per line: the split list
           TrainVal_parsing_annotations/{train,val}_segmentations/<id>.png  L PNG, 0 background, 1..19 parts

    or both merged into one folder, as mmsegmentation's LIPDataset expects (`{split}_images/`,
    `{split}_segmentations/`, `{split}_id.txt` if kept). Without a split list every image is taken, sorted.
    Mapping: PNG values kept (0 background, 1..19 parts); others are errors.
    """


    name = "lip"
    task = "semantic"
    splits = ("train", "val")
    licence = "LIP: non-commercial research use (sysu-hcp.net/lip)"
    classes = {k: name for k, name in enumerate(LIP_CLASSES, 1)}

    def __init__(self, root: str | Path | None, split: str) -> None:
        super().__init__(root, split)
        official = self.root / "TrainVal_images"
        self.image_dir = (official if official.is_dir() else self.root) / f"{split}_images"
        labels = self.root / "TrainVal_parsing_annotations"
        self.label_dir = (labels if labels.is_dir() else self.root) / f"{split}_segmentations"
        self.list_file = self.image_dir.parent / f"{split}_id.txt"

    def items(self) -> list[str]:
        if self.list_file.is_file():
            return sorted(read_lines(self.list_file))
        if not self.image_dir.is_dir():
            raise SampleError(self.image_dir, "no such directory: give --root the LIP folder")
        return sorted(p.stem for p in self.image_dir.iterdir() if p.suffix.lower() == ".jpg")

    def load(self, item: str) -> Sample:
        image_file, label_file = self.image_dir / f"{item}.jpg", self.label_dir / f"{item}.png"
        image = read_image(image_file)
        sem = read_label(label_file)
        if sem.ndim != 2 or sem.max() > len(LIP_CLASSES):
            raise SampleError(label_file, f"expected a one-channel map with values 0..19, got shape {sem.shape} "
                                          f"and values {np.unique(sem[sem > len(LIP_CLASSES)])[:10].tolist()}")
        return self.sample(item, image, image_file, sem=sem, label_file=label_file)

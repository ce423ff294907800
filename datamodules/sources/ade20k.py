"""ADE20K scene parsing, the 150-class benchmark (Zhou et al., CVPR 2017; sceneparsing.csail.mit.edu)."""

from __future__ import annotations

import numpy as np

from datamodules.schema import SEM_VOID, Sample, SampleError
from datamodules.sources.base import Source, read_image, read_label

# The 150 classes in the order of objectInfo150.csv (CSAILVision/sceneparsing), first synonym of each, as
# detectron2 and mmsegmentation name them; class k here is raw label k in the annotation PNGs.
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel",
    "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)


class ADE20K(Source):
    """ADEChallengeData2016: 20,210 training and 2,000 validation images, 150 classes or "other" per pixel.

    Layout of the official `ADEChallengeData2016.zip` (give the unpacked `ADEChallengeData2016/` as --root):

        images/{training,validation}/ADE_{train,val}_NNNNNNNN.jpg
        annotations/{training,validation}/ADE_{train,val}_NNNNNNNN.png     L PNG, same stem

    Raw 0 ("other") -> SEM_VOID, as the benchmark scores it (detectron2; mmsegmentation's `reduce_zero_label`);
    1..150 unchanged; other values are errors. Splits: "train" = training/, "val" = validation/.
    """


    name = "ade20k"
    task = "semantic"
    splits = ("train", "val")
    licence = "ADE20K: research and educational use only (groups.csail.mit.edu/vision/datasets/ADE20K terms)"
    classes = {k: name for k, name in enumerate(ADE20K_CLASSES, 1)}
    _FOLDERS = {"train": "training", "val": "validation"}  # split -> the official folder name

    def items(self) -> list[str]:
        folder = self.root / "images" / self._FOLDERS[self.split]
        if not folder.is_dir():
            raise SampleError(folder, "no such directory: give --root the unpacked ADEChallengeData2016 folder")
        return sorted(p.stem for p in folder.iterdir() if p.suffix.lower() == ".jpg")

    def load(self, item: str) -> Sample:
        folder = self._FOLDERS[self.split]
        image_file = self.root / "images" / folder / f"{item}.jpg"
        label_file = self.root / "annotations" / folder / f"{item}.png"
        image = read_image(image_file)
        raw = read_label(label_file)
        if raw.ndim != 2 or raw.max() > len(ADE20K_CLASSES):
            raise SampleError(label_file, f"expected a one-channel map with values 0..150, got shape {raw.shape} "
                                          f"and values {np.unique(raw[raw > len(ADE20K_CLASSES)])[:10].tolist()}")
        return self.sample(item, image, image_file, sem=np.where(raw == 0, SEM_VOID, raw), label_file=label_file)

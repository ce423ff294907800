"""iSAID: instance segmentation in aerial images (Waqas Zamir et al., CVPR Workshops 2019)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datamodules.schema import SampleError
from datamodules.sources.coco import CocoJson

# The 15 categories in the order of iSAID's semantic masks (ids 1..15, 0 = background), as listed by the iSAID
# devkit (CAPTAIN-WHU/iSAID_Devkit, preprocess/preprocess.py `category_instancesonly`) and mmsegmentation's
# iSAIDDataset; names lower-cased, words joined by "_".
ISAID_CLASSES = (
    "ship", "storage_tank", "baseball_diamond", "tennis_court", "basketball_court", "ground_track_field", "bridge",
    "large_vehicle", "small_vehicle", "helicopter", "swimming_pool", "roundabout", "soccer_ball_field", "plane",
    "harbor",
)


def _normal(name: str) -> str:
    return name.strip().lower().replace(" ", "_")


class ISAID(CocoJson):
    """iSAID: 2806 DOTA-v1.0 aerial images (800 to 13000 px wide) with 655,451 instance polygons of 15 categories.

    Two layouts (--root holds `train/` and `val/`; no test split, its masks are withheld): the official release
    (annotations from captain-whu.github.io/iSAID, DOTA-v1.0 images, arranged as the iSAID devkit README asks)

           {train,val}/Annotations/iSAID_{train,val}.json    COCO-format instance json, `file_name` "P0000.png"
           {train,val}/images/P*.png                          the DOTA images

    or the devkit's 800x800 patches (`preprocess/split.py` then `preprocess.py`, --root = `iSAID_patches`):
    `{split}/instancesonly_filtered_{split}.json` and `{split}/images/*.png`. Mapping: categories are matched by
    name to `ISAID_CLASSES` (ids 1..15 as iSAID's semantic masks), not by json id, which the devkit assigns in the
    order it meets them. Unannotated pixels -> 0. Painting order: `CocoJson`.
    """


    name = "isaid"
    task = "semantic"  # the SegGPT paper trains on iSAID as a semantic source (section 4.1)
    splits = ("train", "val")
    licence = "iSAID and DOTA: academic research use only (captain-whu.github.io/iSAID)"
    classes = {k: name for k, name in enumerate(ISAID_CLASSES, 1)}

    def layout(self) -> tuple[Path, Path]:
        folder = self.root / self.split
        official = folder / "Annotations" / f"iSAID_{self.split}.json"
        patches = folder / f"instancesonly_filtered_{self.split}.json"
        return (patches if not official.is_file() and patches.is_file() else official), folder / "images"

    def categories(self, categories: Sequence[Mapping[str, Any]]) -> tuple[dict[int, int], dict[int, str]]:
        ids = {_normal(name): k for k, name in self.classes.items()}
        unknown = [c["name"] for c in categories if _normal(c["name"]) not in ids]
        if unknown:
            raise SampleError(self.json_file, f"categories {unknown} are not iSAID's 15 ({', '.join(ISAID_CLASSES)})")
        return {int(c["id"]): ids[_normal(c["name"])] for c in categories}, dict(self.classes)

"""PACO: Parts and Attributes of Common Objects (Ramanathan et al., CVPR 2023; github.com/facebookresearch/paco)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datamodules.sources.coco import CocoJson, Painted, decode_segmentation, paint


class PACO(CocoJson):
    """PACO-LVIS: COCO 2017 images with masks of 75 object categories and of their parts.

    Layout (the PACO README, "Dataset setup": `paco_lvis_v1.zip` unpacked into `annotations/`, beside COCO's
    image folders; give the folder that holds both as --root):

        annotations/paco_lvis_v1_{train,val,test}.json
        train2017/*.jpg, val2017/*.jpg              COCO's images; the json's `file_name` includes the folder

    The json is COCO-format (the dataset-format documentation of github.com/facebookresearch/paco): 531
    categories, 75 objects (`"dog"`) and 456 parts (`"dog:leg"`); each annotation is an RLE mask whose
    `obj_ann_id` is its own `id` for an object, else the object the part belongs to. No crowd regions;
    PACO-EGO4D is not read. Mapping: the 531 category ids in ascending order -> 1..531. Objects are painted as in
    `CocoJson` and are the instances; each part is painted over its object's visible pixels (and pixels no object
    covers), largest first, so the semantic map shows the finest label at each pixel.
    """


    name = "paco"
    task = "semantic"  # the SegGPT paper trains on PACO as a semantic source (section 4.1)
    splits = ("train", "val", "test")
    licence = "PACO annotations: terms in github.com/facebookresearch/paco; COCO images: Flickr terms"

    def layout(self) -> tuple[Path, Path]:
        return self.root / "annotations" / f"paco_lvis_v1_{self.split}.json", self.root

    def rasterise(self, annotations: Sequence[Mapping[str, Any]], height: int, width: int) -> Painted:
        objects = [a for a in annotations if a.get("obj_ann_id", a["id"]) == a["id"]]
        painted = paint([(decode_segmentation(a, height, width, self.json_file), self.class_of(a), False)
                         for a in objects], (height, width))
        instance_of = {a["id"]: k for a, k in zip(objects, painted.ids, strict=True)}
        parts = [(decode_segmentation(a, height, width, self.json_file), self.class_of(a), a["obj_ann_id"])
                 for a in annotations if a.get("obj_ann_id", a["id"]) != a["id"]]
        for mask, k, owner in sorted(parts, key=lambda p: -int(p[0].sum())):
            own = instance_of.get(owner, 0)  # 0 when the object has no visible mask: then only free pixels
            painted.sem[mask & ((painted.ins == 0) | (painted.ins == own))] = k
        return painted

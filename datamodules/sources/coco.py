"""COCO (Lin et al., ECCV 2014; cocodataset.org) in its three segmentation forms, and the COCO-format json reader.

`CocoJson` reads any COCO-format instance json (cocodataset.org/#format-data); `CocoInstance`, `PACO` and `ISAID`
subclass it. Masks are decoded with pycocotools, so they are exactly the ones the official evaluation sees.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pycocotools import mask as mask_utils

from datamodules.schema import SEM_VOID, InstanceMeta, Sample, SampleError
from datamodules.sources.base import Source, read_image, read_json, read_label

# labelme2coco (wkentaro/labelme, examples/instance_segmentation) writes the first line of its label list as a
# category with this name and id 0; it stands for the unannotated rest of the image, so it is background here.
LABELME_BACKGROUND = "_background_"

COCO_LICENCE = "COCO: annotations CC BY 4.0; images under their Flickr licences (cocodataset.org/#termsofuse)"


def contiguous(categories: Sequence[Mapping[str, Any]]) -> tuple[dict[int, int], dict[int, str]]:
    """COCO `categories` -> ({category_id: class id}, {class id: name}): ids in ascending order become 1..K; a
    labelme `_background_` category is left out (its annotations are background)."""
    kept = sorted((int(c["id"]), str(c["name"])) for c in categories if c["name"] != LABELME_BACKGROUND)
    return {cid: k for k, (cid, _) in enumerate(kept, 1)}, {k: name for k, (_, name) in enumerate(kept, 1)}


def decode_segmentation(annotation: Mapping[str, Any], height: int, width: int, file: Path) -> np.ndarray:
    """One annotation's `segmentation` (polygons, or RLE with `counts` compressed or not) -> (H, W) bool mask;
    polygons of fewer than 3 points enclose nothing and are dropped (pycocotools cannot rasterise them)."""
    segmentation = annotation.get("segmentation")
    where = f"annotation {annotation.get('id')} of image {annotation.get('image_id')}"
    is_rle = isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation
    if not (is_rle or isinstance(segmentation, list) and all(isinstance(p, list) for p in segmentation)):
        raise SampleError(file, f"{where}: segmentation is neither polygons nor RLE: {str(segmentation)[:80]}")
    if is_rle and list(segmentation["size"]) != [height, width]:
        raise SampleError(file, f"{where}: RLE size {segmentation['size']} but the image is {height}x{width} "
                                "(height x width)")
    try:
        if is_rle:
            uncompressed = isinstance(segmentation["counts"], list)
            rle = mask_utils.frPyObjects(segmentation, height, width) if uncompressed else segmentation
        else:
            polygons = [p for p in segmentation if len(p) >= 6]
            if not polygons:
                return np.zeros((height, width), dtype=bool)
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        return mask_utils.decode(rle).astype(bool)
    except (ValueError, TypeError) as e:
        raise SampleError(file, f"{where}: undecodable segmentation ({e})") from None


class Painted(NamedTuple):
    sem: np.ndarray  # (H, W) class ids, 0 where no object is
    ins: np.ndarray  # (H, W) instance ids 1..N, 0 where no object is
    instances: dict[int, InstanceMeta]
    ids: list[int]  # the instance id each input object got, in input order; 0 if others cover it entirely


def paint(objects: Sequence[tuple[np.ndarray, int, bool]], shape: tuple[int, int]) -> Painted:
    """Overlapping (mask, class id, iscrowd) objects -> one semantic and one instance map: crowd regions first, then
    largest to smallest (ties in input order), so a small object on a larger one stays visible; instance ids 1..N
    in painting order over the objects that keep a pixel."""
    order = sorted(range(len(objects)), key=lambda i: (not objects[i][2], -int(objects[i][0].sum()), i))
    layer = np.zeros(shape, dtype=np.int32)  # 1-based position in `order` of the object on top
    for rank, i in enumerate(order, 1):
        layer[objects[i][0]] = rank
    visible = np.unique(layer[layer > 0])
    renumber = np.zeros(len(objects) + 1, dtype=np.int32)
    renumber[visible] = np.arange(1, len(visible) + 1)
    category = np.zeros(len(objects) + 1, dtype=np.int32)
    category[1:] = [objects[i][1] for i in order]
    instances: dict[int, InstanceMeta] = {
        int(renumber[r]): {"category": int(category[r]), "iscrowd": bool(objects[order[r - 1]][2])} for r in visible}
    ids = [0] * len(objects)
    for rank, i in enumerate(order, 1):
        ids[i] = int(renumber[rank])
    return Painted(category[layer], renumber[layer], instances, ids)


class CocoJson(Source):
    """A COCO-format instance json plus a folder of images; subclasses say where both lie (`layout`).

    Each image in the json is one sample keyed by its `id` (without annotations: all background). Category ids
    become 1..K in ascending order (`categories`); objects are painted by `paint`. Crowd annotations stay
    instances flagged `iscrowd`, their category in the semantic map, so consumers can apply COCO's crowd rule.
    Masks are rasterised at the json's `height` x `width`; an image of another size is an error.
    """

    task = "instance"

    def __init__(self, root: str | Path | None, split: str) -> None:
        super().__init__(root, split)
        self.json_file, self.image_dir = self.layout()
        data = read_json(self.json_file)
        annotations: dict[int, list[dict[str, Any]]] = defaultdict(list)
        try:
            self.category_of, self.classes = self.categories(data["categories"])
            self.background_categories = {int(c["id"]) for c in data["categories"]} - set(self.category_of)
            self.images = {int(im["id"]): (str(im["file_name"]), int(im["height"]), int(im["width"]))
                           for im in data["images"]}
            for ann in data["annotations"]:
                annotations[int(ann["image_id"])].append(ann)
            # annotation id order, so that equal-area objects are painted the same way whatever the file order
            self.annotations = {image: sorted(anns, key=lambda a: int(a["id"])) for image, anns in annotations.items()}
        except (KeyError, TypeError, ValueError) as e:
            raise SampleError(self.json_file, f"not a COCO-format instance json ({type(e).__name__}: {e})") from None

    def layout(self) -> tuple[Path, Path]:
        """(the split's json, the folder that the images' `file_name`s are relative to)."""
        raise NotImplementedError

    def categories(self, categories: Sequence[Mapping[str, Any]]) -> tuple[dict[int, int], dict[int, str]]:
        """({category_id: class id}, {class id: name}); category ids missing from the first map are background."""
        return contiguous(categories)

    def items(self) -> list[int]:
        return sorted(self.images)

    def class_of(self, annotation: Mapping[str, Any]) -> int:
        """The class id of an annotation; 0 for a category mapped to background, an error for an unknown one."""
        category = annotation.get("category_id")
        if category in self.category_of:
            return self.category_of[category]
        if category in self.background_categories:
            return 0
        raise SampleError(self.json_file, f"annotation {annotation.get('id')} of image {annotation.get('image_id')} "
                                          f"has category_id {category}, which `categories` does not list")

    def rasterise(self, annotations: Sequence[Mapping[str, Any]], height: int, width: int) -> Painted:
        """An image's annotations -> its maps; background-category annotations are left out."""
        objects = []
        for ann in annotations:
            k = self.class_of(ann)
            if k:
                objects.append((decode_segmentation(ann, height, width, self.json_file), k, bool(ann.get("iscrowd"))))
        return paint(objects, (height, width))

    def load(self, item: int) -> Sample:
        file_name, height, width = self.images[item]
        image_file = self.image_dir / file_name
        image = read_image(image_file)
        painted = self.rasterise(self.annotations.get(item, []), height, width)
        return self.sample(str(item), image, image_file, sem=painted.sem, ins=painted.ins,
                           instances=painted.instances, label_file=self.json_file)


class CocoInstance(CocoJson):
    """COCO instance segmentation: 80 thing categories, polygons for single objects and RLE for crowd regions.

    Two layouts (--root): the official download (cocodataset.org/#download)

           annotations/instances_{train,val}2017.json
           {train,val}2017/<file_name>                      JPEG, `file_name` as the json lists it

    or a single-file export as labelme2coco writes it (wkentaro/labelme examples/instance_segmentation):
    `annotations.json` at the root, `file_name`s relative to it, read for whichever split is asked for.
    Mapping: category ids in ascending order -> 1..80 (COCO's ids 1..90 have gaps); a labelme `_background_`
    category and uncovered pixels -> 0. Painting order, crowd regions and image ids: `CocoJson`.
    """

    name = "coco-instance"
    splits = ("train", "val")
    licence = COCO_LICENCE

    def layout(self) -> tuple[Path, Path]:
        official = self.root / "annotations" / f"instances_{self.split}2017.json"
        export = self.root / "annotations.json"
        if not official.is_file() and export.is_file():
            return export, self.root
        return official, self.root / f"{self.split}2017"


class CocoPanoptic(Source):
    """COCO panoptic segmentation (Kirillov et al., CVPR 2019): 133 categories, 80 things and 53 stuff.

    Layout of the official `panoptic_annotations_trainval2017.zip`, its inner `panoptic_{split}2017.zip` unpacked
    in place (format: cocodataset.org/#format-data, cocodataset/panopticapi):

        annotations/panoptic_{train,val}2017.json          images, annotations (one per image: `file_name` of the
                                                           PNG, `segments_info` [{id, category_id, iscrowd}]),
                                                           categories [{id, name, isthing}]
        annotations/panoptic_{train,val}2017/*.png         RGB PNG, segment id = R + 256 G + 256^2 B, 0 = void
        {train,val}2017/*.jpg                              the images

    Mapping: category ids in ascending order -> 1..133; void -> SEM_VOID; thing segments -> instances 1..N in
    `segments_info` order (crowd ones flagged); a PNG segment id that `segments_info` does not list is an error,
    as in panopticapi's evaluation.
    """

    name = "coco-panoptic"
    task = "panoptic"
    splits = ("train", "val")
    licence = COCO_LICENCE

    def __init__(self, root: str | Path | None, split: str) -> None:
        super().__init__(root, split)
        self.json_file = self.root / "annotations" / f"panoptic_{split}2017.json"
        data = read_json(self.json_file)
        try:
            self.category_of, self.classes = contiguous(data["categories"])
            self.things = {int(c["id"]) for c in data["categories"] if c["isthing"]}
            files = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
            self.annotations = {int(a["image_id"]): (files[int(a["image_id"])], str(a["file_name"]),
                                                     list(a["segments_info"])) for a in data["annotations"]}
        except (KeyError, TypeError, ValueError) as e:
            raise SampleError(self.json_file, f"not a COCO panoptic json ({type(e).__name__}: {e})") from None

    def items(self) -> list[int]:
        return sorted(self.annotations)

    def load(self, item: int) -> Sample:
        image_name, png_name, segments = self.annotations[item]
        image_file = self.root / f"{self.split}2017" / image_name
        png_file = self.root / "annotations" / f"panoptic_{self.split}2017" / png_name
        image = read_image(image_file)
        rgb = read_label(png_file)
        if rgb.ndim != 3:
            raise SampleError(png_file, "panoptic PNGs are RGB (segment id = R + 256 G + 256^2 B), got one channel")
        ids, inverse = np.unique(rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2], return_inverse=True)
        listed = {int(s["id"]): s for s in segments}
        unknown = [int(i) for i in ids if i and int(i) not in listed]
        if unknown:
            raise SampleError(png_file, f"segment ids {unknown[:10]} are not in the segments_info of image {item} "
                                        f"in {self.json_file.name}")
        sem_of, ins_of = np.full(len(ids), SEM_VOID, dtype=np.int32), np.zeros(len(ids), dtype=np.int32)
        instances: dict[int, InstanceMeta] = {}
        present = {int(i): n for n, i in enumerate(ids)}
        for segment in segments:
            n = present.get(int(segment["id"]))
            if n is None:
                continue
            category = segment["category_id"]
            if category not in self.category_of:
                raise SampleError(self.json_file, f"segment {segment['id']} of image {item} has category_id "
                                                  f"{category}, which `categories` does not list")
            sem_of[n] = self.category_of[category]
            if category in self.things:
                ins_of[n] = len(instances) + 1
                instances[int(ins_of[n])] = {"category": int(sem_of[n]), "iscrowd": bool(segment.get("iscrowd"))}
        inverse = inverse.reshape(rgb.shape[:2])
        return self.sample(str(item), image, image_file, sem=sem_of[inverse], ins=ins_of[inverse],
                           instances=instances, label_file=png_file)


# COCO-Stuff's 182 labels, ids 1..182 (nightrome/cocostuff labels.txt; 0 "unlabeled" is not a class). Things are
# 1..91 and stuff 92..182; 11 thing ids (street sign, hat, shoe, eye glasses, plate, mirror, window, desk, door,
# blender, hair brush) never occur, because COCO has no masks for them (the cocostuff README, "Labels").
COCO_STUFF_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep",
    "cow", "elephant", "bear", "zebra", "giraffe", "hat", "backpack", "umbrella", "shoe", "eye glasses",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat",
    "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza",
    "donut", "cake", "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window", "desk",
    "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "blender", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush", "hair brush", "banner", "blanket", "branch", "bridge", "building-other", "bush",
    "cabinet", "cage", "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds",
    "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble", "floor-other",
    "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit", "furniture-other", "grass",
    "gravel", "ground-other", "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss",
    "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic", "platform",
    "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea",
    "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw", "structural-other",
    "table", "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick", "wall-concrete", "wall-other",
    "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind",
    "window-other", "wood",
)
# the cocostuff README: "thing+stuff labels cover indices 0-181 and 255 indicates the 'unlabeled' or void class"
COCO_STUFF_UNLABELED = 255


class CocoStuff(Source):
    """COCO-Stuff (Caesar et al., CVPR 2018): every pixel of the COCO 2017 images labelled with 80 thing and
    91 stuff classes.

    Layout of the cocostuff README's "Setup" (`stuffthingmaps_trainval2017.zip` and COCO's images, one --root):

        images/{train,val}2017/*.jpg
        annotations/{train,val}2017/*.png       L PNG, one per image, same stem: 0..181 = label - 1, 255 unlabeled

    Mapping: v in 0..181 -> v + 1, labels.txt's id; 255 "unlabeled" -> SEM_VOID (COCO-Stuff has no background
    class: an unlabeled pixel was left out, it is not a category); other values are errors.
    """


    name = "coco-stuff"
    task = "semantic"
    splits = ("train", "val")
    licence = "COCO-Stuff: annotations CC BY 4.0 (github.com/nightrome/cocostuff); COCO images: Flickr terms"
    classes = {k: name for k, name in enumerate(COCO_STUFF_CLASSES, 1)}

    def items(self) -> list[str]:
        folder = self.root / "annotations" / f"{self.split}2017"
        if not folder.is_dir():
            raise SampleError(folder, "no such directory: give --root the folder holding images/ and annotations/")
        return sorted(p.stem for p in folder.iterdir() if p.suffix == ".png")

    def load(self, item: str) -> Sample:
        image_file = self.root / "images" / f"{self.split}2017" / f"{item}.jpg"
        png_file = self.root / "annotations" / f"{self.split}2017" / f"{item}.png"
        image = read_image(image_file)
        raw = read_label(png_file)
        valid = (raw < len(COCO_STUFF_CLASSES)) | (raw == COCO_STUFF_UNLABELED)
        if raw.ndim != 2 or not valid.all():
            raise SampleError(png_file, f"expected a one-channel map with values 0..181 and 255, got shape "
                                        f"{raw.shape} and values {np.unique(raw[~valid])[:10].tolist()}")
        sem = np.where(raw == COCO_STUFF_UNLABELED, SEM_VOID, raw + 1)
        return self.sample(item, image, image_file, sem=sem, label_file=png_file)

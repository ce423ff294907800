"""PASCAL VOC 2012 segmentation (Everingham et al., IJCV 2010; host.robots.ox.ac.uk/pascal/VOC/voc2012)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamodules.schema import SEM_VOID, InstanceMeta, Sample, SampleError
from datamodules.sources.base import Source, read_image, read_label, read_lines

# The 20 classes in the order of the devkit's VOCcode/VOCinit.m (VOCopts.classes), ids 1..20 in the PNGs.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOC_VOID = 255  # the devkit documentation: void pixels, i.e. object borders and regions of 'difficult' objects


class VOC(Source):
    """PASCAL VOC 2012: 1,464 train and 1,449 val images with class and object masks; optionally the
    augmented 10,582-image training set.

    Layout of `VOCtrainval_11-May-2012.tar` (the VOC2012 devkit documentation, section 3.3; give either the
    unpacked folder holding `VOCdevkit/` or `VOCdevkit/VOC2012` itself as --root):

        VOCdevkit/VOC2012/JPEGImages/<id>.jpg
        VOCdevkit/VOC2012/SegmentationClass/<id>.png       palette PNG: 0 background, 1..20 classes, 255 void
        VOCdevkit/VOC2012/SegmentationObject/<id>.png      palette PNG: 0 background, 1..N objects, 255 void
        VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt     one <id> per line
        VOCdevkit/VOC2012/SegmentationClassAug/<id>.png    optional: the augmented set, L PNG coded as above

    Split "train_aug" reads `SegmentationClassAug` (DeepLab's and HSNet's 12,031 masks: SBD converted to VOC's
    coding, plus VOC's own; no object masks) minus val.txt: the standard 10,582 images. Mapping: 0 background,
    1..20 unchanged, 255 void -> SEM_VOID; objects 1..N of SegmentationObject are the instances (border -> 0), each
    with the most frequent class under it in SegmentationClass; other class values are errors.
    """


    name = "voc"
    task = "semantic"  # the SegGPT paper trains on VOC as a semantic source (section 4.1)
    splits = ("train", "val", "train_aug")
    licence = "PASCAL VOC: annotations for research use; images under Flickr terms (host.robots.ox.ac.uk/pascal/VOC)"
    classes = {k: name for k, name in enumerate(VOC_CLASSES, 1)}

    def __init__(self, root: str | Path | None, split: str) -> None:
        super().__init__(root, split)
        if (self.root / "VOCdevkit" / "VOC2012").is_dir():
            self.root = self.root / "VOCdevkit" / "VOC2012"

    def items(self) -> list[str]:
        lists = self.root / "ImageSets" / "Segmentation"
        if self.split != "train_aug":
            return sorted(read_lines(lists / f"{self.split}.txt"))
        folder = self.root / "SegmentationClassAug"
        if not folder.is_dir():
            raise SampleError(folder, "no such directory: the train_aug split needs SegmentationClassAug")
        val = set(read_lines(lists / "val.txt"))
        return sorted(p.stem for p in folder.iterdir() if p.suffix == ".png" and p.stem not in val)

    def load(self, item: str) -> Sample:
        image_file = self.root / "JPEGImages" / f"{item}.jpg"
        aug = self.split == "train_aug"
        class_file = self.root / ("SegmentationClassAug" if aug else "SegmentationClass") / f"{item}.png"
        image = read_image(image_file)
        raw = read_label(class_file)
        valid = (raw <= len(VOC_CLASSES)) | (raw == VOC_VOID)
        if raw.ndim != 2 or not valid.all():
            raise SampleError(class_file, f"expected a one-channel map with values 0..20 and 255, got shape "
                                          f"{raw.shape} and values {np.unique(raw[~valid])[:10].tolist()}")
        sem = np.where(raw == VOC_VOID, SEM_VOID, raw)
        if aug:
            return self.sample(item, image, image_file, sem=sem, label_file=class_file)
        object_file = self.root / "SegmentationObject" / f"{item}.png"
        objects = read_label(object_file)
        if objects.shape != raw.shape:
            raise SampleError(object_file, f"object mask has shape {objects.shape}, class mask {raw.shape}")
        ins = np.where(objects == VOC_VOID, 0, objects)
        instances: dict[int, InstanceMeta] = {}
        for k in np.unique(ins[ins > 0]):
            under = raw[(ins == k) & (raw != VOC_VOID) & (raw > 0)]
            if not under.size:
                raise SampleError(object_file, f"object {k} lies on no class pixel of {self.relative(class_file)}")
            instances[int(k)] = {"category": int(np.bincount(under).argmax()), "iscrowd": False}
        return self.sample(item, image, image_file, sem=sem, ins=ins, instances=instances, label_file=class_file)

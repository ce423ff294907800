"""Few-shot segmentation benchmarks (FSS-1000, PASCAL-5i, COCO-20i) as HSNet prepares them.

HSNet (Min et al., ICCV 2021; github.com/juhongm999/hsnet data/{fss,pascal,coco}.py) fixed the layouts, folds and
image lists that SegGPT's evaluation reuses: copy its `data/splits` folder into --root as `splits/` to convert
exactly the benchmark's images. One semantic sample per image; episodes are drawn from them later.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np

from datamodules.schema import SEM_VOID, Sample, SampleError
from datamodules.sources.base import Source, binary, list_dir, read_image, read_label, read_lines

HSNET_SUBSET = {"train": "trn", "val": "val", "test": "test"}  # our split -> HSNet's split-file name
FOLDS = 4  # HSNet data/pascal.py and data/coco.py: nfolds = 4


def _number_order(stem: str) -> tuple[int, int, str]:
    """Sort key putting numbered files in numeric order (1, 2, ..., 10) and any other name after them."""
    return (0, int(stem), stem) if stem.isdigit() else (1, 0, stem)



class FSS1000(Source):
    """FSS-1000 (Wei et al., CVPR 2020; github.com/HKUSTCV/FSS-1000): 1000 classes x 10 images.

    Two layouts (--root holds the class folders, or `imgs/`): the dataset download (HSNet's `FSS-1000/`)

           <class>/{1..10}.jpg     the images
           <class>/{1..10}.png     masks, white object on black, thresholded at 128 (HSNet data/fss.py `read_mask`)

    or the FSS-1000 repository's example, in the format its README asks for custom support sets:

           imgs/<class>/support/image/N.jpg
           imgs/<class>/support/label/N.png    RGB PNG, 1 on the object (autolabel.py reads channel 0 of BGR: blue)

    Class folders sorted by name get ids 1..K. Split lists, first found wins: `splits/fss/{trn,val,test}.txt`
    (HSNet's 520 / 240 / 240 classes; a listed class without a folder is an error); `fss_test_set.txt` (the
    repository's 240 test classes: "test" those, "train" the others, no "val"); else every class in every split.
    Mapping: object pixels -> the folder's class id, others 0.
    """

    name = "fss1000"
    task = "semantic"
    splits = ("train", "val", "test")
    licence = "FSS-1000: research use, cite Wei et al. 2020 (github.com/HKUSTCV/FSS-1000)"

    def __init__(self, root: str | Path | None, split: str) -> None:
        super().__init__(root, split)
        self.example = (self.root / "imgs").is_dir()
        if self.example:
            self.folders = {d.name: d / "support" for d in (self.root / "imgs").iterdir() if (d / "support").is_dir()}
        else:
            self.folders = {d.name: d for d in self.root.iterdir() if d.is_dir() and d.name != "splits"}
        self.classes = {i + 1: name for i, name in enumerate(sorted(self.folders))}
        self.ids = {name: i for i, name in self.classes.items()}

    def split_classes(self) -> list[str]:
        """The class names of the split, sorted."""
        hsnet = self.root / "splits" / "fss" / f"{HSNET_SUBSET[self.split]}.txt"
        test_list = self.root / "fss_test_set.txt"
        if hsnet.exists():
            names = read_lines(hsnet)
            missing = [n for n in names if n not in self.folders]
            if missing:
                raise SampleError(self.root / missing[0], f"no such class folder ({len(missing)} of the "
                                                          f"{len(names)} classes in {self.relative(hsnet)} missing)")
        elif test_list.exists():
            if self.split == "val":
                raise SampleError(hsnet, "list file is missing: FSS-1000 itself fixes only the test classes "
                                         "(fss_test_set.txt); the val classes are HSNet's")
            test = set(read_lines(test_list))
            names = [n for n in self.folders if (n in test) == (self.split == "test")]
        else:
            names = list(self.folders)
        if not names:
            raise SampleError(self.root, f"no class folder of split {self.split!r} found")
        return sorted(names)

    def items(self) -> list[tuple[str, str]]:
        """(class, image stem) pairs, sorted by class then image number."""
        items = []
        for name in self.split_classes():
            images = self.folders[name] / "image" if self.example else self.folders[name]
            stems = [p.stem for p in list_dir(images, (".jpg",))]
            items += [(name, stem) for stem in sorted(stems, key=_number_order)]
        return items

    def load(self, item: tuple[str, str]) -> Sample:
        name, stem = item
        folder = self.folders[name]
        image_file = folder / "image" / f"{stem}.jpg" if self.example else folder / f"{stem}.jpg"
        label_file = folder / "label" / f"{stem}.png" if self.example else folder / f"{stem}.png"
        image = read_image(image_file)
        label = read_label(label_file)
        if self.example:
            fg = (label[..., 2] if label.ndim == 3 else label) > 0
        else:
            fg = binary(label).astype(bool)
        sem = fg.astype(np.int32) * self.ids[name]
        return self.sample(f"{name}-{stem}", image, image_file, sem=sem, label_file=label_file)


class _Folds(Source):
    """A benchmark of 4 class folds: split "fold<i>-val" keeps fold i's test classes, "fold<i>-train" the others;
    kept classes keep the benchmark's ids, the others become 0, 255 becomes SEM_VOID, other values are errors."""

    task = "semantic"
    splits = tuple(f"fold{fold}-{subset}" for fold in range(FOLDS) for subset in ("train", "val"))
    all_classes: ClassVar[tuple[str, ...]]

    def __init__(self, root: str | Path | None, split: str) -> None:
        super().__init__(root, split)
        fold, self.subset = split.removeprefix("fold").split("-")
        self.fold = int(fold)
        test = set(self.test_ids(self.fold))
        every = range(1, len(self.all_classes) + 1)
        kept = [c for c in every if (c in test) == (self.subset == "val")]
        self.classes = {c: self.all_classes[c - 1] for c in kept}

    @staticmethod
    def test_ids(fold: int) -> list[int]:
        """The class ids (1-based) a fold tests on."""
        raise NotImplementedError

    def files(self, item: str) -> tuple[Path, Path]:
        """(image, mask) of one item."""
        raise NotImplementedError

    def load(self, item: str) -> Sample:
        image_file, mask_file = self.files(item)
        image = read_image(image_file)
        raw = read_label(mask_file)
        known = len(self.all_classes)
        if raw.ndim != 2:
            raise SampleError(mask_file, f"expected a one-channel mask of class ids, got shape {raw.shape}")
        bad = np.unique(raw[(raw > known) & (raw != 255)])
        if bad.size:
            raise SampleError(mask_file, f"values {bad[:10].tolist()} are neither class ids 0..{known} nor 255")
        lookup = np.zeros(256, dtype=np.int32)
        lookup[list(self.classes)] = list(self.classes)
        lookup[255] = SEM_VOID  # HSNet ignores 255 (VOC object boundaries) in its metric
        return self.sample(image_file.stem, image, image_file, sem=lookup[raw], label_file=mask_file)


class Pascal5i(_Folds):
    """PASCAL-5i (Shaban et al., BMVC 2017) in HSNet's layout (README "Preparing Few-Shot Segmentation Datasets").

    Give the folder that holds `VOC2012/` as --root:

        VOC2012/JPEGImages/<name>.jpg
        VOC2012/SegmentationClassAug/<name>.png    L or P PNG: 0 background, VOC class ids 1..20, 255 boundary
        splits/pascal/{trn,val}/fold{0..3}.txt     HSNet's lists, lines `<name>__<VOC class id>`

    Fold i tests VOC ids 5i+1..5i+5 (HSNet data/pascal.py `build_class_ids`). "fold<i>-val" = the names in
    `val/fold<i>.txt`, "fold<i>-train" = those of `trn/fold<j>.txt`, j != i, each once; without `splits/pascal/`
    every mask is converted for every split. Mapping: the split's VOC ids kept, other classes -> 0, 255 -> SEM_VOID.
    """

    name = "pascal5i"
    licence = "PASCAL VOC 2012 + SBD masks (Hariharan et al. 2011): research use; images under Flickr terms"
    # VOC devkit class order: index + 1 = VOC class id
    all_classes = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
                   "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
                   "tvmonitor")

    @staticmethod
    def test_ids(fold: int) -> list[int]:
        return [5 * fold + k for k in range(1, 6)]

    def items(self) -> list[str]:
        """Image names, sorted."""
        lists = self.root / "splits" / "pascal"
        if not lists.is_dir():
            return [p.stem for p in list_dir(self.root / "VOC2012" / "SegmentationClassAug", (".png",))]
        folds = [self.fold] if self.subset == "val" else [f for f in range(FOLDS) if f != self.fold]
        subset = HSNET_SUBSET[self.subset]
        return sorted({line.split("__")[0] for f in folds for line in read_lines(lists / subset / f"fold{f}.txt")})

    def files(self, item: str) -> tuple[Path, Path]:
        voc = self.root / "VOC2012"
        return voc / "JPEGImages" / f"{item}.jpg", voc / "SegmentationClassAug" / f"{item}.png"


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles containers, strings and numbers only: any import (and so any code) is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to import {module}.{name}: only plain data is allowed")


class Coco20i(_Folds):
    """COCO-20i (Nguyen & Todorovic, ICCV 2019) in HSNet's layout and interleaved folds.

    Give the folder that holds `COCO2014/` as --root:

        COCO2014/{train2014,val2014}/COCO_<set>_<id>.jpg
        COCO2014/annotations/{train2014,val2014}/COCO_<set>_<id>.png   HSNet's README masks (PFENet's): 0
                                            background, class index + 1 (1..80, COCO category order), 255 ignored
        splits/coco/{trn,val}/fold{0..3}.pkl    HSNet's lists: {class index: ["train2014/<file>.jpg", ...]}

    Fold i tests ids i+1, i+5, .., i+77 (HSNet data/coco.py `build_class_ids`). "fold<i>-train" reads train2014
    and `trn/fold<i>.pkl`, "fold<i>-val" val2014 and `val/fold<i>.pkl`, each listed image once (without the
    pickle: every mask). Pickles are read as plain data only, so a tampered list cannot run code. Mapping: the
    split's ids kept, other classes -> 0, 255 -> SEM_VOID.
    """


    name = "coco20i"
    licence = "COCO: annotations CC BY 4.0 (cocodataset.org); images under Flickr terms"
    # the 80 COCO object categories in category-id order: index + 1 = the id in HSNet's masks
    all_classes = ("person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
                   "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
                   "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
                   "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
                   "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
                   "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
                   "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
                   "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
                   "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
                   "teddy bear", "hair drier", "toothbrush")

    @staticmethod
    def test_ids(fold: int) -> list[int]:
        return [fold + FOLDS * k + 1 for k in range(len(Coco20i.all_classes) // FOLDS)]

    def items(self) -> list[str]:
        """`<set>/<file stem>` names relative to COCO2014, sorted."""
        image_set = "train2014" if self.subset == "train" else "val2014"
        lists = self.root / "splits" / "coco" / HSNET_SUBSET[self.subset] / f"fold{self.fold}.pkl"
        if not lists.exists():
            return [f"{image_set}/{p.stem}" for p in list_dir(self.root / "COCO2014" / "annotations" / image_set,
                                                              (".png",))]
        try:
            with lists.open("rb") as f:
                by_class = _PlainDataUnpickler(f).load()
            return sorted({name.removesuffix(".jpg") for c in self.classes for name in by_class.get(c - 1, [])})
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as e:
            raise SampleError(lists, f"not HSNet's {{class index: [image file, ...]}} pickle ({e!r})") from None

    def files(self, item: str) -> tuple[Path, Path]:
        coco = self.root / "COCO2014"
        return coco / f"{item}.jpg", coco / "annotations" / f"{item}.png"

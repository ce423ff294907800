"""A user's own data, the request users make most often in baaivision/Painter's issues (#11, #19, #27, #64): a
folder of images and masks that share file stems, converted by `seggpt-lab-data convert folder --root DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from datamodules.schema import SEM_VOID, InstanceMeta, Sample, SampleError
from datamodules.sources.base import Source, read_image, read_json, read_label, read_lines

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
# Void values in index and instance masks: 255 is the void of 8-bit masks (PASCAL VOC's convention), 65535 the
# schema's own SEM_VOID for 16-bit ones.
VOID = (255, SEM_VOID)
Mode = Literal["index", "colour", "instance"]


class Folder(Source):
    """Images with masks of the same stem, in one of three mask encodings (`mode`, picked from the files present).

    Layout under --root (this project's own convention; every file but images/ and one mask folder is optional):

        images/STEM.{jpg,jpeg,png,tif,tiff,bmp,webp}   the images (any case of the extension)
        masks/STEM.png                                  semantic masks, modes "index" and "colour"
        instances/STEM.png                              instance masks, mode "instance" (then no masks/)
        palette.txt                                     colour -> class; its presence selects mode "colour"
        classes.txt                                     class names, modes "index" and "instance"
        categories.json                                 class of each instance, mode "instance"
        splits/{train,val,test}.txt                     the stems of each split, one per line

    Modes, in the order they are chosen:
    - "instance", when instances/ exists: one-channel PNGs (L, P or 16-bit) of instance ids, 0 none, 255 and
      65535 void; `categories.json` maps `{"STEM": {"ID": CLASS}}` (without it every instance is class 1,
      "object"); sem.png is painted with each instance's class; void is SEM_VOID in sem.png and 0 in ins.png.
    - "colour", when palette.txt exists: RGB(A) PNGs; palette.txt holds `R G B NAME` lines in class order from 0
      (background first, e.g. `0 0 0 background`); a line named `ignore` is a void colour and takes no id. A
      colour not in the palette, and a classes.txt beside it, are errors.
    - "index" otherwise: one-channel PNGs (L, P or 16-bit) whose value is the class id; 255 and 65535 are void.

    classes.txt: line k names class k (background not listed), or `ID NAME` lines if every line starts with an
    id. Splits: split S is the stems in splits/S.txt; without splits/, "train" is every image, "val"/"test" errors.
    """


    name = "folder"
    task = "semantic"  # set to "instance" on instances of mode "instance"
    splits = ("train", "val", "test")
    licence = "the user's own data: its owner's terms apply"

    def __init__(self, root: str | Path | None, split: str) -> None:
        super().__init__(root, split)
        has_instances, has_masks = (self.root / "instances").is_dir(), (self.root / "masks").is_dir()
        if has_instances and has_masks:
            raise SampleError(self.root, "holds both masks/ and instances/: keep one (semantic or instance masks)")
        if not (has_instances or has_masks):
            raise SampleError(self.root / "masks", "no such directory: put the masks in masks/ (or instances/)")
        palette_file, classes_file = self.root / "palette.txt", self.root / "classes.txt"
        self.mode: Mode = "instance" if has_instances else "colour" if palette_file.is_file() else "index"
        self.mask_dir = self.root / ("instances" if has_instances else "masks")
        self.colour_ids: dict[int, int] = {}  # 0xRRGGBB -> class id or SEM_VOID, mode "colour"
        self.categories: dict[str, dict[int, int]] | None = None  # stem -> {instance id: class}, mode "instance"
        self.classes = {}
        if self.mode == "colour":
            if classes_file.is_file():
                raise SampleError(classes_file, "palette.txt already names the classes: remove classes.txt")
            self.colour_ids, self.classes = _read_palette(palette_file)
        elif classes_file.is_file():
            self.classes = _read_classes(classes_file)
        if self.mode == "instance":
            self.task = "instance"
            categories_file = self.root / "categories.json"
            if categories_file.is_file():
                self.categories = _read_categories(categories_file)
            elif not self.classes:
                self.classes = {1: "object"}

    def items(self) -> list[str]:
        """Image file names (in images/) of the split, sorted."""
        images = self.root / "images"
        if not images.is_dir():
            raise SampleError(images, "no such directory: put the images in images/")
        by_stem: dict[str, str] = {}
        for p in sorted(images.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                if p.stem in by_stem:
                    raise SampleError(p, f"has the same stem as {by_stem[p.stem]}: which one goes with the mask?")
                by_stem[p.stem] = p.name
        if not (self.root / "splits").is_dir() and self.split == "train":
            return sorted(by_stem.values())
        split_file = self.root / "splits" / f"{self.split}.txt"
        stems = read_lines(split_file)
        missing = [s for s in stems if s not in by_stem]
        if missing:
            raise SampleError(split_file, f"lists {missing[:5]} with no image in images/")
        return sorted(by_stem[s] for s in set(stems))

    def load(self, item: str) -> Sample:
        image_file = self.root / "images" / item
        stem = Path(item).stem
        mask_file = self.mask_dir / f"{stem}.png"
        image = read_image(image_file)
        raw = read_label(mask_file)
        if self.mode == "colour":
            return self.sample(stem, image, image_file, sem=self._colour_classes(raw, mask_file), label_file=mask_file)
        if raw.ndim != 2 or raw.max() > SEM_VOID:
            hint = "add palette.txt to map its colours to classes" if raw.ndim == 3 else "values must fit 16 bits"
            raise SampleError(mask_file, f"is not a one-channel class/instance mask ({hint})")
        void = np.isin(raw, VOID)
        if self.mode == "index":
            return self.sample(stem, image, image_file, sem=np.where(void, SEM_VOID, raw), label_file=mask_file)
        ins = np.where(void, 0, raw)
        ids = [int(i) for i in np.unique(ins) if i > 0]
        if self.categories is None:
            categories = dict.fromkeys(ids, 1)
        elif stem in self.categories:
            categories = self.categories[stem]
        else:
            raise SampleError(self.root / "categories.json", f"has no entry for image {stem!r}")
        instances = {i: InstanceMeta(category=categories[i], iscrowd=False) for i in ids if i in categories}
        sem = np.zeros_like(ins)
        for i, meta in instances.items():
            sem[ins == i] = meta["category"]
        sem[void] = SEM_VOID
        return self.sample(stem, image, image_file, sem=sem, ins=ins, instances=instances, label_file=mask_file)

    def _colour_classes(self, rgb: np.ndarray, mask_file: Path) -> np.ndarray:
        """(H, W, 3) colour mask -> (H, W) class ids through the palette."""
        if rgb.ndim != 3:
            raise SampleError(mask_file, "palette.txt asks for RGB colour masks, but this one has one channel")
        codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        present, inverse = np.unique(codes, return_inverse=True)
        unknown = [_rgb_text(int(c)) for c in present if int(c) not in self.colour_ids]
        if unknown:
            raise SampleError(mask_file, f"colours {unknown[:5]} are not in palette.txt")
        return np.array([self.colour_ids[int(c)] for c in present], dtype=np.int32)[inverse.reshape(codes.shape)]


def _rgb_text(code: int) -> str:
    return f"{code >> 16} {(code >> 8) & 255} {code & 255}"


def _read_palette(path: Path) -> tuple[dict[int, int], dict[int, str]]:
    """palette.txt -> ({0xRRGGBB: class id or SEM_VOID}, {class id: name} without background)."""
    colour_ids: dict[int, int] = {}
    names: dict[int, str] = {}
    next_id = 0  # the non-ignore lines are classes 0, 1, 2...
    for line in read_lines(path):
        parts = line.split(maxsplit=3)
        if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts[:3]):
            raise SampleError(path, f"line {line!r} is not `R G B NAME` with R, G, B in 0..255")
        code = (int(parts[0]) << 16) | (int(parts[1]) << 8) | int(parts[2])
        if code in colour_ids:
            raise SampleError(path, f"colour {_rgb_text(code)} is listed twice")
        if parts[3].lower() == "ignore":
            colour_ids[code] = SEM_VOID
            continue
        colour_ids[code] = next_id
        if next_id:
            names[next_id] = parts[3]
        next_id += 1
    return colour_ids, names


def _read_classes(path: Path) -> dict[int, str]:
    """classes.txt -> {class id: name}: line k names class k, or `ID NAME` lines when every line starts with an id."""
    lines = read_lines(path)
    pairs = [line.split(maxsplit=1) for line in lines]
    if all(len(p) == 2 and p[0].isdigit() for p in pairs):
        return {int(i): name for i, name in pairs if int(i) != 0}
    return dict(enumerate(lines, start=1))


def _read_categories(path: Path) -> dict[str, dict[int, int]]:
    """categories.json -> {stem: {instance id: class id}}."""
    data = read_json(path)
    try:
        return {str(stem): {int(i): int(c) for i, c in ids.items()} for stem, ids in data.items()}
    except (AttributeError, TypeError, ValueError):
        raise SampleError(path, 'expected {"<image stem>": {"<instance id>": <class id>}}') from None

"""Video object segmentation datasets (DAVIS, YouTube-VOS, MOSE): one sample per frame, in frame order.

Task "instance": `ins.png` holds the object ids as the dataset numbers them, `sem.png` each object's class; the
`video` metadata is {id: video folder, frame: the number in the file name (YouTube-VOS: every fifth, 0, 5...)}.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.schema import SEM_VOID, InstanceMeta, Sample, SampleError
from datamodules.sources.base import Source, binary, list_dir, read_image, read_json, read_label, read_lines

VOID = 255  # DAVIS-2017 toolkit (davis2017/davis.py): palette index 255 marks void pixels



def _frames(folder: Path) -> list[str]:
    """The stems of the JPEG frames in one video folder, in frame order; each must be the frame's number."""
    if not folder.is_dir():
        raise SampleError(folder, "no such directory: the video is listed but has no frames")
    stems = [p.stem for p in folder.iterdir() if p.suffix.lower() == ".jpg"]
    for stem in stems:
        if not stem.isdigit():
            raise SampleError(folder / f"{stem}.jpg", "frame files must be named by their frame number")
    return sorted(stems, key=int)


def _palette_ids(path: Path) -> np.ndarray:
    """An annotation of object ids -> (H, W) int array; a colour (RGB) PNG is an error, since ids would be lost."""
    label = read_label(path)
    if label.ndim != 2:
        raise SampleError(path, "expected a palette or greyscale PNG of object ids, got a colour image")
    return label


class _VideoFolders(Source):
    """What the three layouts share: `<frames>/<video>/<frame>.jpg` beside `<labels>/<video>/<frame>.png`. A frame
    without an annotation is stored without label maps (YouTube-VOS and MOSE validation annotate each object's
    first frame only), except in `annotated_splits`, where it is an error."""

    task = "instance"
    annotated_splits: tuple[str, ...] = ()

    def frames_dir(self) -> Path:
        """The folder of video folders of JPEG frames (YouTube-VOS and MOSE: `<split>/JPEGImages`)."""
        return self.root / self.split / "JPEGImages"

    def labels_dir(self) -> Path:
        """The folder of video folders of PNG annotations (YouTube-VOS and MOSE: `<split>/Annotations`)."""
        return self.root / self.split / "Annotations"

    def videos(self) -> list[str]:
        """The split's video folder names, sorted."""
        raise NotImplementedError

    def decode(self, video: str, label_file: Path) -> tuple[np.ndarray, np.ndarray, dict[int, InstanceMeta]]:
        """One annotation -> (sem, ins, {instance id: category and crowd flag})."""
        raise NotImplementedError

    def items(self) -> list[tuple[str, str]]:
        """(video, frame stem) pairs, sorted by video then frame."""
        return [(video, frame) for video in self.videos() for frame in _frames(self.frames_dir() / video)]

    def load(self, item: tuple[str, str]) -> Sample:
        video, frame = item
        image_file = self.frames_dir() / video / f"{frame}.jpg"
        label_file = self.labels_dir() / video / f"{frame}.png"
        image = read_image(image_file)
        sem = ins = instances = None
        if self.split in self.annotated_splits or label_file.exists():
            sem, ins, instances = self.decode(video, label_file)
        return self.sample(f"{video}-{frame}", image, image_file, sem=sem, ins=ins, instances=instances,
                           label_file=label_file, video={"id": video, "frame": int(frame)})


def _objects(ins: np.ndarray, category: Mapping[int, int] | int) -> dict[int, InstanceMeta]:
    """{id: meta} for the ids present in `ins`; an id with no category is left out for `sample` to report."""
    ids = [int(i) for i in np.unique(ins) if i > 0]
    if isinstance(category, int):
        return {i: {"category": category, "iscrowd": False} for i in ids}
    return {i: {"category": category[i], "iscrowd": False} for i in ids if i in category}


class DAVIS(_VideoFolders):
    """DAVIS-2016 and DAVIS-2017 (Perazzi et al. CVPR 2016; Pont-Tuset et al. arXiv:1704.00675; davischallenge.org).

    Layout of the official `DAVIS-data.zip` (2016) or `DAVIS-2017-trainval-480p.zip` (2017, the one
    davisvideochallenge/davis2017-evaluation reads); give the `DAVIS` folder as --root:

        DAVIS/JPEGImages/480p/<sequence>/%05d.jpg
        DAVIS/Annotations/480p/<sequence>/%05d.png
        DAVIS/ImageSets/2016/{train,val}.txt     sequence names, one a line (in the 2017 download)
        DAVIS/ImageSets/2017/{train,val}.txt

    Splits "2016-train", "2016-val", "2017-train", "2017-val": the year picks the task and the list
    `ImageSets/<year>/<set>.txt` (without it, every sequence); a missing PNG is an error. Annotations are `L`
    (DAVIS-2016: 255 object, thresholded at 128 -> id 1) or `P` (DAVIS-2017: index = object id, 255 void, as
    `davis2017/davis.py`); "2016-*" splits merge all objects into id 1 (single-object task). Mapping: ins = object
    ids (0 on void); sem = 1 "object" on objects, SEM_VOID on void, 0 elsewhere.
    """

    name = "davis"
    splits = ("2016-train", "2016-val", "2017-train", "2017-val")
    licence = "DAVIS: CC BY 4.0 (davischallenge.org); videos under their sources' terms"
    classes = {1: "object"}
    annotated_splits = splits
    resolution = "480p"  # the resolution the DAVIS-2017 toolkit evaluates at

    def frames_dir(self) -> Path:
        return self.root / "JPEGImages" / self.resolution

    def labels_dir(self) -> Path:
        return self.root / "Annotations" / self.resolution

    def videos(self) -> list[str]:
        year, subset = self.split.split("-")
        listing = self.root / "ImageSets" / year / f"{subset}.txt"
        if listing.exists():
            return sorted(read_lines(listing))
        return [p.name for p in list_dir(self.frames_dir(), folders=True)]

    def decode(self, video: str, label_file: Path) -> tuple[np.ndarray, np.ndarray, dict[int, InstanceMeta]]:
        label = _palette_ids(label_file)
        with Image.open(label_file) as im:  # read_label has opened it already, so it exists and decodes
            palette = im.mode == "P"
        void = label == VOID if palette else np.zeros(label.shape, dtype=bool)
        ins = np.where(void, 0, label) if palette else binary(label).astype(np.int32)
        if self.split.startswith("2016"):
            ins = (ins > 0).astype(np.int32)
        sem = (ins > 0).astype(np.int32)
        sem[void] = SEM_VOID
        return sem, ins, _objects(ins, 1)


class YouTubeVOS(_VideoFolders):
    """YouTube-VOS 2018/2019 (Xu et al., arXiv:1809.03327; youtube-vos.org/dataset/vos).

    Layout of one year's official `train.zip` / `valid.zip` / `test.zip`, unpacked under one folder (--root):

        <split>/JPEGImages/<video>/<frame>.jpg     every fifth frame of the video, five-digit frame numbers
        <split>/Annotations/<video>/<frame>.png    palette PNG, index = object id (0 background)
        <split>/meta.json                          {"videos": {<video>: {"objects": {<object id>:
                                                       {"category": <name>, "frames": [<frame>, ...]}}}}}

    In valid and test an object is annotated only where it first appears (0 there means "not annotated here").
    The videos are those meta.json lists; its category names, sorted, become ids 1..K ("object" for none).
    Mapping: ins = the PNG's object ids (an id meta.json does not list is an error); sem = each object's category.
    """

    name = "youtube-vos"
    splits = ("train", "valid", "test")
    licence = "YouTube-VOS: annotations CC BY 4.0 (youtube-vos.org); videos under YouTube's terms"
    annotated_splits = ("train",)

    def __init__(self, root: str | Path | None, split: str) -> None:
        super().__init__(root, split)
        meta_file = self.root / split / "meta.json"
        meta = read_json(meta_file)
        try:
            objects = {video: {int(i): o.get("category", "object") for i, o in v["objects"].items()}
                       for video, v in meta["videos"].items()}
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise SampleError(meta_file, f"not the YouTube-VOS meta.json layout "
                                         f"{{'videos': {{video: {{'objects': {{id: {{...}}}}}}}}}}: {e!r}") from None
        names = sorted({name for video in objects.values() for name in video.values()})
        self.classes = {i + 1: name for i, name in enumerate(names)}
        ids = {name: i for i, name in self.classes.items()}
        self.categories = {video: {i: ids[name] for i, name in objs.items()} for video, objs in objects.items()}

    def videos(self) -> list[str]:
        return sorted(self.categories)

    def decode(self, video: str, label_file: Path) -> tuple[np.ndarray, np.ndarray, dict[int, InstanceMeta]]:
        ins = _palette_ids(label_file)
        instances = _objects(ins, self.categories[video])
        lookup = np.zeros(int(ins.max()) + 1, dtype=np.int32)
        for i, meta in instances.items():
            lookup[i] = meta["category"]
        return lookup[ins], ins, instances


class MOSE(_VideoFolders):
    """MOSE v1 (Ding et al., ICCV 2023, arXiv:2302.01872; henghuiding.github.io/MOSE).

    Layout of the official `train.tar.gz` / `valid.tar.gz`, unpacked under one folder (--root), as the README of
    henghuiding/MOSE-api describes it:

        <split>/JPEGImages/<video>/%05d.jpg
        <split>/Annotations/<video>/%05d.png     "color-palette mode PNGs like DAVIS": index = object id

    Valid annotates only the first frame. The release documents no categories, so every video folder is converted
    and every object is class 1 "object". Mapping: ins = the PNG's object ids; sem = 1 on objects, 0 elsewhere.
    """


    name = "mose"
    splits = ("train", "valid")
    licence = "MOSE: CC BY-NC-SA 4.0 (henghuiding.github.io/MOSE)"
    classes = {1: "object"}
    annotated_splits = ("train",)

    def videos(self) -> list[str]:
        return [p.name for p in list_dir(self.frames_dir(), folders=True)]

    def decode(self, video: str, label_file: Path) -> tuple[np.ndarray, np.ndarray, dict[int, InstanceMeta]]:
        ins = _palette_ids(label_file)
        return (ins > 0).astype(np.int32), ins, _objects(ins, 1)

"""Retinal vessel datasets (DRIVE, CHASE_DB1, HRF, STARE): fundus photographs with one class, 1 = "vessel".

DRIVE and HRF ship a field-of-view (FOV) mask and their protocols score only pixels inside it (Staal et al.
2004; the HRF page), so pixels outside it become SEM_VOID whatever the annotation says. Only DRIVE has an official
split; the others take mmsegmentation's (tools/dataset_converters/{chase_db1,hrf,stare}.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from datamodules.schema import SEM_VOID, Sample, SampleError
from datamodules.sources.base import Source, binary, list_dir, read_image, read_label


def _white(path: Path) -> np.ndarray:
    """A black/white annotation (0/255, thresholded at 128 as mmsegmentation's converters do; 1-bit: 0/1) -> (H, W)
    bool."""
    label = read_label(path)
    return binary(label, threshold=128 if label.max() > 1 else 1).astype(bool)


class _Retina(Source):
    """What the four vessel datasets share: one class, and FOV masks turned into SEM_VOID."""

    task = "semantic"
    classes = {1: "vessel"}

    def vessel_sample(self, image_id: str, image_file: Path, label_file: Path, fov_file: Path | None = None) -> Sample:
        """The Sample of one fundus image: vessels 1, background 0, and SEM_VOID outside `fov_file` if given."""
        image = read_image(image_file)
        sem = _white(label_file).astype(np.int32)
        if fov_file is not None:
            fov = _white(fov_file)
            if fov.shape != image[2]:
                raise SampleError(fov_file, f"field-of-view mask is {fov.shape[1]}x{fov.shape[0]} but the image "
                                            f"{self.relative(image_file)} is {image[2][1]}x{image[2][0]}")
            if sem.shape == fov.shape:  # a label of the wrong size is reported by `sample` below
                sem[~fov] = SEM_VOID
        return self.sample(image_id, image, image_file, sem=sem, label_file=label_file)


class DRIVE(_Retina):
    """DRIVE (Staal et al., IEEE TMI 2004; https://drive.grand-challenge.org): 40 images 565x584, 20 training + 20 test.

    Layout of the official `training.zip` / `test.zip`, unpacked under one folder (give it as --root):

        DRIVE/{training,test}/images/NN_{training,test}.tif       RGB TIFF
        DRIVE/{training,test}/1st_manual/NN_manual1.gif           first annotator, L {0 background, 255 vessel}
        DRIVE/{training,test}/mask/NN_{training,test}_mask.gif    FOV, L {0 outside, 255 inside}

    The second annotator (`test/2nd_manual`) is not converted: the first is the protocol's ground truth.
    Mapping: 255 -> 1 "vessel", 0 -> 0, outside the FOV mask -> SEM_VOID. Splits: "train" = training/, "test" = test/.
    """

    name = "drive"
    splits = ("train", "test")
    licence = "DRIVE: research use, cite Staal et al. 2004 (https://drive.grand-challenge.org)"
    _FOLDERS = {"train": "training", "test": "test"}  # split -> the official folder name

    def items(self) -> list[str]:
        folder = self.root / self._FOLDERS[self.split] / "images"
        return [p.name for p in list_dir(folder) if p.suffix.lower() in (".tif", ".tiff")]

    def load(self, item: str) -> Sample:
        split_dir = self.root / self._FOLDERS[self.split]
        stem = Path(item).stem  # "21_training"
        number = stem.split("_")[0]
        return self.vessel_sample(stem, split_dir / "images" / item, split_dir / "1st_manual" / f"{number}_manual1.gif",
                                  split_dir / "mask" / f"{stem}_mask.gif")


class CHASE(_Retina):
    """CHASE_DB1 (Fraz et al., IEEE TBME 2012; https://researchdata.kingston.ac.uk/96/): 28 images 999x960.

    Layout of the official `CHASEDB1.zip`, unpacked into one flat folder (give it as --root):

        Image_NN{L,R}.jpg             left/right eye of child NN = 01..14, RGB JPEG
        Image_NN{L,R}_1stHO.png       first human observer: vessel pixels white (1 in 1-bit files, 255 in 8-bit)
        Image_NN{L,R}_2ndHO.png       second observer, not converted (the first is the usual ground truth)

    No FOV mask, no official split: "train" is children 01-10, "test" 11-14 (mmsegmentation's chase_db1.py).
    Mapping: 255 (or 1 in 1-bit files) -> 1 "vessel", 0 -> 0; no SEM_VOID.
    """

    name = "chase"
    splits = ("train", "test")
    licence = "CHASE_DB1: terms at https://researchdata.kingston.ac.uk/96/, cite Fraz et al. 2012"
    _IMAGE = re.compile(r"Image_(\d\d)[LR]\.jpg", re.IGNORECASE)
    _LAST_TRAIN_CHILD = 10  # mmsegmentation chase_db1.py: TRAINING_LEN = 60 files = 20 images = children 01-10

    def items(self) -> list[str]:
        names = [(p.name, self._IMAGE.fullmatch(p.name)) for p in list_dir(self.root)]
        return [name for name, m in names if m and (int(m[1]) <= self._LAST_TRAIN_CHILD) == (self.split == "train")]

    def load(self, item: str) -> Sample:
        stem = Path(item).stem
        return self.vessel_sample(stem, self.root / item, self.root / f"{stem}_1stHO.png")


class HRF(_Retina):
    """HRF, High-Resolution Fundus (Budai et al., Int. J. Biomed. Imaging 2013;
    https://www5.cs.fau.de/research/data/fundus-images/): 45 images 3504x2336, 15 each healthy (h),
    glaucomatous (g) and diabetic retinopathy (dr).

    Layout of the official `all.zip` (give its top folder as --root):

        images/NN_{h,g,dr}.{jpg,JPG}      RGB JPEG (the dr files have an upper-case extension)
        manual1/NN_{h,g,dr}.tif           vessel annotation, {0 background, 255 vessel}
        mask/NN_{h,g,dr}_mask.tif         FOV mask, {0 outside, 255 inside}

    No official split: "train" is NN = 01-05 of each group (15 images), "test" the other 30 (mmsegmentation's
    hrf.py; Orlando et al., IEEE TBME 2017). Mapping: 255 -> 1 "vessel", 0 -> 0, outside the FOV mask -> SEM_VOID.
    """

    name = "hrf"
    splits = ("train", "test")
    licence = "HRF: research use, cite Budai et al. 2013 (https://www5.cs.fau.de/research/data/fundus-images/)"
    _IMAGE = re.compile(r"(\d\d)_(h|g|dr)\.jpe?g", re.IGNORECASE)
    _LAST_TRAIN_NUMBER = 5  # mmsegmentation hrf.py: TRAINING_LEN = 5 of HRF_LEN = 15 per group

    def items(self) -> list[str]:
        names = [(p.name, self._IMAGE.fullmatch(p.name)) for p in list_dir(self.root / "images")]
        return [name for name, m in names if m and (int(m[1]) <= self._LAST_TRAIN_NUMBER) == (self.split == "train")]

    def load(self, item: str) -> Sample:
        stem = Path(item).stem
        return self.vessel_sample(stem, self.root / "images" / item, self.root / "manual1" / f"{stem}.tif",
                                  self.root / "mask" / f"{stem}_mask.tif")


class STARE(_Retina):
    """STARE vessel subset (Hoover et al., IEEE TMI 2000; https://cecas.clemson.edu/~ahoover/stare/probing/):
    20 hand-labelled images 700x605.

    Layout of the official `stare-images.tar`, `labels-ah.tar`, `labels-vk.tar`, each unpacked into a folder of
    that name and gunzipped (the tars hold `.ppm.gz` files), under one --root:

        stare-images/imNNNN.ppm           RGB PPM (the full 400-image set may be there too: only labelled ones count)
        labels-ah/imNNNN.ah.ppm           Adam Hoover's labels, {0 background, 255 vessel}: the ground truth
        labels-vk/imNNNN.vk.ppm           Valentina Kouznetsova's labels, not converted

    No FOV mask, no official split: "train" is the first 10 of the 20 sorted labelled images, "test" the last 10
    (mmsegmentation's stare.py). Mapping: 255 -> 1 "vessel", 0 -> 0; no SEM_VOID.
    """


    name = "stare"
    splits = ("train", "test")
    licence = "STARE: research use, cite Hoover et al. 2000 (https://cecas.clemson.edu/~ahoover/stare/)"
    # the first 10 of the 20 sorted labelled ids (mmsegmentation stare.py: TRAINING_LEN = 10)
    _TRAIN = ("im0001", "im0002", "im0003", "im0004", "im0005", "im0044", "im0077", "im0081", "im0082", "im0139")

    def items(self) -> list[str]:
        files = list_dir(self.root / "labels-ah")
        ids = [p.name[: -len(".ah.ppm")] for p in files if p.name.endswith(".ah.ppm")]
        if not ids and any(p.name.endswith(".gz") for p in files):
            raise SampleError(self.root / "labels-ah", "holds .ppm.gz files: gunzip them (and stare-images/) first")
        return [i for i in ids if (i in self._TRAIN) == (self.split == "train")]

    def load(self, item: str) -> Sample:
        return self.vessel_sample(item, self.root / "stare-images" / f"{item}.ppm",
                                  self.root / "labels-ah" / f"{item}.ah.ppm")

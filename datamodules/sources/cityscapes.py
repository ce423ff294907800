"""Cityscapes, fine annotations (Cordts et al., CVPR 2016; cityscapes-dataset.com)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamodules.schema import SEM_VOID, InstanceMeta, Sample, SampleError
from datamodules.sources.base import Source, read_image, read_label

# cityscapesscripts/helpers/labels.py (mcordts/cityscapesScripts): (labelId, trainId, name) of the 19 labels
# that are trained and evaluated; every other labelId 0..33 has trainId 255 (ignored).
_TRAIN_LABELS = (
    (7, 0, "road"), (8, 1, "sidewalk"), (11, 2, "building"), (12, 3, "wall"), (13, 4, "fence"), (17, 5, "pole"),
    (19, 6, "traffic light"), (20, 7, "traffic sign"), (21, 8, "vegetation"), (22, 9, "terrain"), (23, 10, "sky"),
    (24, 11, "person"), (25, 12, "rider"), (26, 13, "car"), (27, 14, "truck"), (28, 15, "bus"), (31, 16, "train"),
    (32, 17, "motorcycle"), (33, 18, "bicycle"),
)
_LABEL_IDS = 34  # labelIds 0..33 occur in the PNGs; "license plate" (-1) is never drawn into them
_INSTANCE_LABELS = (24, 25, 26, 27, 28, 31, 32, 33)  # labels.py `hasInstances` among the 19 (caravan, trailer: 255)
_ID_OF = np.full(_LABEL_IDS, SEM_VOID, dtype=np.int32)  # labelId -> class id: trainId + 1, others SEM_VOID
_ID_OF[[label for label, _, _ in _TRAIN_LABELS]] = [train + 1 for _, train, _ in _TRAIN_LABELS]


class Cityscapes(Source):
    """Cityscapes fine: 2,975 train and 500 val street scenes of 2048x1024 px from 50 cities.

    Layout of `leftImg8bit_trainvaltest.zip` and `gtFine_trainvaltest.zip` unpacked into one folder (--root):

        leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png          RGB
        gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png           L, labelIds 0..33
        gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png        16-bit, labelId * 1000 + k

    No test split (its labels are withheld); the key is `<city>_<seq>_<frame>`. Mapping: the 19 evaluated labelIds
    -> trainId + 1 (labels.py), every other labelId -> SEM_VOID, as the benchmark ignores them. Instances of the 8
    classes with instances: one per id >= 1000, and one crowd instance per class whose group region ("cargroup")
    carries the bare labelId; ids 1..N in the raw ids' order.
    """


    name = "cityscapes"
    task = "semantic"  # the SegGPT paper trains on Cityscapes as a semantic source (section 4.1)
    splits = ("train", "val")
    licence = "Cityscapes: non-commercial research use, registration required (cityscapes-dataset.com/license)"
    classes = {train + 1: name for _, train, name in _TRAIN_LABELS}

    def items(self) -> list[str]:
        folder = self.root / "leftImg8bit" / self.split
        if not folder.is_dir():
            raise SampleError(folder, "no such directory: give --root the folder holding leftImg8bit/ and gtFine/")
        return sorted(self.relative(p) for p in folder.glob("*/*_leftImg8bit.png"))

    def load(self, item: str) -> Sample:
        image_file = self.root / item
        stem = image_file.name.removesuffix("_leftImg8bit.png")
        gt = self.root / "gtFine" / self.split / image_file.parent.name
        label_file, instance_file = gt / f"{stem}_gtFine_labelIds.png", gt / f"{stem}_gtFine_instanceIds.png"
        image = read_image(image_file)
        labels = read_label(label_file)
        if labels.ndim != 2 or labels.max() >= _LABEL_IDS:
            raise SampleError(label_file, f"expected a one-channel map with labelIds 0..33, got shape {labels.shape} "
                                          f"and values {np.unique(labels[labels >= _LABEL_IDS])[:10].tolist()}")
        raw = read_label(instance_file)
        if raw.shape != labels.shape:
            raise SampleError(instance_file, f"instanceIds has shape {raw.shape}, labelIds {labels.shape}")
        ins, instances = _instances(raw, instance_file)
        return self.sample(stem, image, image_file, sem=_ID_OF[labels], ins=ins, instances=instances,
                           label_file=label_file)


def _instances(raw: np.ndarray, file: Path) -> tuple[np.ndarray, dict[int, InstanceMeta]]:
    """instanceIds -> (instance map 1..N, {id: meta}) for the 8 evaluated classes with instances."""
    label = np.where(raw >= 1000, raw // 1000, raw)
    if label.max() >= _LABEL_IDS:
        raise SampleError(file, f"instance ids {np.unique(raw[label >= _LABEL_IDS])[:10].tolist()} name no labelId")
    kept = np.isin(label, _INSTANCE_LABELS)
    ids = np.unique(raw[kept])
    ins = np.zeros(raw.shape, dtype=np.int32)
    ins[kept] = np.searchsorted(ids, raw[kept]) + 1
    instances: dict[int, InstanceMeta] = {
        k: {"category": int(_ID_OF[v // 1000 if v >= 1000 else v]), "iscrowd": bool(v < 1000)}
        for k, v in enumerate(ids.tolist(), 1)}
    return ins, instances

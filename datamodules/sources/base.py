"""What every converter is: a `Source` lists a split's items cheaply, then turns one item into a `Sample`.

`items()` runs once in the main process and must return the same list on every run (sort it); `load(item)` runs
in worker processes, so a Source and its items must pickle. Readers here raise `SampleError`s naming the file.
"""

from __future__ import annotations

import io
import json
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from datamodules.schema import InstanceMeta, Meta, Sample, SampleError, Task, VideoMeta, make_key


class Source:
    """A dataset in the layout its authors distribute. Subclasses set the class attributes.

    Args:
        root: the dataset's top folder, as unpacked from the official download.
        split: which split to convert; one of `splits`.
    """

    name: ClassVar[str]  # the `seggpt-lab-data convert SOURCE` name
    task: ClassVar[Task]
    splits: ClassVar[tuple[str, ...]]
    licence: ClassVar[str]  # a one-line note written into the index
    classes: dict[int, str] = {}  # {class id in sem.png: name}; 0 (background) is not listed
    needs_root: ClassVar[bool] = True  # False for generated data

    def __init__(self, root: str | Path | None, split: str) -> None:
        self.root = Path(root) if root is not None else Path(".")
        if self.needs_root and (root is None or not self.root.is_dir()):
            raise SampleError(root, f"no such directory: give --root the unpacked {self.name} dataset")
        if split not in self.splits:
            raise ValueError(f"{self.name} has splits {self.splits}, not {split!r}")
        self.split = split

    def items(self) -> Sequence[Hashable]:
        """The split's items (paths, ids, tuples...), sorted."""
        raise NotImplementedError

    def load(self, item: Any) -> Sample:
        """Read one item's files into a Sample; raise SampleError naming the bad file."""
        raise NotImplementedError

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def sample(self, image_id: str, image: tuple[bytes, str, tuple[int, int]], file: Path,
               sem: np.ndarray | None = None, ins: np.ndarray | None = None,
               instances: Mapping[int, InstanceMeta] | None = None, label_file: Path | None = None,
               video: VideoMeta | None = None, task: Task | None = None) -> Sample:
        """Build the Sample for one image, checking that every label map has the image's size."""
        size = image[2]
        for name, label in (("semantic", sem), ("instance", ins)):
            if label is not None and label.shape != size:
                raise SampleError(label_file or file, f"{name} mask is {label.shape[1]}x{label.shape[0]} but "
                                                      f"the image {self.relative(file)} is {size[1]}x{size[0]}")
        meta: Meta = {"source": self.name, "split": self.split, "task": task or self.task,
                      "size": list(size), "file": self.relative(file)}
        if sem is not None:
            present = np.unique(sem)
            meta["classes"] = {str(c): self.classes.get(int(c), str(c)) for c in present if 0 < c < 65535}
        if ins is not None:
            instances = instances or {}
            ids = [int(i) for i in np.unique(ins) if i > 0]
            missing = [i for i in ids if i not in instances]
            if missing:
                raise SampleError(label_file or file, f"instance ids {missing} have no category")
            meta["instances"] = {str(i): {"category": int(instances[i]["category"]),
                                          "iscrowd": bool(instances[i]["iscrowd"])} for i in ids}
        if video is not None:
            meta["video"] = video
        return Sample(key=make_key(self.name, image_id), image=image[0], image_ext=image[1],  # type: ignore[arg-type]
                      meta=meta, sem=sem, ins=ins)


def list_dir(folder: Path, suffixes: tuple[str, ...] | None = None, folders: bool = False) -> list[Path]:
    """The files (or with `folders`, the subfolders) of `folder`, sorted, optionally only those whose lower-case
    suffix is in `suffixes`. A missing folder is an error, so a wrong --root never yields an empty split."""
    if not folder.is_dir():
        raise SampleError(folder, "no such directory: check --root against the layout in the converter's docstring")
    return sorted(p for p in folder.iterdir() if (p.is_dir() if folders else p.is_file())
                  and (suffixes is None or p.suffix.lower() in suffixes))


def read_image(path: Path) -> tuple[bytes, str, tuple[int, int]]:
    """(encoded bytes, "jpg" | "png", (H, W)). JPEGs and RGB PNGs keep their bytes; others become RGB PNGs."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # decode fully: a truncated file fails here, not in a training worker
            size = (im.height, im.width)
            if im.format in ("JPEG", "MPO"):  # MPO: a multi-picture JPEG (phone cameras); decoders read frame 0
                return data, "jpg", size
            if im.format == "PNG" and im.mode == "RGB":
                return data, "png", size
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="PNG", compress_level=6)
            return buf.getvalue(), "png", size
    except FileNotFoundError:
        raise SampleError(path, "image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise SampleError(path, f"unreadable image ({e})") from None


def read_label(path: Path) -> np.ndarray:
    """A label image (L, P, I, I;16 or RGB) -> integer array: (H, W) for one channel, (H, W, 3) for RGB; palette
    ('P') PNGs give their indices, which is how DAVIS, VOC and PerSAM store ids."""
    try:
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA"):
                return np.asarray(im.convert("RGB")).astype(np.int32)
            if im.mode in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L"):
                return np.asarray(im).astype(np.int32)
            return np.asarray(im.convert("L")).astype(np.int32)
    except FileNotFoundError:
        raise SampleError(path, "annotation file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise SampleError(path, f"unreadable annotation image ({e})") from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SampleError(path, "annotation file is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SampleError(path, f"not valid JSON ({e})") from None


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a split/class list file."""
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise SampleError(path, "list file is missing") from None


def binary(mask: np.ndarray, threshold: int | None = None) -> np.ndarray:
    """A black/white mask (any channels) -> (H, W) uint8 {0, 1}; the default threshold is 128, or 1 for masks
    stored as {0, 1} (1-bit or index PNGs)."""

    if mask.ndim == 3:
        mask = mask.mean(axis=2)
    if threshold is None:
        threshold = 1 if mask.max(initial=0) <= 1 else 128
    return (mask >= threshold).astype(np.uint8)

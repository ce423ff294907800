"""The one shard schema: every source becomes samples of this form.

One sample = one annotated image, stored as tar members named `<key>.<ext>` (webdataset groups
members by the part of the name before the first dot, so keys hold no dots):

    <key>.jpg | <key>.png   the image: a JPEG's or RGB PNG's original bytes, otherwise an RGB PNG
    <key>.sem.png           semantic labels, 16-bit PNG: 0 background, 1..K classes, SEM_VOID (65535) void
                            pixels that no loss or metric may use; absent without semantic labels
    <key>.ins.png           instance ids, 16-bit PNG: 0 none, 1..N instances; absent without instances
    <key>.json              metadata, see `Meta`

`key` is `<source>__<image id>`; class ids are shifted as each converter documents, so 0 is background everywhere.
"""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Literal, TypedDict

import numpy as np
from PIL import Image

SCHEMA_VERSION = 1
SEM_VOID = 65535  # void pixels in sem.png; the largest 16-bit value, so any class id below it is usable
Task = Literal["semantic", "instance", "panoptic"]
TASKS = ("semantic", "instance", "panoptic")
IMAGE_EXTS = ("jpg", "png")
PNG_COMPRESS_LEVEL = 6  # fixed, so that shards are byte-identical from run to run
# what PIL raises for an image it cannot read: truncated or broken data (OSError), broken PNG chunks
# (SyntaxError), a decompression bomb
IMAGE_ERRORS = (OSError, SyntaxError, Image.DecompressionBombError)
LabelKind = Literal["sem", "ins"]


class InstanceMeta(TypedDict):
    category: int  # class id in the sem.png id space
    iscrowd: bool


class VideoMeta(TypedDict):
    id: str
    frame: int


class Meta(TypedDict, total=False):
    source: str
    split: str
    task: Task
    classes: dict[str, str]  # {class id: name} for the classes present in this sample (0 excluded)
    instances: dict[str, InstanceMeta]  # {instance id: ...} for the instances in ins.png
    size: list[int]  # [H, W] of the image as stored
    file: str  # the native image file, relative to the dataset root
    video: VideoMeta  # video sources: one sample per frame, in frame order


class SampleError(ValueError):
    """One input that cannot become a sample; the message names the file and says what is wrong."""

    def __init__(self, file: object, problem: str) -> None:
        super().__init__(f"{file}: {problem}")
        self.file, self.problem = str(file), problem


_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-]")


def make_key(source: str, *parts: object) -> str:
    """`<source>__<parts joined by '-'>` with every character outside [A-Za-z0-9_-] replaced by '_'."""
    return f"{source}__" + "-".join(_KEY_BAD.sub("_", str(p)) for p in parts)


@dataclass
class Sample:
    """One annotated image. `sem` / `ins` are (H, W) integer arrays or None."""

    key: str
    image: bytes
    image_ext: Literal["jpg", "png"]
    meta: Meta
    sem: np.ndarray | None = None
    ins: np.ndarray | None = None
    # label maps still PNG-encoded ({"sem": bytes, "ins": bytes}, from `decode_sample(raw, lazy=True)`): `label`
    # decodes one when it is used, so that a training stream decodes only the map a pair colours and buffered samples
    # stay small
    encoded: dict[str, bytes] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if "." in self.key or not self.key:
            raise ValueError(f"sample key {self.key!r} must be non-empty and hold no dots")
        if self.image_ext not in IMAGE_EXTS:
            raise ValueError(f"image_ext must be one of {IMAGE_EXTS}, got {self.image_ext!r}")
        if self.meta.get("task") not in TASKS:
            raise ValueError(f"{self.key}: meta task must be one of {TASKS}, got {self.meta.get('task')!r}")

    def rgb(self) -> np.ndarray:
        """The image as (H, W, 3) uint8."""
        return np.asarray(Image.open(io.BytesIO(self.image)).convert("RGB"))

    def has(self, kind: LabelKind) -> bool:
        """Whether the sample has the `kind` label map, decoded or still encoded."""
        return getattr(self, kind) is not None or kind in self.encoded

    def label(self, kind: LabelKind) -> np.ndarray | None:
        """The `kind` label map (None when the sample has none); one still encoded is decoded and checked on every
        call, not kept. Raises `InvalidSample` when it does not decode (`label_data`) or breaks the schema."""
        decoded = getattr(self, kind)
        if decoded is not None or kind not in self.encoded:
            return decoded
        try:
            label = decode_png16(self.encoded[kind])
        except (*IMAGE_ERRORS, ValueError, EOFError, zlib.error, struct.error) as e:
            raise InvalidSample(self.key, "label_data", f"the {kind}.png member does not decode ({e})") from None
        check_label(self, kind, label)
        return label


def encode_png16(label: np.ndarray) -> bytes:
    """(H, W) integer array with values in [0, 65535] -> 16-bit greyscale PNG bytes."""
    if label.ndim != 2:
        raise ValueError(f"label maps are 2-D, got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > SEM_VOID):
        raise ValueError(f"label values must lie in [0, {SEM_VOID}], got [{label.min()}, {label.max()}]")
    buf = io.BytesIO()
    Image.fromarray(label.astype(np.uint16)).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def decode_png16(data: bytes) -> np.ndarray:
    """16-bit greyscale PNG bytes -> (H, W) int32 array."""
    return np.asarray(Image.open(io.BytesIO(data))).astype(np.int32)


def encode_sample(sample: Sample) -> dict[str, bytes | str]:
    """Sample -> the tar members of one webdataset sample (`__key__` plus extension -> bytes)."""
    out: dict[str, bytes | str] = {"__key__": sample.key, sample.image_ext: sample.image,
                                   "json": json.dumps(sample.meta, sort_keys=True).encode()}
    if sample.sem is not None:
        out["sem.png"] = encode_png16(sample.sem)
    if sample.ins is not None:
        out["ins.png"] = encode_png16(sample.ins)
    return out


def decode_sample(raw: dict[str, bytes], lazy: bool = False) -> Sample:
    """Tar members of one sample (as webdataset yields them, undecoded) -> Sample; with `lazy` its label maps stay
    encoded until `Sample.label` asks for one."""
    ext = next((e for e in IMAGE_EXTS if e in raw), None)
    key = raw["__key__"]
    if ext is None or "json" not in raw:
        raise SampleError(key, f"sample has members {sorted(k for k in raw if not k.startswith('__'))}; "
                               "needs an image (jpg or png) and json")
    sample = Sample(key=key, image=raw[ext], image_ext=ext, meta=json.loads(raw["json"]))
    for kind in ("sem", "ins"):
        if f"{kind}.png" in raw:
            if lazy:
                sample.encoded[kind] = raw[f"{kind}.png"]
            else:
                setattr(sample, kind, decode_png16(raw[f"{kind}.png"]))
    return sample


class InvalidSample(SampleError):
    """A shard sample that decodes but breaks the schema; `reason` names the rule, for skip counts."""

    def __init__(self, key: str, reason: str, problem: str) -> None:
        super().__init__(key, problem)
        self.reason = reason


def _unknown_ids(label: np.ndarray, known: set[int]) -> list[int]:
    """The values of `label` outside `known`, sorted."""
    top = int(label.max()) if label.size else 0
    if top < len(known) and known.issuperset(range(top + 1)):  # ids 0..max all known: the max says it all
        return []
    # bincount, not np.unique: one pass instead of a sort (timings: BENCHMARKS.md, section 7)
    return sorted(set(np.flatnonzero(np.bincount(label.ravel())).tolist()) - known)


def _image_size(sample: Sample) -> tuple[int, int]:
    """(H, W) from the image header (the pixels are not decoded)."""
    try:
        with Image.open(io.BytesIO(sample.image)) as im:
            width, height = im.size
    except IMAGE_ERRORS as e:
        raise InvalidSample(sample.key, "image", f"the {sample.image_ext} member is not a readable image ({e})"
                            ) from None
    return height, width


def _listed_ids(sample: Sample) -> dict[LabelKind, set[int]]:
    """The ids the metadata lists: {"sem": classes, "ins": instances}; `InvalidSample` ("meta") when malformed."""
    try:
        classes = {int(c) for c in sample.meta.get("classes", {})}
        instances = {int(i) for i, inst in sample.meta.get("instances", {}).items()
                     if isinstance(inst["category"], int) and isinstance(inst["iscrowd"], bool)}
        if len(instances) != len(sample.meta.get("instances", {})):
            raise ValueError("an instance needs an int category and a bool iscrowd")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise InvalidSample(sample.key, "meta", f"malformed json metadata ({e!r})") from None
    return {"sem": classes, "ins": instances}


# values a map may hold besides its listed ids: background (and void in sem.png)
_ALWAYS_ALLOWED: dict[LabelKind, set[int]] = {"sem": {0, SEM_VOID}, "ins": {0}}


def _check_map(key: str, kind: LabelKind, label: np.ndarray, size: tuple[int, int], ids: set[int]) -> None:
    if label.shape != size:
        raise InvalidSample(key, "size", f"{kind}.png is {label.shape} but the image is {size}")
    unknown = _unknown_ids(label, ids | _ALWAYS_ALLOWED[kind])
    if unknown:
        raise InvalidSample(key, "labels", f"{kind}.png holds ids {unknown[:5]} that its json does not list")


def check_label(sample: Sample, kind: LabelKind, label: np.ndarray) -> None:
    """`validate`'s checks of one label map (size, ids), for a map decoded after the sample was validated."""
    _check_map(sample.key, kind, label, _image_size(sample), _listed_ids(sample)[kind])


def validate(sample: Sample) -> Sample:
    """Check a decoded sample against the schema, once, before pairing and augmentation trust it (only the image
    header is read; maps still encoded are checked when `Sample.label` decodes them).

    Raises `InvalidSample` with reason `image` (not an image), `meta` (malformed), `no_mask` (a promised map
    missing, or none at all), `size` (a map not the image's (H, W)) or `labels` (ids its metadata does not list).
    """

    size = _image_size(sample)
    listed = _listed_ids(sample)
    if not (sample.has("sem") or sample.has("ins")):
        raise InvalidSample(sample.key, "no_mask", "sample has no label map (sem.png or ins.png)")
    for kind, ids in listed.items():
        if not sample.has(kind):
            if ids:
                raise InvalidSample(sample.key, "no_mask", f"json lists {'classes' if kind == 'sem' else 'instances'} "
                                                           f"but the sample has no {kind}.png")
        elif getattr(sample, kind) is not None:
            _check_map(sample.key, kind, getattr(sample, kind), size, ids)
    return sample

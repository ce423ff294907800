"""Pair augmentation: a `Pair` -> one training example, its two views on the canvas (SegGPT, Wang et al. 2023,
§4.2: random resized crop, colour jitter, random horizontal flip, 448 x 448 inputs).

Shapes: h, w = `size`; a canvas is (3, 2h, w), the prompt view on top, the query view below. Each view has its own
crop, flip and jitter, shared by its image and label, so two views of one image are two crops. Where the paper is
silent: torchvision's `RandomResizedCrop` and `ColorJitter` rules (`crop_box`, `_jitter_map`), one colour mapping for
both halves (`coloring`, candidates by `PairTransform._candidates`), Painter's patch masks (`masking`). With
`on_device`, the jitter, the flips and the painting are left to `finish_batch`, after the transfer to the accelerator.
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Literal, NotRequired, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from datamodules.coloring import NUM_LABELS, Mapping, candidate_ids, draw_mapping, fix_colors, mix_context, paint_planes
from datamodules.masking import painter_mask, query_half_mask
from datamodules.pairing import Pair
from datamodules.schema import SEM_VOID, Sample
from seggpt_lab.canvas import InContextBatch

GRAY = np.array([0.2989, 0.587, 0.114])  # torchvision rgb_to_grayscale weights (ITU-R 601-2 luma)
Box = tuple[float, float, float, float]  # (top, left, height, width) in source pixels
IDENTITY = np.eye(3, 7, dtype=np.float32)[None]  # (1, 3, 7): the colour map of a view without jitter
# up to this many ids, presence in a view is one comparison per id, not one count over all 65536 label values: cheaper
# (BENCHMARKS.md §7)
SCAN_IDS = 8


def check_scale(scale: tuple[float, float]) -> None:
    """Raise unless `scale` is a crop area range 0 < min <= max <= 1."""
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")


def crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Box:
    """A random crop (top, left, height, width) by torchvision's `RandomResizedCrop` rule: area fraction uniform in
    `scale`, width / height log-uniform in `ratio`; after 10 misses, the largest centred crop within `ratio`."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def _as_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (1, 3, H, W) channels-last tensor on the same memory (no copy)."""
    image = np.ascontiguousarray(image).reshape(1, *image.shape)  # reshape, not [None]: a real batch stride
    with warnings.catch_warnings():  # arrays from PIL are read-only; these tensors are only ever read
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(image).permute(0, 3, 1, 2)


def _reduce_box(box: Box, factor: float, shape: tuple[int, int]) -> tuple[tuple[int, int, int, int], Box]:
    """The whole-pixel box nearest to `box` (source pixels) on the (H, W) `shape` image, the source reduced `factor`
    times, and that box again in source pixels (where the label is sampled, so that both share one grid)."""
    top, left = (min(round(v / factor), n - 1) for v, n in zip(box[:2], shape, strict=True))
    bottom, right = (min(max(round((v + d) / factor), v0 + 1), n)
                     for v, d, v0, n in zip(box[:2], box[2:], (top, left), shape, strict=True))
    reduced = (top, left, bottom - top, right - left)
    return reduced, tuple(v * factor for v in reduced)


def _resize_image(image: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8: the whole-pixel `box` (top, left, height, width), bilinear, antialiased
    when shrinking (torch's uint8 kernel, PIL's filter), reading no tap outside the box as torchvision does."""
    # channels last in and out: torch's vectorised uint8 path, faster than channels first and than PIL's `resize`
    # (BENCHMARKS.md §7)
    top, left, h, w = box
    crop = _as_tensor(image)[:, :, top : top + h, left : left + w]
    resized = F.interpolate(crop, size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].permute(1, 2, 0).numpy()


def _resize_label(label: np.ndarray, box: Box, size: tuple[int, int], mirror: bool = False) -> np.ndarray:
    """The label's pixel under each output pixel centre, on the image's sampling grid (mirrored when `mirror`)."""
    top, left, h, w = box
    rows = np.floor(top + (np.arange(size[0]) + 0.5) * (h / size[0])).astype(np.intp)
    cols = np.floor(left + (np.arange(size[1]) + 0.5) * (w / size[1])).astype(np.intp)
    rows = np.clip(rows, int(top), min(math.ceil(top + h), label.shape[0]) - 1)
    cols = np.clip(cols, int(left), min(math.ceil(left + w), label.shape[1]) - 1)
    return label.take(rows, axis=0).take(cols[::-1] if mirror else cols, axis=1)


def random_resized_crop(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    size: tuple[int, int],
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image, (H, W) int label -> (h, w, 3), (h, w): one crop, the label nearest on the same grid."""
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} sizes differ")
    box = crop_box(*label.shape, rng, scale, ratio)
    return _resize_image(image, box, size), _resize_label(label, box, size)


def flip(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, p: float = 0.5
         ) -> tuple[np.ndarray, np.ndarray]:
    """Mirror image (H, W, 3) and label (H, W) left-right together with probability p (views, no copy)."""
    if rng.random() < p:
        return image[:, ::-1], label[:, ::-1]
    return image, label


def _hue_rotation(shift: float) -> np.ndarray:
    """(3, 3) rotation of RGB about the grey axis by `shift` turns: a linear hue shift (our choice), which keeps each
    pixel's mean and distance from grey. It equals torchvision's `adjust_hue` (HSV) at a third of a turn and stays
    within 0.01 turn of it at Painter's 0.1 (median over saturated pixels, tests/datamodules/test_augment.py)."""
    theta = 2 * math.pi * shift
    k = np.full(3, 1 / math.sqrt(3))
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])  # cross @ x = k x x
    return math.cos(theta) * np.eye(3) + math.sin(theta) * cross + (1 - math.cos(theta)) * np.outer(k, k)


def _jitter_map(rng: np.random.Generator, brightness: float, contrast: float, saturation: float, hue: float = 0.0
                ) -> np.ndarray:
    """One `ColorJitter` draw (torchvision's factors and random order) as a (3, 7) float64 map [M | o | K] of a pixel
    x of a view of mean colour mu: x -> M x + o + K mu. Every step is affine in x (contrast through mu), so the
    composition is, clipped only at the end (torchvision clips each step); mu is kept apart for `finish_batch`."""
    stacked = np.zeros((3, 7))
    stacked[:, :3] = np.eye(3)
    for step in rng.permutation(4 if hue > 0 else 3):  # without hue, the draws of the three-step jitter
        if step == 3:
            stacked = _hue_rotation(rng.uniform(-hue, hue)) @ stacked
            continue
        spread = (brightness, contrast, saturation)[step]
        f = rng.uniform(max(0.0, 1 - spread), 1 + spread)
        if step == 0:
            stacked *= f
        elif step == 1:
            gray = GRAY @ stacked  # the mean grey level: gray[3] + (gray[:3] + gray[4:]) @ mu
            stacked *= f
            stacked[:, 3] += (1 - f) * gray[3]
            stacked[:, 4:] += (1 - f) * (gray[:3] + gray[4:])
        else:
            stacked = (f * np.eye(3) + (1 - f) * np.outer(np.ones(3), GRAY)) @ stacked
    return stacked


def _recolor_map(stacked: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`stacked` then one of 48 recolourings: the channels permuted and each inverted (v -> 255 - v) with p 1/2."""
    signs = np.where(rng.random(3) < 0.5, -1.0, 1.0)
    out = (signs[:, None] * np.eye(3)[rng.permutation(3)]) @ stacked
    out[:, 3] += np.where(signs < 0, 255.0, 0.0)
    return out


def _jitter(image: np.ndarray, stacked: np.ndarray, out: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 -> `out` (3, h, w) uint8: a `_jitter_map` as one matrix product, rounded and clipped."""
    # channels first: (3, 3) @ (3, h * w) is a fast matrix product, (h * w, 3) @ (3, 3) a slow one
    x = np.empty(out.shape, np.float32)
    np.copyto(x, image.transpose(2, 0, 1))  # cast and transpose in one pass
    x = torch.from_numpy(x).view(3, -1)  # (3, h * w)
    offset = stacked[:, 3] + stacked[:, 4:] @ x.mean(1).double().numpy()
    # + 0.5: the cast to uint8 truncates, so this rounds to nearest (numpy's cast: several times torch's)
    y = torch.addmm(torch.from_numpy(offset + 0.5).float()[:, None], torch.from_numpy(stacked[:, :3]).float(), x)
    np.copyto(out, y.clamp_(0, 255).numpy().reshape(out.shape), casting="unsafe")
    return out


def color_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.0) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8 with random brightness, contrast, saturation and hue (random order)."""
    out = np.empty((3, *image.shape[:2]), np.uint8)
    return _jitter(image, _jitter_map(rng, brightness, contrast, saturation, hue), out).transpose(1, 2, 0)


def _label_map(sample: Sample, label: Literal["sem", "ins"]) -> np.ndarray:
    lab = sample.label(label)  # decoded here when the stream kept it encoded
    if lab is None:
        raise ValueError(f"{sample.key}: the pair colours its {label!r} map, which the sample does not have")
    return lab


def _decode(sample: Sample, shape: tuple[int, int], boxes: list[Box], size: tuple[int, int]
            ) -> tuple[np.ndarray, float]:
    """The image as (H', W', 3) uint8 at the smallest JPEG DCT scale (PIL `Image.draft`) that keeps every box at
    `size` or more, once per image, and the factor H / H' it is reduced by; `shape`: the label's (H, W)."""
    image = Image.open(io.BytesIO(sample.image))
    width, height = image.size
    if (height, width) != shape:
        raise ValueError(f"{sample.key}: image {(height, width)} and label {shape} sizes differ")
    need = (max(math.ceil(width * size[1] / b[3]) for b in boxes),
            max(math.ceil(height * size[0] / b[2]) for b in boxes))
    drafted = image.draft("RGB", need)  # None for PNG: decoded at full size
    factor = width / drafted[1][2] if drafted else 1.0  # the box is the source's size divided by the DCT scale
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB")), factor


class PairTransform:
    """A `Pair` -> one training example: two augmented views painted with one colour mapping, and a patch mask.

    Args:
        size: (h, w) of one view; the canvas is (2h, w). Paper: 448 x 448.
        scale: range of the crop's area as a fraction of the image's.
        jitter: brightness, contrast and saturation strength (0: off), or (brightness, contrast, saturation, hue) as
            torchvision's `ColorJitter` takes them, hue <= 0.5 (Painter main_train.py: (0.4, 0.4, 0.2, 0.1)); the
            default is ours.
        jitter_prob: probability that a view is jittered at all, as `RandomApply` (Painter: 0.8; 1, ours, no coin).
        flip: mirror each view left-right with probability 0.5.
        mask: "painter" (Painter's block-wise masking) or "query" (always the query half, the inference setting).
        query_half_prob: probability of masking the query half in "painter" mode (Painter: 0.1).
        patch_size: the model's patch size; both sides of `size` must be multiples of it.
        max_ids: at most this many ids coloured per example; None: no cap.
        recolor: probability that a view's colours are also remapped at random (channels permuted, some inverted),
            for worlds where colour never names a category (README, "Pretraining").
        coloring: "random" (SegGPT: every example draws its ids' colours afresh, so a colour names nothing) or "fixed"
            (Painter: each category id, and each instance id, always has one colour, `palette.fixed_color`); the
            ids coloured are drawn alike. README, "Ablations".
        on_device: leave the jitter, the flips and the painting to `finish_batch` on the accelerator; examples then
            carry the `UnfinishedBatch` keys. Mix-context examples are jittered and flipped here (a half mixes views).
    """

    def __init__(
        self,
        size: tuple[int, int] = (448, 448),
        scale: tuple[float, float] = (0.3, 1.0),
        jitter: float | tuple[float, float, float, float] = 0.4,
        flip: bool = True,
        mask: Literal["painter", "query"] = "painter",
        query_half_prob: float = 0.1,
        patch_size: int = 16,
        max_ids: int | None = None,
        on_device: bool = False,
        recolor: float = 0.0,
        jitter_prob: float = 1.0,
        coloring: Literal["random", "fixed"] = "random",
    ) -> None:
        if size[0] % patch_size or size[1] % patch_size:
            raise ValueError(f"size {size} must be a multiple of patch_size {patch_size}")
        if mask not in ("painter", "query"):
            raise ValueError(f"mask must be 'painter' or 'query', got {mask!r}")
        check_scale(scale)
        jitter = (jitter, jitter, jitter, 0.0) if isinstance(jitter, int | float) else tuple(jitter)
        if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
            raise ValueError(f"jitter must be a strength >= 0 or (brightness, contrast, saturation, hue) >= 0 with hue "
                             f"<= 0.5, got {jitter}")
        if not 0 <= jitter_prob <= 1:
            raise ValueError(f"jitter_prob must lie in [0, 1], got {jitter_prob}")
        self.size, self.scale, self.jitter, self.flip = tuple(size), tuple(scale), jitter, flip
        self.jitter_prob = jitter_prob
        self.mask, self.query_half_prob, self.max_ids = mask, query_half_prob, max_ids
        if not 0 <= recolor <= 1:
            raise ValueError(f"recolor must lie in [0, 1], got {recolor}")
        self.on_device, self.recolor = on_device, recolor
        if coloring not in ("random", "fixed"):
            raise ValueError(f"coloring must be 'random' or 'fixed', got {coloring!r}")
        self.coloring = coloring
        self.patch_size, self.grid = patch_size, (2 * size[0] // patch_size, size[1] // patch_size)  # whole canvas

    def __call__(self, pair: Pair, rng: np.random.Generator, scale: tuple[float, float] | None = None
                 ) -> dict[str, np.ndarray | int]:
        """One example: image_canvas, target_canvas (3, 2h, w) uint8, valid (1, 2h, w) uint8, bool_masked_pos (L,)
        bool, seg_type (0 semantic, 1 instance) and `coloured` (a coloured id in view), or with `on_device` the
        `UnfinishedBatch` keys. `scale`: this pair's crop area range (`ShardSource.scale`), if not the transform's."""
        deferred = self._deferred()
        image, labels = self.views(pair, rng, deferred, scale)
        candidates, present = self._candidates(pair.ids, labels)
        mapping = self._colors(draw_mapping(candidates, rng, self.max_ids), pair.label)
        return self._example(image, labels, mapping, present, pair.task, rng, deferred)

    def mixed(self, pairs: list[Pair], rng: np.random.Generator, scale: tuple[float, float] | None = None
              ) -> dict[str, np.ndarray | int]:
        """Mix-context (SegGPT §3.1): pairs of one label space (one semantic source) painted with one mapping, their
        prompt and query views stitched into each half (`coloring.mix_context`); candidates: the union of each
        pair's (`_candidates`), so every pair can contribute a category. `scale` as in `__call__`."""
        if not pairs or any(p.label != pairs[0].label or p.task != pairs[0].task for p in pairs):
            raise ValueError("mix-context needs one or more pairs of one label kind and task")
        h = self.size[0]
        views = [self.views(p, rng, scale=scale) for p in pairs]  # jittered here: a half mixes views
        ids = sorted({i for p, (_, lab) in zip(pairs, views, strict=True) for i in self._candidates(p.ids, lab)[0]})
        image = np.empty((3, 2 * h, self.size[1]), np.uint8)
        labels = np.empty((1, *image.shape[1:]), np.uint16)
        for half in (0, 1):  # the prompt views, then the query views, each stitched into one view
            rows = slice(half * h, (half + 1) * h)
            stitched, labels[0, rows] = mix_context([canvas[:, rows].transpose(1, 2, 0) for canvas, _ in views],
                                                    [lab[0, rows] for _, lab in views], rng, self.size)
            image[:, rows] = stitched.transpose(2, 0, 1)
        mapping = self._colors(draw_mapping(candidate_ids(labels[0, h:], ids), rng, self.max_ids), pairs[0].label)
        present = self._present(labels[0], list(mapping))
        return self._example(image, labels, mapping, present, pairs[0].task, rng, self._deferred())

    def _colors(self, mapping: Mapping, kind: str) -> Mapping:
        """The drawn mapping, its colours replaced by the fixed ones with `coloring="fixed"` (drawn all the same, so
        the other random choices stay those of random colouring)."""
        return fix_colors(mapping, kind) if self.coloring == "fixed" else mapping

    def _deferred(self) -> dict[str, np.ndarray] | None:
        """What `finish_batch` will do to an example (`on_device`): nothing yet (identity colour maps, no flips)."""
        return {"jitter": IDENTITY.repeat(2, 0), "flip": np.zeros(2, bool)} if self.on_device else None

    def views(self, pair: Pair, rng: np.random.Generator, deferred: dict[str, np.ndarray] | None = None,
              scale: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A pair's views, each written into its half of a (3, 2h, w) uint8 image and a (1, 2h, w) uint16 label
        canvas; with `deferred` (`_deferred`) their jitter maps and flips are recorded there, not applied."""
        samples = (pair.prompt, pair.query)
        labels = [_label_map(pair.prompt, pair.label)]
        labels.append(labels[0] if pair.query is pair.prompt else _label_map(pair.query, pair.label))
        boxes = [crop_box(*lab.shape, rng, self.scale if scale is None else scale) for lab in labels]
        if pair.same_image and pair.prompt is pair.query:
            decoded = [_decode(pair.query, labels[1].shape, boxes, self.size)] * 2
        else:
            decoded = [_decode(s, lab.shape, [b], self.size) for s, lab, b in zip(samples, labels, boxes, strict=True)]
        h = self.size[0]
        canvas = np.empty((3, 2 * h, self.size[1]), np.uint8)
        label_canvas = np.empty((1, *canvas.shape[1:]), np.uint16)
        for half, ((image, factor), lab, box) in enumerate(zip(decoded, labels, boxes, strict=True)):
            reduced, box = _reduce_box(box, factor, image.shape[:2])
            img = _resize_image(image, reduced, self.size)
            mirror = self.flip and rng.random() < 0.5
            if deferred is not None:
                deferred["flip"][half], mirror = mirror, False  # a mirrored copy costs a worker time (BENCHMARKS.md §3)
            if mirror:
                img = img[:, ::-1]  # a view: the copy into the canvas mirrors it
            view = canvas[:, half * h : (half + 1) * h]
            stacked = None
            # no coin at jitter_prob 1: the draws stay those of an always-on jitter
            if max(self.jitter) > 0 and (self.jitter_prob >= 1 or rng.random() < self.jitter_prob):
                stacked = _jitter_map(rng, *self.jitter)
            if self.recolor > 0 and rng.random() < self.recolor:
                stacked = _recolor_map(IDENTITY[0].astype(np.float64) if stacked is None else stacked, rng)
            if stacked is not None and deferred is None:
                _jitter(img, stacked, out=view)
            else:
                view[...] = img.transpose(2, 0, 1)
                if stacked is not None:
                    deferred["jitter"][half] = stacked
            label_canvas[0, half * h : (half + 1) * h] = _resize_label(lab, box, self.size, mirror)
        return canvas, label_canvas

    def _example(self, image: np.ndarray, labels: np.ndarray, mapping: Mapping, present: set[int], task: str,
                 rng: np.random.Generator, deferred: dict[str, np.ndarray] | None = None
                 ) -> dict[str, np.ndarray | int]:
        """Image canvas, label canvas and mapping -> the example with its patch mask (painted unless `on_device`)."""
        if self.mask == "painter":
            masked = painter_mask(self.grid, rng, query_half_prob=self.query_half_prob)
        else:
            masked = query_half_mask(self.grid)
        example = {"image_canvas": image}  # (3, 2h, w)
        if self.on_device:
            example["label_canvas"] = labels.view(np.int16)  # the 16-bit ids; torch has few uint16 operations
            example["palette"] = np.array([(i, *c) for i, c in mapping.items()], np.int32).reshape(-1, 4)
        else:
            # target (3, 2h, w); valid (1, 2h, w) uint8: a quarter of float32 to move
            example["target_canvas"], example["valid"] = paint_planes(labels, mapping)
        example.update(bool_masked_pos=masked, seg_type=int(task == "instance"),  # (L,)
                       coloured=not present.isdisjoint(mapping))
        example.update(deferred or {})  # jitter (2, 3, 7) and flip (2,): prompt view, query view
        return example

    @staticmethod
    def _present(label: np.ndarray, ids: list[int]) -> set[int]:
        """The ids of `ids` that `label` holds (all that it holds, beyond `SCAN_IDS` ids)."""
        if len(ids) <= SCAN_IDS:
            return {i for i in ids if (label == i).any()}
        return set(candidate_ids(label).tolist())

    @classmethod
    def _candidates(cls, ids: list[int], labels: np.ndarray) -> tuple[list[int], set[int]]:
        """The pair's ids in both views of the (1, 2h, w) label canvas, else in the query view, else all of them (the
        target is then black, still a valid example), and the ids in either view."""
        h = labels.shape[1] // 2
        prompt, query = (cls._present(v, ids) for v in (labels[0, :h], labels[0, h:]))
        in_query = [i for i in ids if i in query]
        return [i for i in in_query if i in prompt] or in_query or list(ids), prompt | query


class UnfinishedBatch(TypedDict):
    """What the training loader yields with `PairTransform(on_device=True)` (`pretrain.collate`); `finish_batch`
    makes it an `InContextBatch` on the accelerator (`PretrainDataModule.on_after_batch_transfer`)."""

    image_canvas: torch.Tensor  # (B, 3, H, W) uint8, not yet jittered or flipped
    label_canvas: torch.Tensor  # (B, 1, H, W) int16: the views' 16-bit label ids, to paint
    palette: torch.Tensor  # (B, K, 4) int32 rows (id, r, g, b): each example's colour mapping
    # (B, 2, 3, 7) colour maps of the prompt and query views, [M | o | K]: x -> M x + o + K mean(view)
    jitter: torch.Tensor
    flip: torch.Tensor  # (B, 2) bool: views to mirror left-right, image and labels
    bool_masked_pos: torch.Tensor  # (B, L) bool: target patches replaced by the mask token
    seg_type: torch.Tensor  # (B,) long: 0 semantic, 1 instance
    stats: NotRequired[dict[str, float]]  # as `InContextBatch`'s


def paint_batch(label_canvas: torch.Tensor, palette: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`coloring.paint_planes` for a batch, on its device: label canvases (B, 1, H, W) int16 and palettes (B, K, 4)
    (id, r, g, b) -> target (B, 3, H, W) and valid (B, 1, H, W) uint8, through one (B, 65536, 3) colour table."""
    b = len(label_canvas)
    ids = label_canvas[:, 0].int() & 0xFFFF  # (B, H, W): int16 back to 16-bit ids
    table = torch.zeros(b, NUM_LABELS, 3, dtype=torch.uint8, device=label_canvas.device)
    rows = torch.arange(b, device=table.device)
    table[rows[:, None], palette[..., 0].long()] = palette[..., 1:].to(torch.uint8)
    table[:, SEM_VOID] = 0  # void (and the padding rows) stay black
    target = table[rows[:, None, None], ids].permute(0, 3, 1, 2).contiguous()
    return target, (ids != SEM_VOID).to(torch.uint8)[:, None]


def _flip_views(canvas: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """(B, C, 2h, w) canvases with their prompt and query views mirrored left-right where `flips` (B, 2) is set."""
    b, c, height, w = canvas.shape
    views = canvas.view(b, c, 2, height // 2, w)
    return torch.where(flips.to(canvas.device)[:, None, :, None, None], views.flip(-1), views).view(b, c, height, w)


def finish_batch(batch: InContextBatch | UnfinishedBatch) -> InContextBatch:
    """`UnfinishedBatch` -> `InContextBatch` on its device: the views' colour maps applied as on the CPU, the flips,
    the painting (`paint_batch`); a finished batch is returned as it is. Nearly free there (BENCHMARKS.md §7)."""
    maps = batch.pop("jitter", None)
    if maps is not None:
        image = batch["image_canvas"]
        b, c, height, w = image.shape
        x = image.view(b, c, 2, height // 2, w).float()  # (B, 3, 2, h, w): the prompt and query views
        maps = maps.to(x)
        offset = maps[..., 3] + torch.einsum("bvcd,bdv->bvc", maps[..., 4:], x.mean((3, 4)))  # (B, 2, 3)
        y = torch.einsum("bvcd,bdvhw->bcvhw", maps[..., :3], x) + offset.transpose(1, 2)[..., None, None]
        batch["image_canvas"] = (y + 0.5).clamp_(0, 255).to(torch.uint8).reshape(b, c, height, w)
    labels = batch.pop("label_canvas", None)
    flips = batch.pop("flip", None)
    if flips is not None:
        batch["image_canvas"] = _flip_views(batch["image_canvas"], flips)
        labels = _flip_views(labels, flips) if labels is not None else None
    if labels is not None:
        batch["target_canvas"], batch["valid"] = paint_batch(labels, batch.pop("palette"))
    return batch

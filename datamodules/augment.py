"""Pair augmentation: two views -> one training example on the canvas (SegGPT section 4.1).

The paper's augmentations are random resized crop, colour jitter and random horizontal flip, with a
single input image of 448 x 448. Each view of a `Pair` gets its own draws, so two views of one image
(`pair.same_image`) are two different crops; image and label always share a view's crop and flip.

    transform = PairTransform(size=(448, 448))
    example = transform(pair, rng)          # one example, numpy, channels first
    batch = collate([example, ...])         # InContextBatch of torch tensors

Shapes: h, w = `size`; a canvas is (3, 2h, w), the prompt view on top and the query view below.

Choices the paper leaves open, made here:

- Crop: torchvision's `RandomResizedCrop` rule (area fraction uniform in `scale`, aspect ratio
  log-uniform in `ratio`, 10 tries, then the largest centred crop within `ratio`). The crop box is drawn
  from the header's size before decoding, so a JPEG is decoded at the smallest DCT scale (1/2, 1/4,
  1/8) that still gives the crop at least the output's resolution (PIL `Image.draft`), once per image
  even when both views come from it.
- Resampling: the image is cropped and resized in one PIL bilinear `resize` with a float box
  (antialiased when shrinking); the label takes the source pixel under each output pixel centre, on
  the same sampling grid, so label values are never interpolated.
- Colour jitter: torchvision's brightness, contrast and saturation factors (uniform in [1 - x, 1 + x],
  in a random order), composed into one affine colour matrix applied by PIL in a single uint8 pass
  (`Image.convert` with a matrix). Unlike torchvision, intermediate results are not clipped, only the
  final one. Hue is not jittered (the paper names colour jitter only).
- Colouring: one `random_coloring` mapping for both halves. Candidates are the pair's `ids` present in
  both cropped views; if none is, those present in the query view; if none is, all of the pair's ids
  (the target is then black, which is still a valid example: nothing of the task is in view).
- Mix-context (`PairTransform.mixed`) takes several pairs of one semantic source, so that an id names
  one category in all of them; the data module groups them (datamodules/pretrain.py).

Everything is PIL or numpy on uint8 with no per-pixel Python. On one core, 448 x 448 examples from
640 x 480 sources: about 96/s from decoded arrays (crops 2 x 2.2 ms, jitter 2 x 1.2 ms, colouring
1.7 ms), about 89/s from JPEG bytes (decoding included) and 47/s from 1600 x 1200 JPEGs (drafted).
"""

from __future__ import annotations

import io
import math
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageStat

from datamodules.coloring import candidate_ids, mix_context, random_coloring
from datamodules.masking import painter_mask, query_half_mask
from datamodules.pairing import Pair
from datamodules.schema import Sample
from seggpt_lab.canvas import InContextBatch

GRAY = np.array([0.2989, 0.587, 0.114])  # torchvision rgb_to_grayscale weights (ITU-R 601-2 luma)
Box = tuple[float, float, float, float]  # (top, left, height, width) in source pixels


def crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Box:
    """A random crop (top, left, height, width) of a height x width image, torchvision `RandomResizedCrop` rule.

    Area fraction uniform in `scale`, aspect ratio (width / height) log-uniform in `ratio`; after 10 misses,
    the largest centred crop whose ratio is clamped to `ratio`.
    """
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


def _resize_image(image: Image.Image, box: Box, size: tuple[int, int], factor: float = 1.0) -> Image.Image:
    """Crop `box` (in source pixels; the image is that source reduced `factor` times) and resize to `size` (h, w)."""
    top, left, h, w = (v / factor for v in box)
    return image.resize((size[1], size[0]), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))


def _resize_label(label: np.ndarray, box: Box, size: tuple[int, int]) -> np.ndarray:
    """Nearest neighbour on PIL's sampling grid: the source pixel under each output pixel centre."""
    top, left, h, w = box
    rows = np.floor(top + (np.arange(size[0]) + 0.5) * (h / size[0])).astype(np.intp)
    cols = np.floor(left + (np.arange(size[1]) + 0.5) * (w / size[1])).astype(np.intp)
    rows = np.clip(rows, int(top), math.ceil(top + h) - 1)
    cols = np.clip(cols, int(left), math.ceil(left + w) - 1)
    return label.take(rows, axis=0).take(cols, axis=1)


def random_resized_crop(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    size: tuple[int, int],
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image and (H, W) int label -> (h, w, 3) and (h, w), one random crop of both.

    The image is resampled bilinearly (antialiased), the label by nearest neighbour on the same grid.
    """
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} sizes differ")
    box = crop_box(*label.shape, rng, scale, ratio)
    return np.asarray(_resize_image(Image.fromarray(image), box, size)), _resize_label(label, box, size)


def flip(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, p: float = 0.5
         ) -> tuple[np.ndarray, np.ndarray]:
    """Mirror image (H, W, 3) and label (H, W) left-right together with probability p (views, no copy)."""
    if rng.random() < p:
        return image[:, ::-1], label[:, ::-1]
    return image, label


def _jitter_matrix(mean_rgb: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float,
                   saturation: float) -> tuple[float, ...]:
    """The 12-tuple affine colour matrix (PIL `convert` layout) of one torchvision-style jitter draw.

    Every step is affine in the pixel, so the composition is too: brightness scales, contrast blends with
    the mean grey level (a scalar, from the input's mean colour pushed through the steps so far),
    saturation blends with each pixel's own grey level.
    """
    matrix, offset = np.eye(3), np.zeros(3)
    for step in rng.permutation(3):
        spread = (brightness, contrast, saturation)[step]
        f = rng.uniform(max(0.0, 1 - spread), 1 + spread)
        if step == 0:
            matrix, offset = f * matrix, f * offset
        elif step == 1:
            mean_gray = GRAY @ (matrix @ mean_rgb + offset)
            matrix, offset = f * matrix, f * offset + (1 - f) * mean_gray
        else:
            blend = f * np.eye(3) + (1 - f) * np.outer(np.ones(3), GRAY)
            matrix, offset = blend @ matrix, blend @ offset
    return tuple(float(v) for v in np.concatenate([matrix, offset[:, None]], axis=1).ravel())


def _jitter(image: Image.Image, rng: np.random.Generator, brightness: float, contrast: float,
            saturation: float) -> Image.Image:
    mean_rgb = np.array(ImageStat.Stat(image).mean)
    return image.convert("RGB", _jitter_matrix(mean_rgb, rng, brightness, contrast, saturation))


def color_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8 with random brightness, contrast and saturation (random order)."""
    return np.asarray(_jitter(Image.fromarray(np.ascontiguousarray(image)), rng, brightness, contrast, saturation))


def _label_map(sample: Sample, label: Literal["sem", "ins"]) -> np.ndarray:
    lab = sample.sem if label == "sem" else sample.ins
    if lab is None:
        raise ValueError(f"{sample.key}: the pair colours its {label!r} map, which the sample does not have")
    return lab


def _decode(sample: Sample, shape: tuple[int, int], boxes: list[Box], size: tuple[int, int]
            ) -> tuple[Image.Image, float]:
    """The sample's RGB image at the smallest JPEG scale that keeps every box at `size` or more, and that scale.

    `shape` is the label's (H, W), which the image must match.
    """
    image = Image.open(io.BytesIO(sample.image))
    width, height = image.size
    if (height, width) != shape:
        raise ValueError(f"{sample.key}: image {(height, width)} and label {shape} sizes differ")
    need = (max(math.ceil(width * size[1] / b[3]) for b in boxes),
            max(math.ceil(height * size[0] / b[2]) for b in boxes))
    drafted = image.draft("RGB", need)  # None for PNG: decoded at full size
    factor = width / drafted[1][2] if drafted else 1.0  # the box is the source's size divided by the DCT scale
    return image.convert("RGB"), factor


class PairTransform:
    """A `Pair` -> one training example: two augmented views painted with one colour mapping, and a patch mask.

    Args:
        size: (h, w) of one view; the canvas is (2h, w). Paper: 448 x 448.
        scale: range of the crop's area as a fraction of the image's.
        jitter: brightness, contrast and saturation jitter strength (0 turns jitter off).
        flip: mirror each view left-right with probability 0.5.
        mask: "painter" for Painter's block-wise masking (the query half with probability
            `query_half_prob`), "query" to always mask the query half (the inference setting).
        query_half_prob: probability of masking the query half in "painter" mode (Painter: 0.1).
        patch_size: the model's patch size; both sides of `size` must be multiples of it.
        max_ids: at most this many ids are coloured per example (default: no cap).
    """

    def __init__(
        self,
        size: tuple[int, int] = (448, 448),
        scale: tuple[float, float] = (0.3, 1.0),
        jitter: float = 0.4,
        flip: bool = True,
        mask: Literal["painter", "query"] = "painter",
        query_half_prob: float = 0.1,
        patch_size: int = 16,
        max_ids: int | None = None,
    ) -> None:
        if size[0] % patch_size or size[1] % patch_size:
            raise ValueError(f"size {size} must be a multiple of patch_size {patch_size}")
        if mask not in ("painter", "query"):
            raise ValueError(f"mask must be 'painter' or 'query', got {mask!r}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        self.size, self.scale, self.jitter, self.flip = tuple(size), tuple(scale), jitter, flip
        self.mask, self.query_half_prob, self.max_ids = mask, query_half_prob, max_ids
        self.grid = (2 * size[0] // patch_size, size[1] // patch_size)  # patches of the whole canvas

    def __call__(self, pair: Pair, rng: np.random.Generator) -> dict[str, np.ndarray | int]:
        """One example: image_canvas and target_canvas (3, 2h, w) uint8, valid (1, 2h, w) uint8,
        bool_masked_pos (L,) bool with L = 2h * w / patch_size^2, seg_type 0 (semantic) or 1 (instance)."""
        images, views = self.views(pair, rng)
        targets, valid, _ = random_coloring(views, rng, ids=self._candidates(pair.ids, views), max_ids=self.max_ids)
        return self._example(images, targets, valid, pair.task, rng)

    def mixed(self, pairs: list[Pair], rng: np.random.Generator) -> dict[str, np.ndarray | int]:
        """Mix-context (paper section 3.1): several pairs painted with one colour mapping, their prompt views
        stitched into the prompt half and their query views into the query half (`coloring.mix_context`:
        a grid, then one random crop resized to a view's size). The pairs must share one label space (one
        semantic source): an id means the same category in all of them. Candidates are the union of each
        pair's candidates (`_candidates`), so every pair can contribute a coloured category."""
        if not pairs or any(p.label != pairs[0].label or p.task != pairs[0].task for p in pairs):
            raise ValueError("mix-context needs one or more pairs of one label kind and task")
        views = [self.views(p, rng) for p in pairs]
        ids = sorted({i for p, (_, labels) in zip(pairs, views, strict=True) for i in self._candidates(p.ids, labels)})
        labels = [lab for _, labs in views for lab in labs]  # prompt, query, prompt, query, ...
        targets, valid, _ = random_coloring(labels, rng, ids=ids, max_ids=self.max_ids)
        halves = []
        for half in (0, 1):  # the prompt views, then the query views, each stitched into one view
            halves.append(mix_context([imgs[half] for imgs, _ in views], targets[half::2], valid[half::2], rng,
                                      self.size))
        images, targets, valid = (list(parts) for parts in zip(*halves, strict=True))
        return self._example(images, targets, valid, pairs[0].task, rng)

    def views(self, pair: Pair, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The two augmented views of a pair: images [(h, w, 3) uint8] * 2 and label maps [(h, w)] * 2,
        prompt first; each view has its own crop, flip and jitter, shared by its image and label."""
        samples = (pair.prompt, pair.query)
        labels = [_label_map(s, pair.label) for s in samples]
        boxes = [crop_box(*lab.shape, rng, self.scale) for lab in labels]
        if pair.same_image and pair.prompt is pair.query:
            decoded = [_decode(pair.query, labels[1].shape, boxes, self.size)] * 2
        else:
            decoded = [_decode(s, lab.shape, [b], self.size) for s, lab, b in zip(samples, labels, boxes, strict=True)]
        images, views = [], []
        for (image, factor), lab, box in zip(decoded, labels, boxes, strict=True):
            img, lab = _resize_image(image, box, self.size, factor), _resize_label(lab, box, self.size)
            if self.flip and rng.random() < 0.5:
                img, lab = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), lab[:, ::-1]
            if self.jitter > 0:
                img = _jitter(img, rng, self.jitter, self.jitter, self.jitter)
            images.append(np.asarray(img))
            views.append(lab)
        return images, views

    def _example(self, images: list[np.ndarray], targets: list[np.ndarray], valid: list[np.ndarray], task: str,
                 rng: np.random.Generator) -> dict[str, np.ndarray | int]:
        """Prompt and query views -> the example dict, with this example's patch mask."""
        if self.mask == "painter":
            masked = painter_mask(self.grid, rng, query_half_prob=self.query_half_prob)
        else:
            masked = query_half_mask(self.grid)
        return {
            "image_canvas": np.concatenate(images, axis=0).transpose(2, 0, 1),  # (3, 2h, w)
            "target_canvas": np.concatenate(targets, axis=0).transpose(2, 0, 1),  # (3, 2h, w)
            "valid": np.concatenate(valid, axis=0)[None],  # (1, 2h, w) uint8: a quarter of float32 to move
            "bool_masked_pos": masked,  # (L,)
            "seg_type": int(task == "instance"),
        }

    @staticmethod
    def _candidates(ids: list[int], views: list[np.ndarray]) -> list[int]:
        """The pair's ids in both views, else in the query view, else all of them (see the module docstring)."""
        prompt, query = (set(candidate_ids(v).tolist()) for v in views)
        in_query = [i for i in ids if i in query]
        return [i for i in in_query if i in prompt] or in_query or list(ids)


def collate(examples: list[dict[str, np.ndarray | int]]) -> InContextBatch:
    """Examples from `PairTransform` -> one `InContextBatch` of torch tensors (canvases stay uint8); the last
    example's `stats`, if any, become the batch's."""
    if not examples:
        raise ValueError("collate needs at least one example")

    def stack(key: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([e[key] for e in examples]))

    batch = InContextBatch(
        image_canvas=stack("image_canvas"),
        target_canvas=stack("target_canvas"),
        valid=stack("valid"),
        bool_masked_pos=stack("bool_masked_pos"),
        seg_type=torch.tensor([e["seg_type"] for e in examples], dtype=torch.long),
    )
    if "stats" in examples[-1]:  # a batch comes from one worker: its latest running counts
        batch["stats"] = examples[-1]["stats"]
    return batch

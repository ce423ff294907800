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
  even when both views come from it; on a reduced image the box snaps to the nearest whole pixels.
- Resampling: the image's crop (whole pixels) is resized bilinearly, antialiased when shrinking, by torch's
  uint8 kernel (PIL's filter, about 2.5x faster than PIL's `resize` here; like torchvision, and unlike
  PIL's `resize` with a box, no tap reaches outside the crop); the label takes the source pixel under each
  output pixel centre, on the same sampling grid, so label values are never interpolated.
- Colour jitter: torchvision's brightness, contrast and saturation factors (uniform in [1 - x, 1 + x],
  in a random order), composed into one affine colour map applied as one float matrix product per view,
  rounded to uint8. Unlike torchvision, intermediate results are not clipped, only the final one. Hue is
  not jittered (the paper names colour jitter only). With `jitter_on_device` the maps travel with the
  batch and `apply_jitter` applies them on the accelerator (the same maps, so the same distribution).
- Colouring: one `random_coloring` mapping for both halves. Candidates are the pair's `ids` present in
  both cropped views; if none is, those present in the query view; if none is, all of the pair's ids
  (the target is then black, which is still a valid example: nothing of the task is in view).
- Mix-context (`PairTransform.mixed`) takes several pairs of one semantic source, so that an id names
  one category in all of them; the data module groups them (datamodules/pretrain.py).

Canvases are built channels first in place: each view is written into its half of the (3, 2h, w) image
canvas and painted into the target canvas plane by plane (`coloring.paint_planes`), so no transposed copy
is made and `collate` stacks contiguous arrays. Everything is torch, PIL or numpy on uint8 (the jitter in
float) with no per-pixel Python; `benchmarks/pretrain_data_speed.py` measures the whole pipeline.
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from datamodules.coloring import candidate_ids, draw_mapping, mix_context, paint_planes, random_coloring
from datamodules.masking import painter_mask, query_half_mask
from datamodules.pairing import Pair
from datamodules.schema import Sample
from seggpt_lab.canvas import InContextBatch

GRAY = np.array([0.2989, 0.587, 0.114])  # torchvision rgb_to_grayscale weights (ITU-R 601-2 luma)
Box = tuple[float, float, float, float]  # (top, left, height, width) in source pixels
IDENTITY = np.eye(3, 4, dtype=np.float32)[None]  # (1, 3, 4): the colour map of a view without jitter
# up to this many ids, presence in a view is one comparison per id (0.03 ms each at 448 x 448), not one count over
# all 65536 label values (0.6 ms)
SCAN_IDS = 8


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
    when shrinking (torch's uint8 kernel, PIL's filter; taps outside the box are not read).

    Channels last in and out: torch's vectorised uint8 path, about twice its channels-first one.
    """
    top, left, h, w = box
    crop = _as_tensor(image)[:, :, top : top + h, left : left + w]
    resized = F.interpolate(crop, size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].permute(1, 2, 0).numpy()


def _resize_label(label: np.ndarray, box: Box, size: tuple[int, int], mirror: bool = False) -> np.ndarray:
    """Nearest neighbour on the image's sampling grid: the source pixel under each output pixel centre
    (left-right mirrored when `mirror`)."""
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
    """(H, W, 3) uint8 image and (H, W) int label -> (h, w, 3) and (h, w), one random crop of both.

    The image is resampled bilinearly (antialiased), the label by nearest neighbour on the same grid.
    """
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


def _jitter_matrix(mean_rgb: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float,
                   saturation: float) -> tuple[np.ndarray, np.ndarray]:
    """The (3, 3) matrix and (3,) offset of one torchvision-style jitter draw, an affine map of each RGB pixel.

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
    return matrix, offset


def _jitter(image: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float, saturation: float,
            out: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 -> `out` (3, h, w) uint8: one jitter draw as one float matrix product, rounded and clipped.

    Channels first for the product: (3, 3) @ (3, h * w) is a fast matrix product, (h * w, 3) @ (3, 3) a slow one.
    """
    x = np.empty(out.shape, np.float32)
    np.copyto(x, image.transpose(2, 0, 1))  # cast and transpose in one pass
    x = torch.from_numpy(x).view(3, -1)  # (3, h * w)
    matrix, offset = _jitter_matrix(x.mean(1).double().numpy(), rng, brightness, contrast, saturation)
    # + 0.5: the cast to uint8 truncates, so this rounds to nearest (numpy's cast: several times torch's)
    y = torch.addmm(torch.from_numpy(offset + 0.5).float()[:, None], torch.from_numpy(matrix).float(), x)
    np.copyto(out, y.clamp_(0, 255).numpy().reshape(out.shape), casting="unsafe")
    return out


def color_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8 with random brightness, contrast and saturation (random order)."""
    out = np.empty((3, *image.shape[:2]), np.uint8)
    return _jitter(image, rng, brightness, contrast, saturation, out).transpose(1, 2, 0)


def _label_map(sample: Sample, label: Literal["sem", "ins"]) -> np.ndarray:
    lab = sample.sem if label == "sem" else sample.ins
    if lab is None:
        raise ValueError(f"{sample.key}: the pair colours its {label!r} map, which the sample does not have")
    return lab


def _decode(sample: Sample, shape: tuple[int, int], boxes: list[Box], size: tuple[int, int]
            ) -> tuple[np.ndarray, float]:
    """The sample's image as (H', W', 3) uint8 at the smallest JPEG scale that keeps every box at `size` or more,
    and the factor H / H' it is reduced by. `shape` is the label's (H, W), which the image must match."""
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
        jitter: brightness, contrast and saturation jitter strength (0 turns jitter off).
        flip: mirror each view left-right with probability 0.5.
        mask: "painter" for Painter's block-wise masking (the query half with probability
            `query_half_prob`), "query" to always mask the query half (the inference setting).
        query_half_prob: probability of masking the query half in "painter" mode (Painter: 0.1).
        patch_size: the model's patch size; both sides of `size` must be multiples of it.
        max_ids: at most this many ids are coloured per example (default: no cap).
        jitter_on_device: leave each view's colour jitter to `apply_jitter`, which runs after the batch reaches
            the accelerator (`PretrainDataModule.on_after_batch_transfer`): the example carries the views' affine
            colour maps (`jitter`, (2, 3, 4)) and its image canvas is not jittered yet. Mix-context examples
            are jittered here (their halves mix several views) and carry identity maps.
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
        jitter_on_device: bool = False,
    ) -> None:
        if size[0] % patch_size or size[1] % patch_size:
            raise ValueError(f"size {size} must be a multiple of patch_size {patch_size}")
        if mask not in ("painter", "query"):
            raise ValueError(f"mask must be 'painter' or 'query', got {mask!r}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        self.size, self.scale, self.jitter, self.flip = tuple(size), tuple(scale), jitter, flip
        self.mask, self.query_half_prob, self.max_ids = mask, query_half_prob, max_ids
        self.jitter_on_device = jitter_on_device
        self.grid = (2 * size[0] // patch_size, size[1] // patch_size)  # patches of the whole canvas

    def __call__(self, pair: Pair, rng: np.random.Generator) -> dict[str, np.ndarray | int]:
        """One example: image_canvas and target_canvas (3, 2h, w) uint8, valid (1, 2h, w) uint8,
        bool_masked_pos (L,) bool with L = 2h * w / patch_size^2, seg_type 0 (semantic) or 1 (instance)."""
        maps = IDENTITY.repeat(2, 0) if self.jitter_on_device else None
        image, labels = self.views(pair, rng, maps)
        mapping = draw_mapping(self._candidates(pair.ids, labels), rng, self.max_ids)
        return self._example(image, *paint_planes(labels, mapping), pair.task, rng, maps)

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
        h = self.size[0]
        image = np.empty((3, 2 * h, self.size[1]), np.uint8)
        target, weight = np.empty_like(image), np.empty((1, *image.shape[1:]), np.uint8)
        for half in (0, 1):  # the prompt views, then the query views, each stitched into one view
            rows = slice(half * h, (half + 1) * h)
            stitched = mix_context([canvas[:, rows].transpose(1, 2, 0) for canvas, _ in views], targets[half::2],
                                   valid[half::2], rng, self.size)
            image[:, rows], target[:, rows] = (a.transpose(2, 0, 1) for a in stitched[:2])
            weight[0, rows] = stitched[2]
        maps = IDENTITY.repeat(2, 0) if self.jitter_on_device else None  # jittered here: a half mixes views
        return self._example(image, target, weight, pairs[0].task, rng, maps)

    def views(self, pair: Pair, rng: np.random.Generator, maps: np.ndarray | None = None
              ) -> tuple[np.ndarray, list[np.ndarray]]:
        """The two augmented views of a pair: one (3, 2h, w) uint8 image canvas (prompt view on top) and their
        label maps [(h, w)] * 2; each view has its own crop, flip and jitter, shared by its image and label.
        With `maps` ((2, 3, 4) float32), each view's jitter is written there as an affine colour map instead of
        being applied."""
        samples = (pair.prompt, pair.query)
        labels = [_label_map(s, pair.label) for s in samples]
        boxes = [crop_box(*lab.shape, rng, self.scale) for lab in labels]
        if pair.same_image and pair.prompt is pair.query:
            decoded = [_decode(pair.query, labels[1].shape, boxes, self.size)] * 2
        else:
            decoded = [_decode(s, lab.shape, [b], self.size) for s, lab, b in zip(samples, labels, boxes, strict=True)]
        h = self.size[0]
        canvas = np.empty((3, 2 * h, self.size[1]), np.uint8)
        views = []
        for half, ((image, factor), lab, box) in enumerate(zip(decoded, labels, boxes, strict=True)):
            reduced, box = _reduce_box(box, factor, image.shape[:2])
            img = _resize_image(image, reduced, self.size)
            mirror = self.flip and rng.random() < 0.5
            if mirror:
                img = img[:, ::-1]  # a view: the copy into the canvas mirrors it
            view = canvas[:, half * h : (half + 1) * h]
            if self.jitter > 0 and maps is None:
                _jitter(img, rng, self.jitter, self.jitter, self.jitter, out=view)
            else:
                view[...] = img.transpose(2, 0, 1)
                if self.jitter > 0:
                    pixels = view.size // 3  # a 32-bit sum is twice as fast and exact below 2^32 / 255 pixels
                    mean = view.reshape(3, -1).sum(1, dtype=np.uint32 if pixels < 2**24 else np.uint64) / pixels
                    matrix, offset = _jitter_matrix(mean, rng, self.jitter, self.jitter, self.jitter)
                    maps[half] = np.concatenate([matrix, offset[:, None]], axis=1)
            views.append(_resize_label(lab, box, self.size, mirror))
        return canvas, views

    def _example(self, image: np.ndarray, target: np.ndarray, valid: np.ndarray, task: str,
                 rng: np.random.Generator, maps: np.ndarray | None = None) -> dict[str, np.ndarray | int]:
        """Canvases (3, 2h, w) and valid (1, 2h, w) -> the example dict, with this example's patch mask."""
        if self.mask == "painter":
            masked = painter_mask(self.grid, rng, query_half_prob=self.query_half_prob)
        else:
            masked = query_half_mask(self.grid)
        example = {
            "image_canvas": image,  # (3, 2h, w)
            "target_canvas": target,  # (3, 2h, w)
            "valid": valid,  # (1, 2h, w) uint8: a quarter of float32 to move
            "bool_masked_pos": masked,  # (L,)
            "seg_type": int(task == "instance"),
        }
        if maps is not None:
            example["jitter"] = maps  # (2, 3, 4): prompt view, query view
        return example

    @staticmethod
    def _candidates(ids: list[int], views: list[np.ndarray]) -> list[int]:
        """The pair's ids in both views, else in the query view, else all of them (see the module docstring)."""
        if len(ids) <= SCAN_IDS:
            prompt, query = ({i for i in ids if (v == i).any()} for v in views)
        else:
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
    if "jitter" in examples[0]:
        batch["jitter"] = stack("jitter")  # (B, 2, 3, 4), for `apply_jitter`
    if "stats" in examples[-1]:  # a batch comes from one worker: its latest running counts
        batch["stats"] = examples[-1]["stats"]
    return batch


def apply_jitter(batch: InContextBatch) -> InContextBatch:
    """Apply and remove the batch's per-view colour maps (`jitter`, (B, 2, 3, 4) from `collate`) on the image
    canvas's device, rounded and clipped to uint8 as `PairTransform` does on the CPU; a batch without them is
    returned as it is. On an accelerator this is nearly free; in a DataLoader worker it is ~1.2 ms a view."""
    maps = batch.pop("jitter", None)
    if maps is None:
        return batch
    image = batch["image_canvas"]
    b, c, height, w = image.shape
    x = image.view(b, c, 2, height // 2, w).float()  # (B, 3, 2, h, w): the prompt and query views
    maps = maps.to(x)
    y = torch.einsum("bvcd,bdvhw->bcvhw", maps[..., :3], x) + maps[..., 3].transpose(1, 2)[..., None, None]
    batch["image_canvas"] = (y + 0.5).clamp_(0, 255).to(torch.uint8).reshape(b, c, height, w)
    return batch

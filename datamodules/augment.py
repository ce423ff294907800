"""Pair augmentation: two views -> one training example on the canvas (SegGPT section 4.1).

The paper's augmentations are random resized crop, colour jitter and random horizontal flip, with a
single input image of 448 x 448. Each view of a `Pair` gets its own draws, so two views of one image
(`pair.same_image`) are two different crops; image and label always share a view's crop and flip.

    transform = PairTransform(size=(448, 448))
    example = transform(pair, rng)          # one example, numpy, channels first
    batch = collate([example, ...])         # (datamodules.pretrain) InContextBatch; UnfinishedBatch with on_device
    batch = finish_batch(batch)             # with on_device=True: jitter and paint, after the transfer

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
- Colour jitter: torchvision's `ColorJitter(brightness, contrast, saturation, hue)` factors (uniform in
  [1 - x, 1 + x], the hue shift uniform in [-hue, hue], in a random order), applied to a view with
  probability `jitter_prob` (images only: targets are painted after), composed into one affine colour map
  applied as one float matrix product per view, rounded to uint8. Unlike torchvision, intermediate results
  are not clipped, only the final one, and the hue step is not torchvision's HSV shift (not affine) but the
  rotation of RGB about the grey axis by the same fraction of a turn (`_hue_rotation`; equal to
  torchvision's at multiples of 120 degrees, our choice). The default, 0.4 for brightness, contrast and
  saturation, no hue, always applied, is our choice (the paper names colour jitter only); Painter's
  training, which SegGPT keeps, uses `ColorJitter(0.4, 0.4, 0.2, 0.1)` with p = 0.8 (Painter
  `main_train.py:234-236`), which recipes/pretrain_vit_l.yaml sets. With `on_device` the maps travel with the batch
  and `finish_batch` applies them on the accelerator (the same maps, so the same distribution); the
  contrast step's mean colour is then taken there too (`_jitter_map` keeps it apart), and the flips
  are done there as well.
- Colouring: one `draw_mapping` mapping for both halves. Candidates are the pair's `ids` present in
  both cropped views; if none is, those present in the query view; if none is, all of the pair's ids
  (the target is then black, which is still a valid example: nothing of the task is in view).
- Mix-context (`PairTransform.mixed`) takes several pairs of one semantic source, so that an id names
  one category in all of them, and stitches their images and label maps; the data module groups them
  (datamodules/pretrain.py).

Canvases are built channels first in place: each view is written into its half of the (3, 2h, w) image
canvas and its labels into the (1, 2h, w) label canvas, which is painted in one go (`coloring.paint_planes`,
or `paint_batch` on the accelerator with `on_device`), so no transposed copy is made and `pretrain.collate` stacks
contiguous arrays. Everything is torch, PIL or numpy on uint8 (the jitter in float) with no per-pixel Python;
`benchmarks/pretrain_data_speed.py` measures the whole pipeline.
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

from datamodules.coloring import NUM_LABELS, Mapping, candidate_ids, draw_mapping, mix_context, paint_planes
from datamodules.masking import painter_mask, query_half_mask
from datamodules.pairing import Pair
from datamodules.schema import SEM_VOID, Sample
from seggpt_lab.canvas import InContextBatch

GRAY = np.array([0.2989, 0.587, 0.114])  # torchvision rgb_to_grayscale weights (ITU-R 601-2 luma)
Box = tuple[float, float, float, float]  # (top, left, height, width) in source pixels
IDENTITY = np.eye(3, 7, dtype=np.float32)[None]  # (1, 3, 7): the colour map of a view without jitter
# up to this many ids, presence in a view is one comparison per id (0.03 ms each at 448 x 448), not one count over
# all 65536 label values (0.6 ms)
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


def _hue_rotation(shift: float) -> np.ndarray:
    """(3, 3) rotation of RGB about the grey axis (1, 1, 1) by `shift` turns: a hue shift that is linear.

    Positive shifts turn red towards yellow and green, as torchvision's `adjust_hue` (HSV hue + shift) does, and
    a third of a turn maps red to green exactly as it does; in between the two differ (this one keeps each
    pixel's mean level and its distance from grey, HSV keeps its largest and smallest channel), by about 0.005
    turn of hue (median over saturated pixels) at Painter's 0.1 (tests/datamodules/test_augment.py).
    """
    theta = 2 * math.pi * shift
    k = np.full(3, 1 / math.sqrt(3))
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])  # cross @ x = k x x
    return math.cos(theta) * np.eye(3) + math.sin(theta) * cross + (1 - math.cos(theta)) * np.outer(k, k)


def _jitter_map(rng: np.random.Generator, brightness: float, contrast: float, saturation: float, hue: float = 0.0
                ) -> np.ndarray:
    """One torchvision-style jitter draw as a (3, 7) float64 map [M | o | K] of an RGB pixel x of a view whose mean
    colour is mu: x -> M x + o + K mu.

    Every step is affine in the pixel, so the composition is too: brightness scales, saturation blends with each
    pixel's own grey level, contrast blends with the view's mean grey level, which is linear in mu (the mean
    colour pushed through the steps so far), and the hue step rotates about the grey axis (`_hue_rotation`).
    Keeping mu apart lets the map be drawn before the mean is known, so that the accelerator can take the mean
    where it is nearly free (`finish_batch`). Without hue the order is drawn over the three other steps only, so
    the draws are those of the three-step jitter.
    """
    stacked = np.zeros((3, 7))
    stacked[:, :3] = np.eye(3)
    for step in rng.permutation(4 if hue > 0 else 3):
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
    """A (3, 7) colour map followed by a random recolouring: the RGB channels permuted (one of 6 orders) and each
    inverted (v -> 255 - v) with probability 1/2, one of 48 colour transforms that keep shapes and textures."""
    signs = np.where(rng.random(3) < 0.5, -1.0, 1.0)
    out = (signs[:, None] * np.eye(3)[rng.permutation(3)]) @ stacked
    out[:, 3] += np.where(signs < 0, 255.0, 0.0)
    return out


def _jitter(image: np.ndarray, stacked: np.ndarray, out: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 -> `out` (3, h, w) uint8: a (3, 7) colour map (`_jitter_map`) as one float matrix product,
    rounded and clipped.

    Channels first for the product: (3, 3) @ (3, h * w) is a fast matrix product, (h * w, 3) @ (3, 3) a slow one.
    """
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
        jitter: brightness, contrast and saturation jitter strength (0 turns jitter off), or (brightness, contrast,
            saturation, hue) as torchvision's `ColorJitter` takes them (hue in [0, 0.5]; Painter: (0.4, 0.4, 0.2,
            0.1)). The default, 0.4 for all three and no hue, is our choice.
        jitter_prob: probability that a view is colour-jittered at all, as torchvision's `RandomApply` (Painter:
            0.8); 1 (the default, our choice) draws no coin.
        flip: mirror each view left-right with probability 0.5.
        mask: "painter" for Painter's block-wise masking (the query half with probability
            `query_half_prob`), "query" to always mask the query half (the inference setting).
        query_half_prob: probability of masking the query half in "painter" mode (Painter: 0.1).
        patch_size: the model's patch size; both sides of `size` must be multiples of it.
        max_ids: at most this many ids are coloured per example (default: no cap).
        recolor: probability that a view's colours are also remapped at random after the jitter (`_recolor_map`:
            channels permuted, some inverted), each view on its own. For worlds where colour never names a
            category (the synthetic scenes): two views of one image then no longer match by colour, so even
            same-image pairs must be solved by shape and texture, the cues that carry over to other images.
        on_device: leave each view's colour jitter and the painting of the target to `finish_batch`, which runs
            after the batch reaches the accelerator (`PretrainDataModule.on_after_batch_transfer`). The example
            then carries, instead of `target_canvas` and `valid`, the views' label maps (`label_canvas`, (1, 2h, w)
            int16 holding the 16-bit ids) and the colour mapping (`palette`, (K, 4) int32 rows id, r, g, b), and
            the views' colour maps (`jitter`, (2, 3, 7), see `_jitter_map`) and left-right flips (`flip`, (2,)
            bool), with canvases not yet jittered or flipped. Mix-context examples are jittered and flipped here
            (their halves mix several views) and carry identity maps and no flips.
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
        self.patch_size, self.grid = patch_size, (2 * size[0] // patch_size, size[1] // patch_size)  # whole canvas

    def __call__(self, pair: Pair, rng: np.random.Generator, scale: tuple[float, float] | None = None
                 ) -> dict[str, np.ndarray | int]:
        """One example: image_canvas and target_canvas (3, 2h, w) uint8, valid (1, 2h, w) uint8,
        bool_masked_pos (L,) bool with L = 2h * w / patch_size^2, seg_type 0 (semantic) or 1 (instance), and
        `coloured`: whether any coloured id is in view (else the target is black). With `on_device`, see the
        class docstring. `scale` replaces the crop area range for this pair (a source's own, `ShardSource.scale`)."""
        deferred = self._deferred()
        image, labels = self.views(pair, rng, deferred, scale)
        candidates, present = self._candidates(pair.ids, labels)
        mapping = draw_mapping(candidates, rng, self.max_ids)
        return self._example(image, labels, mapping, present, pair.task, rng, deferred)

    def mixed(self, pairs: list[Pair], rng: np.random.Generator, scale: tuple[float, float] | None = None
              ) -> dict[str, np.ndarray | int]:
        """Mix-context (paper section 3.1): several pairs painted with one colour mapping, their prompt views
        stitched into the prompt half and their query views into the query half (`coloring.mix_context`:
        a grid, then one random crop resized to a view's size). The pairs must share one label space (one
        semantic source): an id means the same category in all of them. Candidates are the union of each
        pair's candidates (`_candidates`), so every pair can contribute a coloured category. `scale` replaces the
        views' crop area range, as in `__call__`."""
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
        mapping = draw_mapping(candidate_ids(labels[0, h:], ids), rng, self.max_ids)
        present = self._present(labels[0], list(mapping))
        return self._example(image, labels, mapping, present, pairs[0].task, rng, self._deferred())

    def _deferred(self) -> dict[str, np.ndarray] | None:
        """What `finish_batch` will do to an example (`on_device`): nothing yet (identity colour maps, no flips)."""
        return {"jitter": IDENTITY.repeat(2, 0), "flip": np.zeros(2, bool)} if self.on_device else None

    def views(self, pair: Pair, rng: np.random.Generator, deferred: dict[str, np.ndarray] | None = None,
              scale: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The two augmented views of a pair: a (3, 2h, w) uint8 image canvas (prompt view on top) and the (1, 2h, w)
        uint16 canvas of their label maps; each view has its own crop, flip and jitter, shared by its image and
        label. With `deferred` (`_deferred`), each view's jitter (a `_jitter_map`) and flip are written there
        instead of being applied. `scale`: the crop area range, if not the transform's."""
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
                deferred["flip"][half], mirror = mirror, False  # a mirrored copy costs a worker 6% of its rate
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
        """The image canvas (3, 2h, w), the label canvas (1, 2h, w) and its colour mapping -> the example dict, with
        this example's patch mask; painted here, or left to `finish_batch` (`on_device`)."""
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
        """The pair's ids in both views of the (1, 2h, w) label canvas, else in the query view, else all of them (see
        the module docstring), and the ids in view (in either view)."""
        h = labels.shape[1] // 2
        prompt, query = (cls._present(v, ids) for v in (labels[0, :h], labels[0, h:]))
        in_query = [i for i in ids if i in query]
        return [i for i in in_query if i in prompt] or in_query or list(ids), prompt | query


class UnfinishedBatch(TypedDict):
    """What `pretrain.collate` makes of `PairTransform(on_device=True)` examples, and so what the training loader
    yields: views neither colour-jittered nor flipped, targets not painted. `finish_batch` makes it an
    `InContextBatch` after the transfer to the accelerator (the data module's `on_after_batch_transfer`)."""

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
    """Label canvases (B, 1, H, W) int16 (16-bit ids) and palettes (B, K, 4) (id, r, g, b) -> target (B, 3, H, W)
    uint8 and valid (B, 1, H, W) uint8, on their device: `paint_planes` for a batch, through one (B, 65536, 3) colour
    table (3 MB for 16 examples)."""
    b = len(label_canvas)
    ids = label_canvas[:, 0].int() & 0xFFFF  # (B, H, W): int16 back to 16-bit ids
    table = torch.zeros(b, NUM_LABELS, 3, dtype=torch.uint8, device=label_canvas.device)
    rows = torch.arange(b, device=table.device)
    table[rows[:, None], palette[..., 0].long()] = palette[..., 1:].to(torch.uint8)
    table[:, SEM_VOID] = 0  # void (and the padding rows) stay black
    target = table[rows[:, None, None], ids].permute(0, 3, 1, 2).contiguous()
    return target, (ids != SEM_VOID).to(torch.uint8)[:, None]


def _flip_views(canvas: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """(B, C, 2h, w) canvases with the prompt (top) and query (bottom) views mirrored left-right where `flips`
    (B, 2) is set."""
    b, c, height, w = canvas.shape
    views = canvas.view(b, c, 2, height // 2, w)
    return torch.where(flips.to(canvas.device)[:, None, :, None, None], views.flip(-1), views).view(b, c, height, w)


def finish_batch(batch: InContextBatch | UnfinishedBatch) -> InContextBatch:
    """What `PairTransform(on_device=True)` leaves to the accelerator, done on the image canvas's device: apply and
    remove the views' colour maps (`jitter`, (B, 2, 3, 7)), each with its view's mean colour, rounded and clipped to
    uint8 as `PairTransform` does on the CPU; mirror the views `flip` (B, 2) marks, image and labels; paint
    `target_canvas` and `valid` from `label_canvas` and `palette` (`paint_batch`). A batch without them is returned
    as it is. On an accelerator this is nearly free; in a DataLoader worker it takes about a quarter of the worker's
    time at 448 x 448 (benchmarks/pretrain_data_speed.py)."""
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

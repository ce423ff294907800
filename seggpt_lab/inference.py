"""In-context prediction: prompts (images + label maps) and a query in, a label map out.

The official seggpt_engine.py pre- and post-processing: images resized to the half-canvas size
with PIL (bicubic) and masks with PIL's nearest neighbours, scaled to [0, 1] and ImageNet-normalised;
several prompts form a feature ensemble (or, here, a spatial ensemble); the prediction is the query
half of the first item, de-normalised and resized back to the query's size with (torch's) nearest
neighbours. Labels are decoded by the nearest palette colour, except on the video path, which
binarises one object as the official video mode does (`palette.binarize`).
`predict_labels` works on tensors and is what evaluation uses; `Predictor` wraps it for PIL images.
`predict_with_prompt` segments with a prompt file instead, and `panoptic_from_classes` turns class ids
into panoptic segments (thing instances from an instance prompt's prediction, or connected components).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageSequence

from seggpt_lab.canvas import (
    IMAGE_SUFFIXES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    denormalize,
    make_canvas,
    normalize,
    spatial_ensemble,
    split_canvas,
)
from seggpt_lab.model import SegGPT
from seggpt_lab.palette import VIDEO_THRESHOLD, binarize, build_palette, decode, distinct_colors, paint

if TYPE_CHECKING:  # prompts.py builds on this module's resizing
    from seggpt_lab.prompts import Prompt

SEG_TYPES = {"semantic": 0, "instance": 1}
Ensemble = Literal["feature", "spatial"]


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) uint8 or float in [0, 1] -> (3, h, w) float in [0, 1], bicubic.

    uint8 images are resized by PIL, as seggpt_engine.py resizes every image (`Image.resize((448, 448))`, PIL's
    bicubic, which rounds to 8 bits between its two passes). Float images (tuned prompts) have no 8-bit form: they
    are resized by torch's anti-aliased bicubic, within a few levels of PIL's.
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image.float() / 255 if image.dtype == torch.uint8 else image.float()
    if image.dtype == torch.uint8:
        pil = Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).resize((size[1], size[0]), Image.Resampling.BICUBIC)
        return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).to(image.device).float() / 255
    return F.interpolate(image[None].float(), size=size, mode="bicubic", antialias=True, align_corners=False
                         )[0].clamp(0, 1)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., H, W) integer labels (int32 range) -> (..., h, w), by PIL's nearest neighbour, as seggpt_engine.py
    resizes prompt masks (`Image.resize((448, 448), Image.NEAREST)`)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    flat = labels.reshape(-1, *labels.shape[-2:]).cpu().numpy().astype(np.int32)  # PIL mode "I"
    resized = [np.asarray(Image.fromarray(f).resize((size[1], size[0]), Image.Resampling.NEAREST)) for f in flat]
    return torch.from_numpy(np.stack(resized)).to(labels.device, labels.dtype).reshape(*labels.shape[:-2], *size)


def resize_prediction(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., h, w) labels decoded from a prediction -> (..., H, W), by torch's nearest neighbour, as
    seggpt_engine.py resizes its float64 output back to the query's size (`F.interpolate(..., mode="nearest")`).
    In float64 as there: torch computes the source pixels in the input's precision, and float32 picks others
    (1.5% of the pixels from 448 to 854 columns)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    flat = labels.reshape(-1, 1, *labels.shape[-2:]).double()
    return F.interpolate(flat, size=size, mode="nearest").long().reshape(*labels.shape[:-2], *size)


@torch.inference_mode()
def predict_query_half(model: SegGPT, prompts: torch.Tensor, prompt_masks: torch.Tensor, query: torch.Tensor,
                       seg_type: Literal["semantic", "instance"] = "instance", ensemble: Ensemble = "feature"
                       ) -> torch.Tensor:
    """Prompts (K, 3, h, w) and their painted masks (K, 3, h, w), query (3, h, w), all RGB in [0, 1] at the
    model's half-canvas size -> the model's output for the query half (3, h, w), ImageNet-normalised, float32."""
    if ensemble == "spatial":
        prompts, prompt_masks = spatial_ensemble(prompts)[None], spatial_ensemble(prompt_masks, mode="nearest")[None]
    n = prompts.shape[0]
    device = next(model.parameters()).device
    image_canvas = normalize(make_canvas(prompts, query.expand(n, -1, -1, -1))).to(device)
    target_canvas = normalize(make_canvas(prompt_masks, prompt_masks)).to(device)
    seg = torch.full((n,), SEG_TYPES[seg_type], device=device)
    pred = model(image_canvas, target_canvas, model.query_mask(n, device), seg, feature_ensemble=n > 1)
    return split_canvas(pred[0].float())[1]


def predict_canvas(model: SegGPT, prompts: torch.Tensor, prompt_masks: torch.Tensor, query: torch.Tensor,
                   seg_type: Literal["semantic", "instance"] = "instance", ensemble: Ensemble = "feature"
                   ) -> torch.Tensor:
    """`predict_query_half`'s inputs -> the predicted query mask (3, h, w), RGB in [0, 1] (clipped)."""
    return denormalize(predict_query_half(model, prompts, prompt_masks, query, seg_type, ensemble))


def colour_output(query_half: torch.Tensor) -> np.ndarray:
    """`predict_query_half`'s output (3, h, w) -> the official colour output (h, w, 3) float64 in [0, 255],
    unrounded: seggpt_engine.py run_one_image's clip((output * std + mean) * 255, 0, 255), in float64 as there
    (its numpy mean and std promote the model's float32 output)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64)
    out = query_half.detach().cpu().double().permute(1, 2, 0)  # (h, w, 3), channels last as there
    return ((out * std + mean) * 255).clamp(0, 255).numpy()


def _resize_output(output: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) colour output -> (H, W, 3) at `size` = (H, W): seggpt_engine.py's F.interpolate(mode="nearest")."""
    if output.shape[:2] == tuple(size):
        return output
    chw = torch.from_numpy(np.ascontiguousarray(output)).permute(2, 0, 1)[None]
    return F.interpolate(chw, size=size, mode="nearest")[0].permute(1, 2, 0).numpy()


def predict_labels(model: SegGPT, prompt_images: list[torch.Tensor], prompt_labels: list[torch.Tensor],
                   query_image: torch.Tensor, num_labels: int, seg_type: Literal["semantic", "instance"] = "instance",
                   ensemble: Ensemble = "feature", binary_threshold: float | None = None) -> torch.Tensor:
    """Label maps in, label map out: K prompt images (3, h_k, w_k) uint8 with labels (h_k, w_k) in 0..num_labels
    (anything else counts as background), and a query (3, H, W) -> predicted labels (H, W) long.

    Images and labels are resized as seggpt_engine.py does (`resize_image`, `resize_labels`), labels painted with
    `build_palette(num_labels)`. The prediction is decoded by the nearest palette colour (Hugging Face's
    post-processing), or, with `binary_threshold` and num_labels == 1, as the official video mode binarises:
    foreground where the 0..255 channel mean exceeds it (`VIDEO_THRESHOLD`, 128; nearest colour is 127.5).
    """
    half = (model.img_size[0] // 2, model.img_size[1])
    palette = build_palette(num_labels)
    prompts = torch.stack([resize_image(p, half) for p in prompt_images])
    masks = torch.stack([paint(resize_labels(lab, half), palette) for lab in prompt_labels])
    rgb = predict_canvas(model, prompts, masks, resize_image(query_image, half), seg_type, ensemble)
    binary = binary_threshold is not None and num_labels == 1
    labels = binarize(rgb, binary_threshold) if binary else decode(rgb, palette)
    return resize_prediction(labels, tuple(query_image.shape[-2:]))


def predict_foreground(model: SegGPT, prompt_images: list[torch.Tensor], prompt_labels: list[torch.Tensor],
                       query_image: torch.Tensor, seg_type: Literal["semantic", "instance"] = "semantic",
                       ensemble: Ensemble = "feature") -> torch.Tensor:
    """Binary prompts (labels 1 = foreground, painted white on black) -> the query's foreground score (H, W) in
    [0, 1]: the brightness of the predicted mask, so that scores of several classes can be compared."""
    half = (model.img_size[0] // 2, model.img_size[1])
    palette = build_palette(1)
    prompts = torch.stack([resize_image(p, half) for p in prompt_images])
    masks = torch.stack([paint(resize_labels((lab == 1).long(), half), palette) for lab in prompt_labels])
    rgb = predict_canvas(model, prompts, masks, resize_image(query_image, half), seg_type, ensemble)
    return F.interpolate(rgb.mean(0)[None, None], size=tuple(query_image.shape[-2:]), mode="bilinear",
                         align_corners=False)[0, 0]


def predict_prompt_file(model: SegGPT, prompt: Prompt, query: torch.Tensor,
                        seg_type: Literal["semantic", "instance"] = "semantic") -> torch.Tensor:
    """A prompt file's `image` and `target` as the prompt half, a query (3, h, w) in [0, 1] at the half-canvas size
    -> the predicted query mask (3, h, w), RGB in [0, 1]."""
    return predict_canvas(model, *_prompt_halves(model, prompt), query, seg_type)


def _prompt_halves(model: SegGPT, prompt: Prompt) -> tuple[torch.Tensor, torch.Tensor]:
    """A prompt file's image and target at the half-canvas size, (1, 3, h, w) each (float: torch resizing)."""
    half = (model.img_size[0] // 2, model.img_size[1])
    target = prompt["target"].float()
    if tuple(target.shape[-2:]) != half:
        target = F.interpolate(target[None], size=half, mode="nearest")[0]
    return resize_image(prompt["image"], half)[None], target[None]


def predict_with_prompt(model: SegGPT, prompt: Prompt, query_image: torch.Tensor,
                        seg_type: Literal["semantic", "instance"] = "semantic", background: bool = True
                        ) -> torch.Tensor:
    """One forward with a prompt file's `image` and `target` as the prompt half -> the query's class ids (H, W) long.

    The prediction is decoded by the nearest colour of the prompt's palette: row k is class `class_ids[k - 1]`,
    row 0 (black) class 0. With `background=False` black is left out and every pixel takes a class (ADE20K,
    whose 0 is void: Painter decodes with the class colours only, ecosystem.md §4c).
    """
    half = (model.img_size[0] // 2, model.img_size[1])
    rgb = predict_prompt_file(model, prompt, resize_image(query_image, half), seg_type)
    rows = decode(rgb, prompt["palette"]) if background else decode(rgb, prompt["palette"][1:]) + 1
    lookup = torch.tensor([0, *prompt["class_ids"]], dtype=torch.long, device=rows.device)
    return resize_prediction(lookup[rows], tuple(query_image.shape[-2:]))


def connected_components(labels: torch.Tensor) -> torch.Tensor:
    """(H, W) integer map -> (H, W) long: each 8-connected region of one value > 0 gets an id 1..N, in raster
    order of its first pixel; 0 stays 0.

    Vectorised union-find on the pixel graph (edges between equal neighbours): every round hooks the larger
    of two linked roots under the smaller, then compresses each pixel's path to its root, until every edge
    joins one root. A root is always the smallest pixel index of its region, so the ids follow raster order.
    """
    h, w = labels.shape
    index = torch.arange(h * w, device=labels.device).view(h, w)
    edges = []
    # right, down, down-right and down-left neighbours: each of the 8 directions once from one end
    for a, b in ((np.s_[:, :-1], np.s_[:, 1:]), (np.s_[:-1], np.s_[1:]), (np.s_[:-1, :-1], np.s_[1:, 1:]),
                 (np.s_[:-1, 1:], np.s_[1:, :-1])):
        linked = (labels[a] == labels[b]) & (labels[a] > 0)
        edges.append(torch.stack([index[a][linked], index[b][linked]]))
    u, v = torch.cat(edges, 1)  # (E,) each
    parent = index.flatten().clone()
    while not torch.equal(root_u := parent[u], root_v := parent[v]):
        parent.scatter_reduce_(0, torch.maximum(root_u, root_v), torch.minimum(root_u, root_v), reduce="amin")
        while not torch.equal(grand := parent[parent], parent):
            parent = grand
    inside = labels > 0
    _, inverse = torch.unique(torch.where(inside, parent.view(h, w), h * w), return_inverse=True)
    return torch.where(inside, inverse + 1, 0)


def panoptic_from_classes(classes: torch.Tensor, things: Collection[int], stuff: Collection[int], min_area: int = 0,
                          instances: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[int, int]]:
    """(H, W) class ids -> ((H, W) segment ids, {segment id: category}), segment 0 = no segment.

    Instances, without `instances`: each 8-connected region of a thing class. With `instances` ((H, W) ids that
    an instance prompt painted, 0 = none; SegGPT segments category and instance in parallel, seggpt_reference.md
    §14): the pixels of one id, connected or not (the model paints one object one colour, occluded parts
    included; two objects painted alike stay one); one whose pixels are more than half thing classes is an
    instance of the most frequent of them (a tie: the smaller class id), the others are dropped, and thing
    pixels that no instance covers get no segment (the class map gives stuff only, as Panoptic FPN's merging
    does: detectron2 `combine_semantic_and_instance_outputs`). The pixels of a stuff class that no instance
    covers are one segment; other classes (0 included) get no segment, nor do segments of fewer than `min_area`
    pixels. Segments are numbered 1..M: instances in raster order of their first pixel (given `instances`: by
    id), then stuff by class id.
    """
    classes = classes.long()
    thing_ids = torch.tensor(sorted(things), dtype=torch.long, device=classes.device)
    is_thing = torch.isin(classes, thing_ids)
    category = classes  # of each pixel's segment
    if instances is None:
        pieces = connected_components(torch.where(is_thing, classes, 0))
    else:
        pieces = instances.long().to(classes.device)
        width = len(thing_ids) + 1  # vote column 0: not a thing; column k: thing_ids[k - 1]
        column = torch.where(is_thing, torch.searchsorted(thing_ids, classes) + 1, 0)
        votes = torch.bincount((pieces * width + column).flatten(), minlength=(int(pieces.max()) + 1) * width)
        votes = votes.view(-1, width)  # (regions + 1, things + 1)
        kept = 2 * votes[:, 1:].sum(1) > votes.sum(1)
        kept[0] = False
        majority = thing_ids[votes[:, 1:].argmax(1)] if len(thing_ids) else torch.zeros_like(kept, dtype=torch.long)
        pieces = torch.where(kept[pieces], pieces, 0)
        category = torch.where(pieces > 0, majority[pieces], classes)
    is_stuff = torch.isin(classes, torch.tensor(sorted(stuff), dtype=torch.long, device=classes.device))
    ids = torch.where(is_stuff & (pieces == 0), int(pieces.max()) + classes, pieces)  # stuff class c: N + c
    values, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    keep = (values > 0) & (counts >= min_area)
    renumber = torch.cumsum(keep.long(), 0) * keep
    category = torch.zeros_like(values).scatter_(0, inverse.flatten(), category.flatten())
    return renumber[inverse], dict(zip(renumber[keep].tolist(), category[keep].tolist(), strict=True))


def to_tensor(image: Image.Image, size: tuple[int, int], resample: Image.Resampling) -> torch.Tensor:
    """PIL image -> (3, h, w) float in [0, 1], resized to size = (h, w) with PIL (as the official demo does)."""
    image = image.convert("RGB").resize((size[1], size[0]), resample)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255


ImageLike = str | Path | Image.Image | np.ndarray | torch.Tensor
MaskKind = Literal["auto", "binary", "index", "color"]


def open_image(path: str | Path) -> Image.Image:
    """An image file, fully read; a one-line error names a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        image = Image.open(path)
        image.load()
    except (OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: not an image this program can read ({e})") from None
    return image


def _as_array(image: ImageLike) -> np.ndarray:
    """Any image-like input -> (H, W) or (H, W, C) numpy array (a PIL "P" image keeps its indices)."""
    if isinstance(image, str | Path):
        image = open_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGBA") if image.mode in ("LA", "PA") else image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        return (image.permute(1, 2, 0) if image.ndim == 3 and image.shape[0] in (1, 3, 4) else image).numpy()
    if isinstance(image, np.ndarray):
        return image
    raise TypeError(f"expected an image path, PIL image, array or tensor, got {type(image).__name__}")


def load_rgb(image: ImageLike) -> Image.Image:
    """An RGB PIL image from a path, PIL image, (H, W[, 3 | 4]) array or (3, H, W) tensor.

    Alpha is dropped, grey is repeated, and 16-bit or float images are scaled to 8 bits (16-bit by 1/257,
    float in [0, 1] by 255) instead of being clipped, as PIL's own conversion would.
    """
    if isinstance(image, str | Path):
        image = open_image(image)
    if isinstance(image, Image.Image) and image.mode in ("RGB", "L", "P", "RGBA", "1", "CMYK", "LA", "YCbCr"):
        return image.convert("RGB")
    array = _as_array(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {tuple(array.shape)}")
    if array.dtype == np.uint16 or (array.dtype.kind in "iu" and array.max(initial=0) > 255):
        array = array.astype(np.float64) / 257
    elif array.dtype.kind == "f":
        array = array * 255 if array.max(initial=0) <= 1 else array
    elif array.dtype == bool:
        array = array * 255
    array = np.clip(np.round(array), 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(array[..., :3]))


MAX_INDEX_LABEL = 255  # an 8-bit palette PNG's indices: every label an 8-bit mask can hold


def prompt_masks(masks: list[ImageLike], kind: MaskKind = "auto"
                 ) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """Prompt masks -> their label maps (H_i, W_i) int64, the palette (K + 1, 3) uint8 that decodes predictions,
    and the masks as they go on the canvas, (H_i, W_i, 3) uint8: an RGB mask as given (the official demo uses
    the user's colours and anti-aliasing unchanged), a one-channel mask painted with the palette (as
    transformers' processor does with `num_labels`).

    Kinds ("auto" decides per the first mask):
    - "binary": foreground 1 (non-zero; above 127 for 8-bit grey with other values than 0 and 1), painted white.
    - "index": each value is a label (a palette PNG's indices, a class-index map), painted with `build_palette`.
    - "color": each colour that covers at least 1% of the coloured pixels of all masks is a label (black is
      background); other pixels (anti-aliased edges) take the nearest of these colours. The prompt keeps the
      user's colours, as the official demo does.
    "auto": a palette ("P") image -> index; an RGB(A) image whose channels differ -> color; otherwise one grey
    channel -> binary when it is bool, {0, 1}, or 8-bit reaching 255 or 16-bit reaching 65535 (white on black,
    anti-aliased or not: the official examples), and index otherwise. A class map that uses 255 (void) needs
    kind="index" or a palette PNG. Index masks hold at most MAX_INDEX_LABEL labels (what colours can tell apart).
    """
    if not masks:
        raise ValueError("no prompt masks given")
    arrays, names = [], [str(m) if isinstance(m, str | Path) else "a prompt mask" for m in masks]
    for mask in masks:
        mask = open_image(mask) if isinstance(mask, str | Path) else mask
        is_palette = isinstance(mask, Image.Image) and mask.mode == "P"
        array = _as_array(mask)
        if array.ndim == 3 and array.shape[-1] == 4:
            array = array[..., :3]
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim == 3 and array.shape[-1] == 3 and (array == array[..., :1]).all():
            array = array[..., 0]  # grey stored as RGB
        if array.ndim not in (2, 3) or 0 in array.shape:
            raise ValueError(f"expected an (H, W) or (H, W, 3) mask, got shape {tuple(array.shape)}")
        arrays.append((array, is_palette))
    if kind == "auto":
        first, is_palette = arrays[0]
        if is_palette:
            kind = "index"
        elif first.ndim == 3:
            kind = "color"
        else:
            white = first.dtype in (np.uint8, np.uint16) and first.max(initial=0) == np.iinfo(first.dtype).max
            kind = "binary" if first.dtype == bool or white or first.max(initial=0) <= 1 else "index"
    if kind == "color":
        pixels = np.concatenate([_rgb(a).reshape(-1, 3) for a, _ in arrays])
        colours, counts = np.unique(pixels[pixels.any(1)], axis=0, return_counts=True)
        order = np.argsort(-counts, kind="stable")  # the most frequent colour is label 1
        keep = colours[order][counts[order] >= 0.01 * counts.sum()]
        palette = np.concatenate([np.zeros((1, 3), np.uint8), keep.astype(np.uint8)])
        labels = []
        for array, _ in arrays:
            rgb = torch.from_numpy(_rgb(array).astype(np.float32) / 255).permute(2, 0, 1)
            labels.append(decode(rgb, torch.from_numpy(palette)).numpy())
        return labels, palette, [_rgb(a) for a, _ in arrays]
    labels = []
    for (array, _), name in zip(arrays, names, strict=True):
        if array.ndim == 3:
            raise ValueError(f"a {kind} mask has one channel; got a colour image (use kind='color')")
        if kind == "binary":
            half = 32767 if array.dtype == np.uint16 else 127  # of white: 65535 for 16-bit masks, 255 otherwise
            threshold = half if array.dtype != bool and array.max(initial=0) > 1 else 0
            labels.append((array > threshold).astype(np.int64))
        else:
            if array.dtype.kind not in "biu" or array.min(initial=0) < 0:
                raise ValueError("an index mask holds non-negative integers")
            if array.max(initial=0) > MAX_INDEX_LABEL:  # a palette that large is colours no one can tell apart
                raise ValueError(f"{name}: an index mask with labels up to {array.max()}, more than "
                                 f"{MAX_INDEX_LABEL}: give a binary mask (white on black) or a palette PNG")
            labels.append(array.astype(np.int64))
    palette = build_palette(max(max(int(label.max(initial=0)) for label in labels), 1)).numpy()
    canvas = [_rgb(a) if a.ndim == 3 or a.dtype == np.uint8 and kind == "binary" and not a.max(initial=0) <= 1
              else palette[lab] for (a, _), lab in zip(arrays, labels, strict=True)]
    return labels, palette, canvas


def _rgb(mask: np.ndarray) -> np.ndarray:
    """A mask array as RGB uint8, grey repeated."""
    return np.ascontiguousarray(np.repeat(mask[..., None], 3, -1) if mask.ndim == 2 else mask).astype(np.uint8)


class PromptTensors(NamedTuple):
    """Prompts ready for the model: images and painted masks (K, 3, h, w) in [0, 1], the decoding palette."""

    images: torch.Tensor
    masks: torch.Tensor
    palette: np.ndarray


@dataclass
class Segmentation:
    """One query's prediction at the query's size.

    labels: (H, W) int64: 0 background, k the prompt's label k (binary masks: 1; index masks: the index; colour
        masks: `palette[k]`; a prompt file: its class ids).
    mask: the predicted colour image (RGB), rounded to 8 bits for saving: the official demo's output, before any
        decoding (video frames: their labels' palette colours).
    palette: (K + 1, 3) uint8, the colour of each palette row (row 0 black).
    output: the unrounded colour output of the query half, (h, w, 3) float64 in [0, 255] at the half-canvas
        size (`colour_output`), which `overlay` uses as the official demo does; None for video frames.
    """

    labels: np.ndarray
    mask: Image.Image
    palette: np.ndarray
    output: np.ndarray | None = None

    def label_image(self) -> Image.Image:
        """The labels as a palette PNG ("P"): values with their colours (labels above 255 need another format)."""
        if self.labels.max(initial=0) > 255:
            raise ValueError("labels above 255 do not fit a palette PNG; save `labels` as a 16-bit PNG instead")
        image = Image.fromarray(self.labels.astype(np.uint8), mode="P")
        colours = np.zeros((256, 3), np.uint8)
        rows = min(len(self.palette), 256)
        colours[:rows] = self.palette[:rows]
        if int(self.labels.max(initial=0)) >= rows:  # class ids beyond the palette rows: distinct colours
            colours[rows:] = distinct_colors(256 - rows).numpy()
        image.putpalette(colours.flatten().tolist())
        return image

    def overlay(self, image: ImageLike) -> Image.Image:
        """The official demo's overlay of the unrounded colour output on the query (video frames: of `mask`)."""
        return overlay(load_rgb(image), self.output if self.output is not None else self.mask)


class Predictor:
    """Segment queries like the prompts are segmented: the official demo's pre- and post-processing.

        predictor = Predictor.from_pretrained("seggpt_vit_large.pth")
        result = predictor.segment("query.jpg", prompts=[("prompt.jpg", "prompt_mask.png")])
        result.labels, result.mask, result.overlay("query.jpg")

    Images (queries and prompts) are resized to the half canvas with PIL's bicubic filter, masks painted and
    resized with PIL's nearest neighbours, both ImageNet-normalised; the prediction is the query half,
    de-normalised, clipped to [0, 255] and resized back to the query's size with nearest neighbours
    (seggpt_engine.py), then decoded to labels by the nearest palette colour. The overlay blends the unrounded
    output, as inference_image does; `mask` is that output rounded to 8 bits.

    Args:
        model: a SegGPT (put in eval mode here).
        device: where to run it.
    """

    def __init__(self, model: SegGPT, device: str | torch.device = "cpu") -> None:
        self.model = model.eval().to(device)
        self.half = (model.img_size[0] // 2, model.img_size[1])  # (h, w) of one image in the canvas

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", **overrides) -> Predictor:
        """Any checkpoint `load_pretrained` reads: official, Hugging Face (file or folder), ours, Lightning."""
        from seggpt_lab.checkpoint import load_pretrained  # checkpoint.py imports this module's neighbours

        return cls(load_pretrained(path, **overrides), device)

    def query_tensor(self, image: ImageLike) -> torch.Tensor:
        """An image as the model sees it: (3, h, w) in [0, 1] at the half-canvas size, resized bicubic by PIL."""
        return to_tensor(load_rgb(image), self.half, Image.Resampling.BICUBIC)

    def _finish(self, query_half: torch.Tensor, size: tuple[int, int], palette: np.ndarray,
                lookup: np.ndarray | None) -> Segmentation:
        """`predict_query_half`'s output (3, h, w) -> Segmentation at `size` = (H, W)."""
        output = colour_output(query_half)
        rgb = _resize_output(output, size)  # the official order: clip, then resize
        rows = decode(torch.from_numpy(rgb).permute(2, 0, 1) / 255, torch.from_numpy(palette)).numpy()
        labels = lookup[rows] if lookup is not None else rows
        mask = Image.fromarray(rgb.round().astype(np.uint8))
        return Segmentation(labels=labels.astype(np.int64), mask=mask, palette=palette, output=output)

    def segment(self, query: ImageLike | list[ImageLike],
                prompts: list[tuple[ImageLike, ImageLike]] | PromptTensors | None = None,
                *, prompt_file: str | Path | Prompt | None = None, ensemble: Ensemble = "feature",
                seg_type: Literal["semantic", "instance"] = "instance", mask_kind: MaskKind = "auto"
                ) -> Segmentation | list[Segmentation]:
        """Segment one query (or a list: a list of results) by example.

        prompts: (image, mask) pairs; images and masks may be paths, PIL images, arrays or tensors, masks binary,
            class-index or colour images (`prompt_masks`). Several prompts are combined by `ensemble`.
            `prepare(prompts)` gives them ready for the model, for many calls.
        prompt_file: a tuned prompt file (or a loaded `Prompt`) instead of `prompts`; labels are its class ids.
        seg_type: the task token; the official demo's default is "instance".
        """
        if isinstance(query, list):
            prompts = self.prepare(prompts, mask_kind) if prompts is not None else None
            return [self.segment(q, prompts, prompt_file=prompt_file, ensemble=ensemble, seg_type=seg_type,
                                 mask_kind=mask_kind) for q in query]
        if (prompts is None) == (prompt_file is None):
            raise ValueError("give either prompts=[(image, mask), ...] or prompt_file=...")
        image = load_rgb(query)
        size = (image.height, image.width)
        if prompt_file is not None:
            from seggpt_lab.prompts import load_prompt

            prompt = load_prompt(prompt_file) if isinstance(prompt_file, str | Path) else prompt_file
            out = predict_query_half(self.model, *_prompt_halves(self.model, prompt), self.query_tensor(image),
                                     seg_type)
            return self._finish(out, size, prompt["palette"].numpy(), np.array([0, *prompt["class_ids"]]))
        prepared = self.prepare(prompts, mask_kind)
        out = predict_query_half(self.model, prepared.images, prepared.masks, self.query_tensor(image), seg_type,
                                 ensemble)
        return self._finish(out, size, prepared.palette, None)

    def prepare(self, prompts: list[tuple[ImageLike, ImageLike]] | PromptTensors, mask_kind: MaskKind = "auto"
                ) -> PromptTensors:
        """Prompts (image, mask) pairs -> the model's prompt inputs at the half-canvas size (read once, reused for
        every query of a `segment` call; `seggpt-lab predict` prepares them once per run)."""
        if isinstance(prompts, PromptTensors):
            return prompts
        if not prompts or any(not isinstance(p, tuple | list) or len(p) != 2 for p in prompts):
            raise ValueError("prompts must be a non-empty list of (image, mask) pairs")
        labels, palette, painted = prompt_masks([m for _, m in prompts], mask_kind)
        images = [load_rgb(p) for p, _ in prompts]
        for i, (im, lab) in enumerate(zip(images, labels, strict=True)):
            if lab.shape != (im.height, im.width):
                raise ValueError(f"prompt {i}: the mask is {lab.shape[1]}x{lab.shape[0]} pixels, the image "
                                 f"{im.width}x{im.height}; give each prompt image its own mask")
        if not any(lab.any() for lab in labels):
            raise ValueError("the prompt masks mark nothing (every pixel is background): nothing to segment")
        masks = [to_tensor(Image.fromarray(m), self.half, Image.Resampling.NEAREST) for m in painted]
        return PromptTensors(torch.stack([self.query_tensor(im) for im in images]), torch.stack(masks), palette)

    def segment_video(self, frames: str | Path | list[ImageLike], first_mask: ImageLike, num_frames: int = 0,
                      seg_type: Literal["semantic", "instance"] = "instance", max_frames: int | None = None
                      ) -> list[Segmentation]:
        """Propagate the first frame's objects through a video (the official video mode, several objects).

        frames: a folder of frames (sorted by name), a list of frames, or a video file (GIF natively; other
            containers with PyAV installed). first_mask: the first frame's objects (an index mask such as a DAVIS
            palette PNG, or binary / colour). Each later frame is prompted by the first frame and the previous
            `num_frames` predictions (a FIFO queue), combined by the feature ensemble. The first result is the
            given mask. One object (a binary mask) is decoded by the official video mode's rule, a 0..255 channel
            mean above 128 (`VIDEO_THRESHOLD`), also for the predictions fed back as prompts; several objects
            (which the official code does not handle) by the nearest palette colour.
        """
        images = read_frames(frames, max_frames)
        (first,), palette, _ = prompt_masks([first_mask])
        if first.shape != (images[0].shape[1], images[0].shape[2]):
            raise ValueError(f"the first-frame mask is {first.shape[1]}x{first.shape[0]} pixels, the frames "
                             f"{images[0].shape[2]}x{images[0].shape[1]}")
        num_labels = len(palette) - 1

        def predict(prompts, t, _):
            return predict_labels(self.model, [p[0] for p in prompts], [p[1] for p in prompts], images[t], num_labels,
                                  seg_type, binary_threshold=VIDEO_THRESHOLD)

        preds = propagate(images, torch.from_numpy(first), predict, num_frames)
        results = []
        for labels in preds:
            colours = palette[np.clip(labels.numpy(), 0, num_labels)]
            results.append(Segmentation(labels=labels.numpy().astype(np.int64), mask=Image.fromarray(colours),
                                        palette=palette))
        return results

    def predict(self, query: Image.Image, prompt_images: list[Image.Image], prompt_masks: list[Image.Image],
                seg_type: Literal["semantic", "instance"] = "instance", ensemble: Ensemble = "feature") -> Image.Image:
        """The official demo's output: the predicted colour image at the query's size, masks used as given."""
        output = self.predict_output(query, prompt_images, prompt_masks, seg_type, ensemble)
        return Image.fromarray(output.round().astype(np.uint8))

    def predict_output(self, query: Image.Image, prompt_images: list[Image.Image], prompt_masks: list[Image.Image],
                       seg_type: Literal["semantic", "instance"] = "instance", ensemble: Ensemble = "feature"
                       ) -> np.ndarray:
        """`predict` unrounded: (H, W, 3) float64 in [0, 255] at the query's size, what `overlay` blends."""
        if not prompt_images or len(prompt_images) != len(prompt_masks):
            raise ValueError(f"need one mask per prompt image, got {len(prompt_images)} images "
                             f"and {len(prompt_masks)} masks")
        prompts = torch.stack([to_tensor(p, self.half, Image.Resampling.BICUBIC) for p in prompt_images])
        masks = torch.stack([to_tensor(m, self.half, Image.Resampling.NEAREST) for m in prompt_masks])
        query_tensor = to_tensor(query, self.half, Image.Resampling.BICUBIC)
        out = predict_query_half(self.model, prompts, masks, query_tensor, seg_type, ensemble)
        return _resize_output(colour_output(out), (query.height, query.width))


def propagate(frames: list[torch.Tensor], first: torch.Tensor, predict, memory: int = 0,
              given: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Semi-supervised video propagation: frames (3, H, W), the first frame's labels (H, W) -> labels per frame.

    Frame t is `predict(prompts, t, num_labels)`, prompts being (image, labels) pairs: the first frame, then the
    last `memory` predicted frames (the official video mode's FIFO queue); num_labels is the largest object id
    so far. With `given` (labels per frame; the YouTube-VOS and MOSE protocol), a frame whose labels bring
    objects not seen before keeps those masks over its prediction and becomes a prompt frame too.
    The first result is `first`.
    """
    anchors = [(frames[0], first)]
    seen = set(first.unique().tolist()) - {0}
    queue: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=memory)
    preds = [first]
    for t in range(1, len(frames)):
        pred = predict([*anchors, *queue], t, max(max(seen, default=0), 1))
        new = set(given[t].unique().tolist()) - {0} - seen if given is not None else set()
        if new:
            pred = torch.where(given[t] > 0, given[t], pred)
            seen |= new
            anchors.append((frames[t], pred))
        elif memory:
            queue.append((frames[t], pred))
        preds.append(pred)
    return preds


def read_frames(frames: str | Path | list[ImageLike], max_frames: int | None = None) -> list[torch.Tensor]:
    """A folder of frames (sorted by name), a list of frames or a video file -> (3, H, W) uint8 tensors."""
    path = None
    if isinstance(frames, str | Path):
        path = Path(frames)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f"{path}: the folder holds no frames ({', '.join(IMAGE_SUFFIXES)})")
            frames = files
        elif not path.is_file():
            raise FileNotFoundError(f"{path}: no such video file or frame folder")
        elif path.suffix.lower() == ".gif":
            frames = [f.convert("RGB") for f in ImageSequence.Iterator(open_image(path))]
        else:
            frames = _decode_video(path)
    frames = list(frames)[:max_frames]
    if not frames:
        raise ValueError(f"{path or 'the frame list'}: the video has no frames")
    tensors = [torch.from_numpy(np.asarray(load_rgb(f)).copy()).permute(2, 0, 1) for f in frames]
    if len({tuple(t.shape) for t in tensors}) > 1:
        raise ValueError(f"frames differ in size: {sorted({tuple(t.shape[1:]) for t in tensors})}")
    return tensors


def _decode_video(path: Path) -> list[Image.Image]:
    try:
        import av
    except ImportError:
        raise ValueError(f"{path}: reading {path.suffix} videos needs PyAV (pip install av); or give a folder of "
                         "frames or a GIF") from None
    try:
        with av.open(str(path)) as container:
            video = container.streams.video  # none in an audio-only file: no frames, not an IndexError
            return [frame.to_image() for frame in container.decode(video[0])] if video else []
    except (av.error.FFmpegError, ValueError) as e:
        raise ValueError(f"{path}: not a video PyAV can read ({e})") from None


def overlay(image: Image.Image, mask: Image.Image | np.ndarray) -> Image.Image:
    """The official demo's overlay of a colour prediction on the image: a mask image, or an unrounded (h, w, 3)
    output in [0, 255] (`Segmentation.output`), resized to the image with nearest neighbours.

    seggpt_engine.py inference_image: (input_image * (0.6 * mask / 255 + 0.4)).astype(np.uint8), in float64 and
    in that order, so that the result equals the official one value for value (the cast truncates).
    """
    m = np.asarray(mask.convert("RGB") if isinstance(mask, Image.Image) else mask, dtype=np.float64)
    m = _resize_output(m, (image.height, image.width))
    blended = np.asarray(image.convert("RGB")) * (0.6 * m / 255 + 0.4)
    return Image.fromarray(blended.clip(0, 255).astype(np.uint8))


def grid(images: list[Image.Image], height: int = 256) -> Image.Image:
    """Side-by-side strip of images scaled to one height."""
    scaled = [im.convert("RGB").resize((max(1, round(im.width * height / im.height)), height)) for im in images]
    strip = Image.new("RGB", (sum(im.width for im in scaled), height))
    x = 0
    for im in scaled:
        strip.paste(im, (x, 0))
        x += im.width
    return strip

"""In-context prediction: prompts (images + label maps) and a query in, a label map out.

The official seggpt_engine.py pre- and post-processing: images resized to the half-canvas size
(bicubic) and masks with nearest neighbours, scaled to [0, 1] and ImageNet-normalised; several
prompts form a feature ensemble (or, here, a spatial ensemble); the prediction is the query half of
the first item, de-normalised and resized back to the query's size with nearest neighbours.
`predict_labels` works on tensors and is what evaluation uses; `Predictor` wraps it for PIL images.
`predict_with_prompt` segments with a prompt file instead, and `panoptic_from_classes` turns class ids
into panoptic segments (connected components of thing classes).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from seggpt_lab.canvas import denormalize, make_canvas, normalize, spatial_ensemble, split_canvas
from seggpt_lab.model import SegGPT
from seggpt_lab.palette import build_palette, decode, paint

if TYPE_CHECKING:  # prompts.py builds on this module's resizing
    from seggpt_lab.prompts import Prompt

SEG_TYPES = {"semantic": 0, "instance": 1}
Ensemble = Literal["feature", "spatial"]


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) uint8 or float in [0, 1] -> (3, h, w) float in [0, 1], bicubic (anti-aliased when shrinking)."""
    image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bicubic", antialias=True, align_corners=False)[0].clamp(0, 1)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., H, W) integer labels -> (..., h, w), nearest neighbour."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    flat = labels.reshape(-1, 1, *labels.shape[-2:]).float()
    return F.interpolate(flat, size=size, mode="nearest").long().reshape(*labels.shape[:-2], *size)


@torch.inference_mode()
def predict_canvas(model: SegGPT, prompts: torch.Tensor, prompt_masks: torch.Tensor, query: torch.Tensor,
                   seg_type: Literal["semantic", "instance"] = "instance", ensemble: Ensemble = "feature"
                   ) -> torch.Tensor:
    """Prompts (K, 3, h, w) and their painted masks (K, 3, h, w), query (3, h, w), all RGB in [0, 1] at the
    model's half-canvas size -> the predicted query mask (3, h, w), RGB in [0, 1]."""
    if ensemble == "spatial":
        prompts, prompt_masks = spatial_ensemble(prompts)[None], spatial_ensemble(prompt_masks, mode="nearest")[None]
    n = prompts.shape[0]
    device = next(model.parameters()).device
    image_canvas = normalize(make_canvas(prompts, query.expand(n, -1, -1, -1))).to(device)
    target_canvas = normalize(make_canvas(prompt_masks, prompt_masks)).to(device)
    seg = torch.full((n,), SEG_TYPES[seg_type], device=device)
    pred = model(image_canvas, target_canvas, model.query_mask(n, device), seg, feature_ensemble=n > 1)
    return split_canvas(denormalize(pred[0].float()))[1]


def predict_labels(model: SegGPT, prompt_images: list[torch.Tensor], prompt_labels: list[torch.Tensor],
                   query_image: torch.Tensor, num_labels: int, seg_type: Literal["semantic", "instance"] = "instance",
                   ensemble: Ensemble = "feature") -> torch.Tensor:
    """Label maps in, label map out: K prompt images (3, h_k, w_k) uint8 with labels (h_k, w_k) in 0..num_labels
    (anything else counts as background), and a query (3, H, W) -> predicted labels (H, W) long.

    Labels are painted with `build_palette(num_labels)` and the prediction decoded by nearest colour.
    """
    half = (model.img_size[0] // 2, model.img_size[1])
    palette = build_palette(num_labels)
    prompts = torch.stack([resize_image(p, half) for p in prompt_images])
    masks = torch.stack([paint(resize_labels(lab, half), palette) for lab in prompt_labels])
    rgb = predict_canvas(model, prompts, masks, resize_image(query_image, half), seg_type, ensemble)
    return resize_labels(decode(rgb, palette), tuple(query_image.shape[-2:]))


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


def predict_with_prompt(model: SegGPT, prompt: Prompt, query_image: torch.Tensor,
                        seg_type: Literal["semantic", "instance"] = "semantic", background: bool = True
                        ) -> torch.Tensor:
    """One forward with a prompt file's `image` and `target` as the prompt half -> the query's class ids (H, W) long.

    The prediction is decoded by the nearest colour of the prompt's palette: row k is class `class_ids[k - 1]`,
    row 0 (black) class 0. With `background=False` black is left out and every pixel takes a class (ADE20K,
    whose 0 is void: Painter decodes with the class colours only, ecosystem.md §4c).
    """
    half = (model.img_size[0] // 2, model.img_size[1])
    target = prompt["target"].float()
    if tuple(target.shape[-2:]) != half:
        target = F.interpolate(target[None], size=half, mode="nearest")[0]
    rgb = predict_canvas(model, resize_image(prompt["image"], half)[None], target[None],
                         resize_image(query_image, half), seg_type)
    rows = decode(rgb, prompt["palette"]) if background else decode(rgb, prompt["palette"][1:]) + 1
    lookup = torch.tensor([0, *prompt["class_ids"]], dtype=torch.long, device=rows.device)
    return resize_labels(lookup[rows], tuple(query_image.shape[-2:]))


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


def panoptic_from_classes(classes: torch.Tensor, things: Collection[int], stuff: Collection[int], min_area: int = 0
                          ) -> tuple[torch.Tensor, dict[int, int]]:
    """(H, W) class ids -> ((H, W) segment ids, {segment id: category}), segment 0 = no segment.

    Each 8-connected region of a thing class is one instance; all pixels of a stuff class are one segment;
    other classes (0 included) get no segment, nor do segments of fewer than `min_area` pixels. Segments are
    numbered 1..M: instances in raster order of their first pixel, then stuff by class id.
    """
    classes = classes.long()

    def member(ids: Collection[int]) -> torch.Tensor:
        return torch.isin(classes, torch.tensor(sorted(ids), dtype=torch.long, device=classes.device))

    instances = connected_components(torch.where(member(things), classes, 0))
    ids = torch.where(member(stuff), int(instances.max()) + classes, instances)  # stuff class c: segment N + c
    values, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    keep = (values > 0) & (counts >= min_area)
    renumber = torch.cumsum(keep.long(), 0) * keep
    category = torch.zeros_like(values).scatter_(0, inverse.flatten(), classes.flatten())
    return renumber[inverse], dict(zip(renumber[keep].tolist(), category[keep].tolist(), strict=True))


def to_tensor(image: Image.Image, size: tuple[int, int], resample: Image.Resampling) -> torch.Tensor:
    """PIL image -> (3, h, w) float in [0, 1], resized to size = (h, w) with PIL (as the official demo does)."""
    image = image.convert("RGB").resize((size[1], size[0]), resample)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255


class Predictor:
    """Paint the query like the prompt masks paint the prompt images (the official demo, on PIL images).

    Args:
        model: a SegGPT (put in eval mode here).
        device: where to run it.
    """

    def __init__(self, model: SegGPT, device: str | torch.device = "cpu") -> None:
        self.model = model.eval().to(device)
        self.half = (model.img_size[0] // 2, model.img_size[1])  # (h, w) of one image in the canvas

    def predict(self, query: Image.Image, prompt_images: list[Image.Image], prompt_masks: list[Image.Image],
                seg_type: Literal["semantic", "instance"] = "instance", ensemble: Ensemble = "feature") -> Image.Image:
        """Returns the predicted mask as an RGB image of the query's size (colours as in the prompt masks)."""
        if not prompt_images or len(prompt_images) != len(prompt_masks):
            raise ValueError(f"need one mask per prompt image, got {len(prompt_images)} images "
                             f"and {len(prompt_masks)} masks")
        prompts = torch.stack([to_tensor(p, self.half, Image.Resampling.BICUBIC) for p in prompt_images])
        masks = torch.stack([to_tensor(m, self.half, Image.Resampling.NEAREST) for m in prompt_masks])
        query_tensor = to_tensor(query, self.half, Image.Resampling.BICUBIC)
        out = predict_canvas(self.model, prompts, masks, query_tensor, seg_type, ensemble)
        out = F.interpolate(out[None], size=(query.height, query.width), mode="nearest")[0]
        return Image.fromarray((out.permute(1, 2, 0) * 255).round().byte().cpu().numpy())


def overlay(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The official demo's overlay: image * (0.6 * mask + 0.4)."""
    img = np.asarray(image.convert("RGB"), dtype=np.float32)
    m = np.asarray(mask.convert("RGB").resize(image.size), dtype=np.float32) / 255
    return Image.fromarray((img * (0.6 * m + 0.4)).clip(0, 255).astype(np.uint8))


def grid(images: list[Image.Image], height: int = 256) -> Image.Image:
    """Side-by-side strip of images scaled to one height."""
    scaled = [im.convert("RGB").resize((max(1, round(im.width * height / im.height)), height)) for im in images]
    strip = Image.new("RGB", (sum(im.width for im in scaled), height))
    x = 0
    for im in scaled:
        strip.paste(im, (x, 0))
        x += im.width
    return strip

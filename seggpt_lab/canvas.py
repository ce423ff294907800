"""Canvases: prompt on top of query, ImageNet-normalised; resizing to and from the half-canvas as the official
baaivision/Painter SegGPT/SegGPT_inference/seggpt_engine.py does; the item types that loaders yield.

Shapes: images (B, 3, h, w) in [0, 1]; canvases (B, 3, 2h, w)."""

from __future__ import annotations

import math
from typing import NotRequired, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# timm IMAGENET_DEFAULT_MEAN / _STD, the normalisation of the official seggpt_engine.py
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return mean, std


def normalize(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB (..., 3, H, W) -> ImageNet-normalised."""
    mean, std = _stats(images)
    return (images - mean) / std


def denormalize(canvas: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised (..., 3, H, W) -> RGB in [0, 1], clipped."""
    mean, std = _stats(canvas)
    return (canvas * std + mean).clamp(0, 1)


def make_canvas(prompt: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Stack (B, 3, h, w) prompt over (B, 3, h, w) query -> (B, 3, 2h, w)."""
    if prompt.shape[-2:] != query.shape[-2:]:
        raise ValueError(f"prompt {tuple(prompt.shape[-2:])} and query {tuple(query.shape[-2:])} sizes differ")
    return torch.cat([prompt, query], dim=-2)


def split_canvas(canvas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, 2h, w) -> prompt half (B, 3, h, w), query half (B, 3, h, w)."""
    prompt, query = canvas.chunk(2, dim=-2)
    return prompt, query


def spatial_ensemble(examples: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """(N, C, h, w) -> (C, h, w): an n x n grid (n = ceil(sqrt(N)), empty cells zero) sub-sampled to one example's
    size, SegGPT's spatial ensemble (§3.2); mode "bilinear" (antialiased) for images, "nearest" for labels."""
    n_examples, channels, h, w = examples.shape
    n = math.ceil(math.sqrt(n_examples))
    cells = torch.zeros(n * n, channels, h, w, dtype=examples.dtype, device=examples.device)
    cells[:n_examples] = examples
    grid = cells.reshape(n, n, channels, h, w).permute(2, 0, 3, 1, 4).reshape(channels, n * h, n * w)
    if n == 1:
        return grid
    if mode == "nearest":
        return F.interpolate(grid[None].float(), size=(h, w), mode="nearest")[0].to(examples.dtype)
    return F.interpolate(grid[None], size=(h, w), mode=mode, antialias=True, align_corners=False)[0]


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) uint8 or float in [0, 1] -> (3, h, w) float in [0, 1], bicubic: uint8 by PIL, as seggpt_engine.py
    (`Image.resize((448, 448))`, 8-bit rounding between its passes); float (tuned prompts) by torch's antialiased
    bicubic, within a few levels of PIL's."""
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
    """(..., h, w) labels decoded from a prediction -> (..., H, W), by torch's nearest neighbour in float64, as
    seggpt_engine.py resizes its output (float32 picks other source pixels: BENCHMARKS.md §7)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    flat = labels.reshape(-1, 1, *labels.shape[-2:]).double()
    return F.interpolate(flat, size=size, mode="nearest").long().reshape(*labels.shape[:-2], *size)


def resize_output(output: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) colour output -> (H, W, 3) at `size` = (H, W): seggpt_engine.py's F.interpolate(mode="nearest")."""
    if output.shape[:2] == tuple(size):
        return output
    chw = torch.from_numpy(np.ascontiguousarray(output)).permute(2, 0, 1)[None]
    return F.interpolate(chw, size=size, mode="nearest")[0].permute(1, 2, 0).numpy()


class Episode(TypedDict):
    """One few-shot episode at native image sizes. Labels: 0 background, 1 the episode's class, IGNORE_LABEL void."""

    key: str  # the query sample's key
    class_id: int  # the class being segmented, in the source's class ids
    prompt_images: list[torch.Tensor]  # K x (3, h_k, w_k) uint8
    prompt_labels: list[torch.Tensor]  # K x (h_k, w_k) long
    query_image: torch.Tensor  # (3, H, W) uint8
    query_label: torch.Tensor  # (H, W) long
    all_objects: torch.Tensor  # (H, W) long: 1 on every labelled object of the query (the category-blind oracle)


class SwapQuery(TypedDict):
    """One prompt-swap query (`datamodules.prompt_swap`): two objects, each prompted in turn (index r of `targets` and
    the prompts is `objects[r]`'s), and an absent-object control. Labels: 1 the object, 0 elsewhere, IGNORE_LABEL void.
    """

    key: str  # the query sample's key
    index: int  # the query's position in the plan (what the metric pairs roles and deduplicates by)
    objects: list[int]  # the two objects' ids (class ids, or object ids of one video)
    kind: str  # the distractor kind, such as "same_shape"
    query_image: torch.Tensor  # (3, H, W) uint8
    targets: torch.Tensor  # (2, H, W) long: object 0, object 1
    all_objects: torch.Tensor  # (H, W) long: every labelled object of the query (the category-blind oracle)
    prompt_images: list[torch.Tensor]  # 2 x (3, h_r, w_r) uint8
    prompt_labels: list[torch.Tensor]  # 2 x (h_r, w_r) long
    absent_image: NotRequired[torch.Tensor]  # (3, h, w) uint8: a prompt of an object in neither of the two
    absent_label: NotRequired[torch.Tensor]  # (h, w) long
    absent_object: NotRequired[int]


class VideoSequence(TypedDict):
    """One video, its first frame's label the prompt (semi-supervised). Labels: 0, objects 1..K, IGNORE_LABEL void."""

    key: str  # the video id
    frames: list[int]  # frame numbers, as in the source
    images: list[torch.Tensor]  # T x (3, H, W) uint8
    labels: torch.Tensor  # (T, H, W) long; frames without annotation are all IGNORE_LABEL


# void in label maps in memory (evaluation labels, prompts) and every metric's default ignore value: the DAVIS
# toolkit's _VOID_LABEL, HSNet's Evaluator.ignore_index and detectron2's ADE20K ignore label are all 255. The
# shards mark void in sem.png as 65535 instead (`datamodules.schema.SEM_VOID`), so that any class id below it fits.
IGNORE_LABEL = 255


def clean(labels: torch.Tensor) -> torch.Tensor:
    """Void -> background: what a prompt may show and what the oracle predicts."""
    return torch.where(labels == IGNORE_LABEL, 0, labels)


# files that a folder of query images or video frames contributes: here, beside the other shared input types,
# because both `seggpt_lab.images` and `datamodules.predict` need them (datamodules may import canvas only)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ClassPrompt(TypedDict):
    """Example prompts of one class: images (3, h_k, w_k) uint8 with binary labels (h_k, w_k) long."""

    class_id: int
    images: list[torch.Tensor]
    labels: list[torch.Tensor]


class SemanticImage(TypedDict):
    """One image to segment into every class, with per-class prompts. Labels: class ids, IGNORE_LABEL void."""

    key: str
    image: torch.Tensor  # (3, H, W) uint8
    label: torch.Tensor  # (H, W) long
    prompts: list[ClassPrompt]


class PanopticImage(TypedDict):
    """One image and its panoptic truth as COCO panoptic has it: segment ids (0 void, 1..N) and every segment's info."""

    key: str
    image: torch.Tensor  # (3, H, W) uint8
    segments: torch.Tensor  # (H, W) long segment ids
    segment_info: dict[int, tuple[int, bool]]  # {segment id: (category, iscrowd)}


class InContextBatch(TypedDict):
    """A training batch of B pairs; canvases stay uint8 until `model_inputs` on the accelerator (a quarter of float32's
    bytes to move)."""

    image_canvas: torch.Tensor  # (B, 3, H, W) uint8
    target_canvas: torch.Tensor  # (B, 3, H, W) uint8: painted masks
    valid: torch.Tensor  # (B, 1, H, W) uint8: 1 where the loss looks, 0 on void (float on the accelerator)
    bool_masked_pos: torch.Tensor  # (B, L) bool: target patches replaced by the mask token
    seg_type: torch.Tensor  # (B,) long: 0 semantic, 1 instance
    # the producing worker's running counts (pairs, partner pairs, mixed, skipped per source...), for logging
    stats: NotRequired[dict[str, float]]


def model_inputs(batch: InContextBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 canvases -> ImageNet-normalised float canvases (image, target) on the batch's device."""
    if "target_canvas" not in batch:
        raise ValueError("the batch has no target_canvas: it is unfinished (its targets are painted on the "
                         "accelerator); finish it first, as the pretraining data module's on_after_batch_transfer does")
    return normalize(batch["image_canvas"].float() / 255), normalize(batch["target_canvas"].float() / 255)

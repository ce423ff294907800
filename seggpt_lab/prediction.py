"""In-context prediction on tensors: prompts (images + label maps) and a query in, a label map out, with the
official seggpt_engine.py pre- and post-processing (README, "Using a model"). `predict_labels` is what evaluation
uses (`Predictor` wraps it for PIL images); `predict_with_prompt` uses a prompt file; `propagate`, a video.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from seggpt_lab.canvas import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    denormalize,
    make_canvas,
    normalize,
    resize_image,
    resize_labels,
    resize_prediction,
    spatial_ensemble,
    split_canvas,
)
from seggpt_lab.model import SegGPT
from seggpt_lab.palette import binarize, build_palette, decode, paint
from seggpt_lab.prompts import Prompt

SEG_TYPES = {"semantic": 0, "instance": 1}
Ensemble = Literal["feature", "spatial"]


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


def predict_labels(model: SegGPT, prompt_images: list[torch.Tensor], prompt_labels: list[torch.Tensor],
                   query_image: torch.Tensor, num_labels: int, seg_type: Literal["semantic", "instance"] = "instance",
                   ensemble: Ensemble = "feature", binary_threshold: float | None = None,
                   palette: torch.Tensor | None = None) -> torch.Tensor:
    """K prompt images (3, h_k, w_k) uint8 with labels (h_k, w_k) in 0..num_labels (others: background) and a query
    (3, H, W) -> labels (H, W) long. Labels are painted with `palette` ((num_labels + 1, 3) uint8, row 0 black;
    default `build_palette(num_labels)`); the prediction is decoded by the nearest palette colour or, with
    `binary_threshold` and num_labels == 1, by `palette.binarize`."""
    half = (model.img_size[0] // 2, model.img_size[1])
    palette = build_palette(num_labels) if palette is None else palette
    if palette.shape != (num_labels + 1, 3):
        raise ValueError(f"palette: need {num_labels + 1} colours (black first), got shape {tuple(palette.shape)}")
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
    return predict_canvas(model, *prompt_halves(model, prompt), query, seg_type)


def prompt_halves(model: SegGPT, prompt: Prompt) -> tuple[torch.Tensor, torch.Tensor]:
    """A prompt file's image and target at the half-canvas size, (1, 3, h, w) each (float: torch resizing)."""
    half = (model.img_size[0] // 2, model.img_size[1])
    target = prompt["target"].float()
    if tuple(target.shape[-2:]) != half:
        target = F.interpolate(target[None], size=half, mode="nearest")[0]
    return resize_image(prompt["image"], half)[None], target[None]


def predict_with_prompt(model: SegGPT, prompt: Prompt, query_image: torch.Tensor,
                        seg_type: Literal["semantic", "instance"] = "semantic", background: bool = True
                        ) -> torch.Tensor:
    """One forward with a prompt file as the prompt half -> the query's class ids (H, W) long, by the nearest colour
    of its palette (row k: `class_ids[k - 1]`, black: 0). `background=False` leaves black out, for ADE20K, whose 0
    is void (Painter's eval/ade20k_semantic/ADE20kSemSegEvaluatorCustom.py decodes with the class colours only)."""
    half = (model.img_size[0] // 2, model.img_size[1])
    rgb = predict_prompt_file(model, prompt, resize_image(query_image, half), seg_type)
    rows = decode(rgb, prompt["palette"]) if background else decode(rgb, prompt["palette"][1:]) + 1
    lookup = torch.tensor([0, *prompt["class_ids"]], dtype=torch.long, device=rows.device)
    return resize_prediction(lookup[rows], tuple(query_image.shape[-2:]))


def propagate(frames: list[torch.Tensor], first: torch.Tensor, predict, memory: int = 0,
              given: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Semi-supervised propagation: frames (3, H, W) and the first frame's labels (H, W) -> labels per frame, the
    first being `first`. Frame t is `predict(prompts, t, num_labels)`: (image, labels) prompts, the first frame and
    the last `memory` predictions (the official video mode's FIFO queue); num_labels, the largest object id so far.
    With `given` labels (YouTube-VOS, MOSE), a frame that brings new objects keeps their masks and joins the prompts."""

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

"""Label maps <-> colour images: the one palette module, used by training, evaluation and inference.

A palette is a (K + 1, 3) uint8 table: row 0 is black (background), row k the colour of class or object k.
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch

VIDEO_THRESHOLD = 128  # seggpt_engine.py inference_video: output.mean(-1).gt(128) on the 0..255 output

# The colours that training's random colouring draws from (`datamodules.coloring`): 8 levels per channel (0, 36, 73,
# ... 255), less those within one level of black. Any two differ by a level (36) in some channel.
_AXIS = np.round(np.linspace(0, 255, 8)).astype(np.uint8)
_LATTICE = np.stack(np.meshgrid(_AXIS, _AXIS, _AXIS, indexing="ij"), -1).reshape(-1, 3)
LATTICE_COLORS: np.ndarray = _LATTICE[_LATTICE.max(1) >= _AXIS[2]]  # (504, 3) uint8
# Painter-style fixed colours (one per category id, and one per instance id, from two shuffles of the lattice): what
# `PairTransform(coloring="fixed")` paints and what `PromptFollowingEvaluation(prompt_colors="fixed")` prompts with
_FIXED = {kind: LATTICE_COLORS[np.random.default_rng(seed).permutation(len(LATTICE_COLORS))]
          for kind, seed in (("sem", 0), ("ins", 1))}


def fixed_color(label_id: int, kind: str = "sem") -> tuple[int, int, int]:
    """The fixed colour of category (kind "sem") or instance ("ins") `label_id` >= 1: a lattice colour, the same in
    every image, so that colour names the category as in Painter (the ablation of random colouring)."""
    colors = _FIXED[kind]
    r, g, b = colors[(label_id - 1) % len(colors)]
    return int(r), int(g), int(b)


def build_palette(num_labels: int) -> torch.Tensor:
    """(num_labels + 1, 3) uint8, class 0 black (Painter gen_color_coco_panoptic_segm.py, HF build_palette)."""
    base = int(num_labels ** (1 / 3)) + 1
    margin = 256 // base
    loc = torch.arange(num_labels)
    colors = torch.stack([255 - (loc // base**2) * margin, 255 - ((loc % base**2) // base) * margin,
                          255 - (loc % base) * margin], dim=1)
    return torch.cat([torch.zeros(1, 3, dtype=torch.long), colors]).to(torch.uint8)


def distinct_colors(n: int) -> torch.Tensor:
    """(n, 3) uint8 colours for people to tell apart: golden-ratio hues, alternating brightness."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    rgb = [[round(c * 255) for c in colorsys.hsv_to_rgb(h, 0.75, 1.0 if i % 2 else 0.8)] for i, h in enumerate(hues)]
    return torch.tensor(rgb, dtype=torch.uint8).reshape(n, 3)


def colorize(labels: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """(..., H, W) integer labels -> (..., H, W, 3) uint8; labels outside the palette (void, unknown) are black."""
    palette = palette.to(labels.device)
    inside = (labels >= 0) & (labels < len(palette))
    return palette[torch.where(inside, labels, 0)] * inside[..., None]


def paint(labels: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """(..., H, W) labels -> (..., 3, H, W) float RGB in [0, 1], ready for `canvas.normalize`."""
    return colorize(labels, palette).movedim(-1, -3).float() / 255


def decode(rgb: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> (..., H, W) long: the nearest palette colour (squared distance, as transformers'
    post_process_semantic_segmentation; for white on black, foreground above a channel mean of 127.5)."""
    colors = palette.to(rgb.device, torch.float32) / 255  # (K + 1, 3)
    pixels = rgb.movedim(-3, -1).float()  # (..., H, W, 3)
    # |p - c|^2 = |p|^2 - 2 p.c + |c|^2; |p|^2 is the same for every c, so it drops out of the argmin
    score = pixels @ colors.T * -2 + (colors**2).sum(-1)  # (..., H, W, K + 1)
    return score.argmin(-1)


def binarize(rgb: torch.Tensor, threshold: float = VIDEO_THRESHOLD) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> (..., H, W) long: 1 where the channel mean (0..255, clipped) exceeds
    `threshold` (the official video mode's rule, `VIDEO_THRESHOLD`)."""

    return ((rgb.float() * 255).clamp(0, 255).mean(-3) > threshold).long()

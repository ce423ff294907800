"""Label maps <-> colour images: the one palette module.

`build_palette` is Painter's / Hugging Face's deterministic class palette (seggpt_reference.md §9.2),
used to paint prompts and to decode predictions by nearest colour; `distinct_colors` gives
well-separated colours for pictures that people look at.
"""

from __future__ import annotations

import colorsys

import numpy as np


def build_palette(num_labels: int) -> np.ndarray:
    """(num_labels + 1, 3) uint8: class 0 black, class k >= 1 from a base^3 grid counted down from white.

    base = int(K ** (1/3)) + 1, margin = 256 // base (Painter gen_color_coco_panoptic_segm.py, HF build_palette).
    """
    base = int(num_labels ** (1 / 3)) + 1
    margin = 256 // base
    loc = np.arange(num_labels)
    colors = np.stack([255 - (loc // base**2) * margin, 255 - ((loc % base**2) // base) * margin,
                       255 - (loc % base) * margin], axis=1)
    return np.concatenate([np.zeros((1, 3), dtype=np.int64), colors]).astype(np.uint8)


def distinct_colors(n: int) -> np.ndarray:
    """(n, 3) uint8 colours spread around the hue circle by the golden ratio, alternating brightness."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    return np.array([[round(c * 255) for c in colorsys.hsv_to_rgb(h, 0.75, 1.0 if i % 2 else 0.8)]
                     for i, h in enumerate(hues)], dtype=np.uint8).reshape(n, 3)


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) integer labels -> (H, W, 3) uint8 via palette[label]; labels outside the palette become black."""
    safe = np.where((labels >= 0) & (labels < len(palette)), labels, 0)
    out = palette[safe]
    out[(labels < 0) | (labels >= len(palette))] = 0
    return out


def nearest_color(image: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W, 3) colours -> (H, W) index of the nearest palette colour (squared RGB distance, as HF does)."""
    dist = ((image[..., None, :].astype(np.int32) - palette[None, None].astype(np.int32)) ** 2).sum(-1)
    return dist.argmin(-1)

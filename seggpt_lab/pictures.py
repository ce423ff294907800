"""Pictures for people: image strips, the official demo's overlay, label maps painted over images, a line plot."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from seggpt_lab.canvas import Episode, SwapQuery, clean, resize_output
from seggpt_lab.palette import build_palette, colorize, decode
from seggpt_lab.prompts import Prompt


def grid(images: list[Image.Image], height: int = 256) -> Image.Image:
    """Side-by-side strip of images scaled to one height."""
    scaled = [im.convert("RGB").resize((max(1, round(im.width * height / im.height)), height)) for im in images]
    strip = Image.new("RGB", (sum(im.width for im in scaled), height))
    x = 0
    for im in scaled:
        strip.paste(im, (x, 0))
        x += im.width
    return strip


def overlay(image: Image.Image, mask: Image.Image | np.ndarray) -> Image.Image:
    """The official demo's overlay of a colour prediction, `mask` (an image, or an unrounded (h, w, 3) output in
    [0, 255]), resized to the image by nearest neighbour. As seggpt_engine.py inference_image computes it, in
    float64 and in that order, so that the truncating uint8 cast gives the official values."""
    m = np.asarray(mask.convert("RGB") if isinstance(mask, Image.Image) else mask, dtype=np.float64)
    m = resize_output(m, (image.height, image.width))
    blended = np.asarray(image.convert("RGB")) * (0.6 * m / 255 + 0.4)
    return Image.fromarray(blended.clip(0, 255).astype(np.uint8))


def picture(images: list[torch.Tensor], labels: list[torch.Tensor], num_labels: int) -> Image.Image:
    """A strip of images, each with its label map painted over it (prompt | query | prediction | truth)."""
    palette = build_palette(max(num_labels, 1))
    tiles = []
    for image, label in zip(images, labels, strict=True):
        rgb = image.permute(1, 2, 0).float()
        paint = colorize(clean(label).cpu(), palette).float()
        painted = torch.where((clean(label) > 0)[..., None].cpu(), 0.4 * rgb + 0.6 * paint, rgb)
        tiles.append(Image.fromarray(painted.clamp(0, 255).byte().numpy()))
    return grid(tiles, height=192)


def prompt_tile(prompt: Prompt) -> tuple[torch.Tensor, torch.Tensor]:
    """A prompt file's example for `picture`: its image (3, h, w) uint8 and its target decoded to class ids (h, w)."""
    lookup = torch.tensor([0, *prompt["class_ids"]])
    image = (prompt["image"].clamp(0, 1) * 255).round().byte()
    return image, lookup[decode(prompt["target"], prompt["palette"])]


def dense(segments: torch.Tensor) -> torch.Tensor:
    """Segment ids -> 0..M in ascending order (0 stays 0), so that a picture's palette covers them."""
    values = torch.unique(torch.cat([segments.new_zeros(1), segments.flatten()]))
    return torch.searchsorted(values, segments)


def episode_picture(episode: Episode, pred: torch.Tensor) -> Image.Image:
    """The prompts with their masks | the query | the prediction | the truth, of one few-shot episode."""
    image, truth = episode["query_image"], episode["query_label"]
    return picture([*episode["prompt_images"], image, image, image],
                   [*episode["prompt_labels"], torch.zeros_like(truth), pred, truth], 1)


def swap_picture(query: SwapQuery, preds: torch.Tensor) -> Image.Image:
    """prompt of object 0 | the query's prediction for it | prompt of object 1 | the prediction for it | truth (object
    0 in the first colour, object 1 in the second)."""
    image, targets = query["query_image"], query["targets"]
    truth = torch.where(targets[1] == 1, 2, targets[0])
    return picture([query["prompt_images"][0], image, query["prompt_images"][1], image, image],
                   [query["prompt_labels"][0], preds[0], 2 * clean(query["prompt_labels"][1]), 2 * preds[1],
                    truth], 2)


def line_plot(points: list[tuple[int, float]], label: str, size: tuple[int, int] = (640, 320)) -> Image.Image:
    """A line plot of (step, value) points, such as a loss curve; PIL only, no plotting library."""
    w, h = size
    pad = 40
    steps, values = zip(*points, strict=True)
    lo, hi = min(values), max(values)
    span_x, span_y = max(steps[-1] - steps[0], 1), max(hi - lo, 1e-12)
    xy = [(pad + (s - steps[0]) / span_x * (w - 2 * pad), h - pad - (v - lo) / span_y * (h - 2 * pad))
          for s, v in points]
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([pad, pad, w - pad, h - pad], outline="gray")
    draw.line(xy, fill=(31, 119, 180), width=2)
    draw.text((pad, 8), f"{label} by step: {values[0]:.4f} at {steps[0]} -> {values[-1]:.4f} at {steps[-1]}",
              fill="black")
    draw.text((pad, h - pad + 8), f"step {steps[0]}", fill="black")
    draw.text((w - pad - 60, h - pad + 8), f"step {steps[-1]}", fill="black")
    draw.text((4, pad - 12), f"{hi:.3f}", fill="black")
    draw.text((4, h - pad), f"{lo:.3f}", fill="black")
    return image


def sweep_plot(params: list[dict], values: list[float], metric: str, panel: tuple[int, int] = (320, 240)
               ) -> Image.Image:
    """A sweep's metric against each parameter, one panel each: a dot per trial; a parameter with few distinct or
    non-numeric values is drawn as categories, each with its mean (a bar); numbers spanning 10x or more on a log axis.
    PIL only, as `line_plot`."""
    keys = list(params[0]) if params else []
    w, h = panel
    pad, cols = 36, min(3, max(len(keys), 1))
    image = Image.new("RGB", (w * cols, h * max(1, -(-len(keys) // cols))), "white")
    draw = ImageDraw.Draw(image)
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    for n, key in enumerate(keys):
        x0, y0 = (n % cols) * w, (n // cols) * h
        xs = [p[key] for p in params]
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs) and len(set(xs)) > 3
        if numeric:
            log = min(xs) > 0 and max(xs) >= 10 * min(xs)
            pos = [float(np.log10(x)) if log else float(x) for x in xs]
            left, right = min(pos), max(pos)
            where = [(p - left) / ((right - left) or 1.0) for p in pos]
            ticks = [(0.0, f"{min(xs):.3g}"), (1.0, f"{max(xs):.3g}")]
        else:
            names = sorted({str(x) for x in xs})
            where = [(names.index(str(x)) + 0.5) / len(names) for x in xs]
            ticks = [((i + 0.5) / len(names), name[:14]) for i, name in enumerate(names)]
        px = [x0 + pad + f * (w - 2 * pad) for f in where]
        py = [y0 + h - pad - (v - lo) / span * (h - 2 * pad) for v in values]
        draw.rectangle([x0 + pad, y0 + pad, x0 + w - pad, y0 + h - pad], outline="gray")
        if not numeric:
            for f, _ in ticks:
                group = [v for g, v in zip(where, values, strict=True) if g == f]
                cy = y0 + h - pad - (sum(group) / len(group) - lo) / span * (h - 2 * pad)
                cx = x0 + pad + f * (w - 2 * pad)
                draw.line([(cx - 18, cy), (cx + 18, cy)], fill=(214, 39, 40), width=2)
        for x, y in zip(px, py, strict=True):
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(31, 119, 180))
        for f, text in ticks:
            draw.text((x0 + pad + f * (w - 2 * pad) - 3 * len(text), y0 + h - pad + 6), text, fill="black")
        draw.text((x0 + pad, y0 + 8), f"{metric} by {key.rsplit('.', 1)[-1]}", fill="black")
        draw.text((x0 + 2, y0 + pad - 12), f"{hi:.3g}", fill="black")
        draw.text((x0 + 2, y0 + h - pad), f"{lo:.3g}", fill="black")
    return image

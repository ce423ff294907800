"""Canvases: two same-sized images stacked vertically, prompt on top, query below, ImageNet-normalised.

Shapes: images (B, 3, h, w) in [0, 1]; canvases (B, 3, 2h, w).
"""

from __future__ import annotations

import torch

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

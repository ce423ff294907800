"""In-context prediction on PIL images, with the official demo's pre- and post-processing.

Official seggpt_engine.py: images resized to the half-canvas size (bicubic) and masks with NEAREST,
both scaled to [0, 1] and ImageNet-normalised; several prompts form a feature ensemble; the
prediction is the query half of the first item, de-normalised and resized back (nearest).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from seggpt_lab.canvas import denormalize, make_canvas, normalize, split_canvas
from seggpt_lab.model import SegGPT

SEG_TYPES = {"semantic": 0, "instance": 1}


def to_tensor(image: Image.Image, size: tuple[int, int], resample: Image.Resampling) -> torch.Tensor:
    """PIL image -> (3, h, w) float in [0, 1], resized to size = (h, w)."""
    image = image.convert("RGB").resize((size[1], size[0]), resample)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255


class Predictor:
    """Paint the query like the prompt masks paint the prompt images.

    Args:
        model: a SegGPT (put in eval mode here).
        device: where to run it.
    """

    def __init__(self, model: SegGPT, device: str | torch.device = "cpu") -> None:
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.half = (model.img_size[0] // 2, model.img_size[1])  # (h, w) of one image in the canvas

    @torch.inference_mode()
    def predict(self, query: Image.Image, prompt_images: list[Image.Image], prompt_masks: list[Image.Image],
                seg_type: Literal["semantic", "instance"] = "instance") -> Image.Image:
        """Returns the predicted mask as an RGB image of the query's size (colours as in the prompt masks)."""
        if not prompt_images or len(prompt_images) != len(prompt_masks):
            raise ValueError(f"need one mask per prompt image, got {len(prompt_images)} images "
                             f"and {len(prompt_masks)} masks")
        n = len(prompt_images)
        prompts = torch.stack([to_tensor(p, self.half, Image.Resampling.BICUBIC) for p in prompt_images])
        masks = torch.stack([to_tensor(m, self.half, Image.Resampling.NEAREST) for m in prompt_masks])
        queries = to_tensor(query, self.half, Image.Resampling.BICUBIC).expand(n, -1, -1, -1)
        image_canvas = normalize(make_canvas(prompts, queries)).to(self.device)
        target_canvas = normalize(make_canvas(masks, masks)).to(self.device)
        seg = torch.full((n,), SEG_TYPES[seg_type], device=self.device)
        pred = self.model(image_canvas, target_canvas, self.model.query_mask(n, self.device), seg,
                          feature_ensemble=n > 1)
        _, out = split_canvas(denormalize(pred[:1].float()))  # (1, 3, h, w)
        out = F.interpolate(out, size=(query.height, query.width), mode="nearest")
        return Image.fromarray((out[0].permute(1, 2, 0) * 255).round().byte().cpu().numpy())


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

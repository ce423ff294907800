"""One in-context prediction on generated images, written as a picture (`make demo` trains and scores instead).

    python -m seggpt_lab.demo [--checkpoint PATH] [--output outputs/demo.png]

Without a checkpoint a freshly initialised tiny model runs, so the prediction is noise: the demo
shows the whole path (prompt, mask, query -> canvas -> model -> mask -> overlay) in seconds.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageDraw

from seggpt_lab.checkpoint import load_pretrained
from seggpt_lab.model import seggpt_vit_tiny
from seggpt_lab.pictures import grid, overlay
from seggpt_lab.predictor import Predictor


def scene(seed: int, size: int = 256) -> tuple[Image.Image, Image.Image]:
    """A textured background with a few shapes; the mask is white on every ellipse."""
    rng = random.Random(seed)
    image = Image.effect_noise((size, size), 40).convert("RGB")
    image = Image.blend(image, Image.new("RGB", image.size, tuple(rng.randrange(256) for _ in range(3))), 0.6)
    mask = Image.new("RGB", image.size)
    draw, mask_draw = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for k in range(4):
        x, y, r = rng.randrange(size), rng.randrange(size), rng.randrange(size // 10, size // 5)
        box = (x - r, y - r, x + r, y + r)
        colour = tuple(rng.randrange(256) for _ in range(3))
        if k % 2 == 0:
            draw.ellipse(box, fill=colour)
            mask_draw.ellipse(box, fill=(255, 255, 255))
        else:
            draw.rectangle(box, fill=colour)
            mask_draw.rectangle(box, fill=(0, 0, 0))
    return image, mask


def main(args: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="any checkpoint load_pretrained reads; default: a fresh tiny model")
    parser.add_argument("--output", default="outputs/demo.png", type=Path)
    opts = parser.parse_args(args)

    model = load_pretrained(opts.checkpoint) if opts.checkpoint else seggpt_vit_tiny(img_size=(448, 224))
    prompt, prompt_mask = scene(seed=0)
    query, query_mask = scene(seed=1)
    output = Predictor(model).predict_output(query, [prompt], [prompt_mask])  # unrounded, as the official overlay
    prediction = Image.fromarray(output.round().astype("uint8"))
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    grid([prompt, prompt_mask, query, prediction, overlay(query, output), query_mask]).save(opts.output)
    print(f"prompt | prompt mask | query | prediction | overlay | query ground truth -> {opts.output}")
    return opts.output


if __name__ == "__main__":
    main()

"""Fidelity to the official engine, pixel for pixel (issue 18): overlay, video threshold, resizing.

On the official example images (../shared/data/painter_examples/SegGPT/SegGPT_inference/examples: hmbb_1 prompts
hmbb_2 and hmbb_3, video_1 prompts video_2 and video_3) with a random small model on the 896x448 canvas. The
official side is seggpt_engine.py's recipe (run_one_image, inference_image, inference_video) written out with
PIL, numpy and torch; "before" is this project's previous code, kept as the baseline.

- Overlay: uint8 values of `Segmentation.overlay` differing from the official overlay of the same forward (0
  expected) and of the official float64 canvases' forward; before: the formula applied to the rounded mask.
- Threshold: video-example pixels where the nearest of black and white (mean > 127.5), or our video path, and
  the official rule (mean > 128) disagree on the official output.
- Resizing: `resize_image` against PIL's bicubic resize (largest 8-bit difference, share more than one level
  apart) and `resize_labels` against PIL's NEAREST on the target PNGs; before: torch's bicubic and nearest.


    python benchmarks/fidelity_preprocessing.py [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from seggpt_lab.canvas import IMAGENET_MEAN, IMAGENET_STD, resize_image, resize_labels
from seggpt_lab.model import SegGPT
from seggpt_lab.palette import VIDEO_THRESHOLD
from seggpt_lab.prediction import predict_labels
from seggpt_lab.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO.parent / "shared" / "data" / "painter_examples" / "SegGPT" / "SegGPT_inference" / "examples"
PAIRS = [("hmbb_1", "hmbb_2"), ("hmbb_1", "hmbb_3"), ("video_1", "video_2"), ("video_1", "video_3")]
HALF = 448


# --- the official recipe (seggpt_engine.py) and the previous code ---

def official_array(image: Path | Image.Image, resample: Image.Resampling = Image.Resampling.BICUBIC) -> np.ndarray:
    """convert("RGB").resize((448, 448)) / 255, normalised in float64: (448, 448, 3)."""
    image = Image.open(image) if isinstance(image, Path) else image
    image = np.asarray(image.convert("RGB").resize((HALF, HALF), resample)) / 255
    return (image - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)


def official_output(model: SegGPT, prompt: str, query: str, target: Image.Image | None = None) -> np.ndarray:
    """run_one_image and inference_image's resize: the float64 colour output (H, W, 3) at the query's size; the
    prompt's mask is its target PNG unless `target` is given."""
    image = np.concatenate([official_array(EXAMPLES / f"{prompt}.jpg"), official_array(EXAMPLES / f"{query}.jpg")])
    target = official_array(target or EXAMPLES / f"{prompt}_target.png", Image.Resampling.NEAREST)
    target = np.concatenate([target, target])
    with torch.inference_mode():
        pred = model(torch.from_numpy(image).permute(2, 0, 1)[None].float(),
                     torch.from_numpy(target).permute(2, 0, 1)[None].float(), model.query_mask(1),
                     torch.ones(1, dtype=torch.long))
    out = torch.clip((pred[0, :, HALF:].permute(1, 2, 0) * torch.tensor(IMAGENET_STD, dtype=torch.float64)
                      + torch.tensor(IMAGENET_MEAN, dtype=torch.float64)) * 255, 0, 255)
    width, height = Image.open(EXAMPLES / f"{query}.jpg").size
    return F.interpolate(out.permute(2, 0, 1)[None], size=(height, width), mode="nearest")[0].permute(1, 2, 0).numpy()


def official_overlay(query: np.ndarray, output: np.ndarray) -> np.ndarray:
    return (query * (0.6 * output / 255 + 0.4)).astype(np.uint8)


def before_overlay(query: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The previous `overlay`: the rounded uint8 mask, in float32."""
    m = mask.astype(np.float32) / 255
    return (query.astype(np.float32) * (0.6 * m + 0.4)).clip(0, 255).astype(np.uint8)


def before_resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(image[None].float() / 255, size=size, mode="bicubic", antialias=True)[0].clamp(0, 1)


def before_resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(labels[None, None].float(), size=size, mode="nearest")[0, 0].long()


def tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="of the random model")
    opts = parser.parse_args()
    torch.manual_seed(opts.seed)
    model = SegGPT(img_size=(2 * HALF, HALF), patch_size=16, embed_dim=64, depth=3, num_heads=2, merge_index=1,
                   feature_indices=(1, 2), decoder_embed_dim=16, init="xavier").eval()
    predictor = Predictor(model)
    print(f"random SegGPT (embed 64, depth 3) on an {2 * HALF}x{HALF} canvas, seed {opts.seed}; {EXAMPLES}")

    print("overlay: uint8 values differing from the official overlay")
    for prompt, query in PAIRS:
        result = predictor.segment(EXAMPLES / f"{query}.jpg", [(EXAMPLES / f"{prompt}.jpg",
                                                                EXAMPLES / f"{prompt}_target.png")])
        image = np.asarray(Image.open(EXAMPLES / f"{query}.jpg").convert("RGB"))
        ours = np.asarray(result.overlay(image))
        size = image.shape[:2]
        output = F.interpolate(torch.from_numpy(result.output).permute(2, 0, 1)[None], size=size, mode="nearest")
        same_forward = official_overlay(image, output[0].permute(1, 2, 0).numpy())
        official = official_overlay(image, official_output(model, prompt, query))
        before = before_overlay(image, np.asarray(result.mask))
        print(f"  {prompt} -> {query} ({image.shape[1]}x{image.shape[0]}): same forward "
              f"{(ours != same_forward).sum()}, official canvases {(ours != official).sum()} of {ours.size}; "
              f"before {100 * (before != official).any(-1).mean():.1f}% of pixels")

    print(f"threshold: pixels where two rules disagree (official: mean > {VIDEO_THRESHOLD}; prompt: the target "
          "binarised at 127, as our video path paints it)")
    for prompt, query in PAIRS[2:]:
        target = np.asarray(Image.open(EXAMPLES / f"{prompt}_target.png").convert("L")) > 127
        official = official_output(model, prompt, query, Image.fromarray(target)).mean(-1)
        ours = predict_labels(model, [tensor(Image.open(EXAMPLES / f"{prompt}.jpg"))],
                              [torch.from_numpy(target).long()], tensor(Image.open(EXAMPLES / f"{query}.jpg")), 1,
                              binary_threshold=VIDEO_THRESHOLD)
        print(f"  {prompt} -> {query}: nearest colour vs official {((official > 127.5) != (official > 128)).sum()}, "
              f"our video path vs official {(ours.numpy() != (official > VIDEO_THRESHOLD)).sum()} of {official.size}")

    print(f"resizing to {HALF}x{HALF} against PIL (levels of 255; values / pixels)")
    for name in ("hmbb_1", "hmbb_2", "hmbb_3", "video_1", "video_2", "video_3"):
        image = Image.open(EXAMPLES / f"{name}.jpg").convert("RGB")
        pil = torch.from_numpy(np.asarray(image.resize((HALF, HALF))).copy()).permute(2, 0, 1).float()
        grey = torch.from_numpy(np.asarray(Image.open(EXAMPLES / f"{name}_target.png").convert("L")).copy()).long()
        pil_labels = torch.from_numpy(np.asarray(Image.fromarray(grey.byte().numpy()).resize(
            (HALF, HALF), Image.Resampling.NEAREST)).copy()).long()
        row = []
        for label, resized, labels in (("before", before_resize_image, before_resize_labels),
                                       ("now", resize_image, resize_labels)):
            diff = (resized(tensor(image), (HALF, HALF)) * 255 - pil).abs()
            differ = (labels(grey, (HALF, HALF)) != pil_labels).float().mean()
            row.append(f"{label} max {diff.max():5.2f}, > 1 level {100 * (diff > 1 + 1e-3).float().mean():.2f}%, "
                       f"labels {100 * differ:.2f}%")
        print(f"  {name} ({image.width}x{image.height}): " + "; ".join(row))


if __name__ == "__main__":
    main()

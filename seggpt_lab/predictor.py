"""`Predictor`: images and prompts (paths, PIL images, arrays or tensors) in, a `Segmentation` at the query's
size out, with the official demo's pre- and post-processing; video propagation of several objects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from PIL import Image

from seggpt_lab.canvas import resize_output
from seggpt_lab.checkpoint import load_pretrained
from seggpt_lab.images import ImageLike, MaskKind, load_rgb, prompt_masks, read_frames, to_tensor
from seggpt_lab.model import SegGPT
from seggpt_lab.palette import VIDEO_THRESHOLD, decode, distinct_colors
from seggpt_lab.pictures import overlay
from seggpt_lab.prediction import Ensemble, colour_output, predict_labels, predict_query_half, prompt_halves, propagate
from seggpt_lab.prompts import Prompt, load_prompt


class PromptTensors(NamedTuple):
    """Prompts ready for the model: images and painted masks (K, 3, h, w) in [0, 1], the decoding palette."""

    images: torch.Tensor
    masks: torch.Tensor
    palette: np.ndarray


@dataclass
class Segmentation:
    """One query's prediction at the query's size: `labels` (H, W) int64, 0 background, k the prompt's label k
    (binary: 1; index: the index; colour: `palette[k]`; a prompt file: its class ids); `mask`, the colour output
    rounded to 8 bits (the official demo's output; video: the labels' colours); `palette` (K + 1, 3) uint8; `output`,
    the unrounded query half (h, w, 3) float64 in [0, 255] that `overlay` blends (None for video frames)."""

    labels: np.ndarray
    mask: Image.Image
    palette: np.ndarray
    output: np.ndarray | None = None

    def label_image(self) -> Image.Image:
        """The labels as a palette PNG ("P"): values with their colours (labels above 255 need another format)."""
        if self.labels.max(initial=0) > 255:
            raise ValueError("labels above 255 do not fit a palette PNG; save `labels` as a 16-bit PNG instead")
        image = Image.fromarray(self.labels.astype(np.uint8), mode="P")
        colours = np.zeros((256, 3), np.uint8)
        rows = min(len(self.palette), 256)
        colours[:rows] = self.palette[:rows]
        if int(self.labels.max(initial=0)) >= rows:  # class ids beyond the palette rows: distinct colours
            colours[rows:] = distinct_colors(256 - rows).numpy()
        image.putpalette(colours.flatten().tolist())
        return image

    def overlay(self, image: ImageLike) -> Image.Image:
        """The official demo's overlay of the unrounded colour output on the query (video frames: of `mask`)."""
        return overlay(load_rgb(image), self.output if self.output is not None else self.mask)


class Predictor:
    """Segment queries like the prompts are segmented (usage: README, "Using a model"), with the official demo's
    pre- and post-processing (seggpt_engine.py), then labels by the nearest palette colour.

    Args:
        model: a SegGPT (put in eval mode here).
        device: where to run it.
    """

    def __init__(self, model: SegGPT, device: str | torch.device = "cpu") -> None:
        self.model = model.eval().to(device)
        self.half = (model.img_size[0] // 2, model.img_size[1])  # (h, w) of one image in the canvas

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", **overrides) -> Predictor:
        """Any checkpoint `load_pretrained` reads: official, Hugging Face folder, Painter, ours, Lightning."""
        return cls(load_pretrained(path, **overrides), device)

    def query_tensor(self, image: ImageLike) -> torch.Tensor:
        """An image as the model sees it: (3, h, w) in [0, 1] at the half-canvas size, resized bicubic by PIL."""
        return to_tensor(load_rgb(image), self.half, Image.Resampling.BICUBIC)

    def _finish(self, query_half: torch.Tensor, size: tuple[int, int], palette: np.ndarray,
                lookup: np.ndarray | None) -> Segmentation:
        """`predict_query_half`'s output (3, h, w) -> Segmentation at `size` = (H, W)."""
        output = colour_output(query_half)
        rgb = resize_output(output, size)  # the official order: clip, then resize
        rows = decode(torch.from_numpy(rgb).permute(2, 0, 1) / 255, torch.from_numpy(palette)).numpy()
        labels = lookup[rows] if lookup is not None else rows
        mask = Image.fromarray(rgb.round().astype(np.uint8))
        return Segmentation(labels=labels.astype(np.int64), mask=mask, palette=palette, output=output)

    def segment(self, query: ImageLike | list[ImageLike],
                prompts: list[tuple[ImageLike, ImageLike]] | PromptTensors | None = None,
                *, prompt_file: str | Path | Prompt | None = None, ensemble: Ensemble = "feature",
                seg_type: Literal["semantic", "instance"] = "instance", mask_kind: MaskKind = "auto"
                ) -> Segmentation | list[Segmentation]:
        """One query (or a list: a list of results) segmented by example. prompts: (image, mask) pairs (see
        `prompt_masks`) combined by `ensemble`, or `prepare(prompts)`'s result; prompt_file: a tuned prompt file or
        `Prompt` instead, whose class ids are the labels; seg_type: the task token (the official demo: "instance")."""
        if isinstance(query, list):
            prompts = self.prepare(prompts, mask_kind) if prompts is not None else None
            return [self.segment(q, prompts, prompt_file=prompt_file, ensemble=ensemble, seg_type=seg_type,
                                 mask_kind=mask_kind) for q in query]
        if (prompts is None) == (prompt_file is None):
            raise ValueError("give either prompts=[(image, mask), ...] or prompt_file=...")
        image = load_rgb(query)
        size = (image.height, image.width)
        if prompt_file is not None:
            prompt = load_prompt(prompt_file) if isinstance(prompt_file, str | Path) else prompt_file
            out = predict_query_half(self.model, *prompt_halves(self.model, prompt), self.query_tensor(image),
                                     seg_type)
            return self._finish(out, size, prompt["palette"].numpy(), np.array([0, *prompt["class_ids"]]))
        prepared = self.prepare(prompts, mask_kind)
        out = predict_query_half(self.model, prepared.images, prepared.masks, self.query_tensor(image), seg_type,
                                 ensemble)
        return self._finish(out, size, prepared.palette, None)

    def prepare(self, prompts: list[tuple[ImageLike, ImageLike]] | PromptTensors, mask_kind: MaskKind = "auto"
                ) -> PromptTensors:
        """Prompts (image, mask) pairs -> the model's prompt inputs at the half-canvas size (read once, reused for
        every query of a `segment` call; `seggpt-lab predict` prepares them once per run)."""
        if isinstance(prompts, PromptTensors):
            return prompts
        if not prompts or any(not isinstance(p, tuple | list) or len(p) != 2 for p in prompts):
            raise ValueError("prompts must be a non-empty list of (image, mask) pairs")
        labels, palette, painted = prompt_masks([m for _, m in prompts], mask_kind)
        images = [load_rgb(p) for p, _ in prompts]
        for i, (im, lab) in enumerate(zip(images, labels, strict=True)):
            if lab.shape != (im.height, im.width):
                raise ValueError(f"prompt {i}: the mask is {lab.shape[1]}x{lab.shape[0]} pixels, the image "
                                 f"{im.width}x{im.height}; give each prompt image its own mask")
        if not any(lab.any() for lab in labels):
            raise ValueError("the prompt masks mark nothing (every pixel is background): nothing to segment")
        masks = [to_tensor(Image.fromarray(m), self.half, Image.Resampling.NEAREST) for m in painted]
        return PromptTensors(torch.stack([self.query_tensor(im) for im in images]), torch.stack(masks), palette)

    def segment_video(self, frames: str | Path | list[ImageLike], first_mask: ImageLike, num_frames: int = 0,
                      seg_type: Literal["semantic", "instance"] = "instance", max_frames: int | None = None
                      ) -> list[Segmentation]:
        """The first frame's objects (`first_mask`, the first result) propagated through `frames` (a folder sorted
        by name, a list, a GIF or, with PyAV, a video file) as the official video mode does, for several objects:
        each frame is prompted by the first and the previous `num_frames` predictions, feature-ensembled; one
        object is decoded by `palette.binarize` (also when fed back), several by the nearest palette colour."""

        images = read_frames(frames, max_frames)
        (first,), palette, _ = prompt_masks([first_mask])
        if first.shape != (images[0].shape[1], images[0].shape[2]):
            raise ValueError(f"the first-frame mask is {first.shape[1]}x{first.shape[0]} pixels, the frames "
                             f"{images[0].shape[2]}x{images[0].shape[1]}")
        num_labels = len(palette) - 1

        def predict(prompts, t, _):
            return predict_labels(self.model, [p[0] for p in prompts], [p[1] for p in prompts], images[t], num_labels,
                                  seg_type, binary_threshold=VIDEO_THRESHOLD)

        preds = propagate(images, torch.from_numpy(first), predict, num_frames)
        results = []
        for labels in preds:
            colours = palette[np.clip(labels.numpy(), 0, num_labels)]
            results.append(Segmentation(labels=labels.numpy().astype(np.int64), mask=Image.fromarray(colours),
                                        palette=palette))
        return results

    def predict(self, query: Image.Image, prompt_images: list[Image.Image], prompt_masks: list[Image.Image],
                seg_type: Literal["semantic", "instance"] = "instance", ensemble: Ensemble = "feature") -> Image.Image:
        """The official demo's output: the predicted colour image at the query's size, masks used as given."""
        output = self.predict_output(query, prompt_images, prompt_masks, seg_type, ensemble)
        return Image.fromarray(output.round().astype(np.uint8))

    def predict_output(self, query: Image.Image, prompt_images: list[Image.Image], prompt_masks: list[Image.Image],
                       seg_type: Literal["semantic", "instance"] = "instance", ensemble: Ensemble = "feature"
                       ) -> np.ndarray:
        """`predict` unrounded: (H, W, 3) float64 in [0, 255] at the query's size, what `overlay` blends."""
        if not prompt_images or len(prompt_images) != len(prompt_masks):
            raise ValueError(f"need one mask per prompt image, got {len(prompt_images)} images "
                             f"and {len(prompt_masks)} masks")
        prompts = torch.stack([to_tensor(p, self.half, Image.Resampling.BICUBIC) for p in prompt_images])
        masks = torch.stack([to_tensor(m, self.half, Image.Resampling.NEAREST) for m in prompt_masks])
        query_tensor = to_tensor(query, self.half, Image.Resampling.BICUBIC)
        out = predict_query_half(self.model, prompts, masks, query_tensor, seg_type, ensemble)
        return resize_output(colour_output(out), (query.height, query.width))

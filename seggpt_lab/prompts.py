"""Prompt files: one fixed in-context example for a whole dataset, with the palette that names its classes.

`Prompt` is the prompt half of both canvases at the half-canvas size and a palette whose row k is class
`class_ids[k - 1]`. In-context tuning (SegGPT, Wang et al. 2023, §3.3; `modules.prompt_tuning`) learns it;
`prompt_from_examples` tiles labelled examples. An instance prompt paints each example instance its own row
(`class_ids` 1..K), and with seg_type "instance" the query's instances (panoptic evaluation's things).
"""


from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import torch

from seggpt_lab.canvas import resize_image, resize_labels, spatial_ensemble
from seggpt_lab.checkpoint import load_weights_only, save_atomic
from seggpt_lab.palette import build_palette, paint


class Prompt(TypedDict):
    image: torch.Tensor  # (3, h, w) float in [0, 1]
    target: torch.Tensor  # (3, h, w) float in [0, 1]
    palette: torch.Tensor  # (K + 1, 3) uint8
    class_ids: list[int]  # class id of palette row k, k = 1..K
    class_names: list[str]  # name of class_ids[k - 1]


def prompt_from_examples(images: list[torch.Tensor], labels: list[torch.Tensor], class_ids: list[int],
                         size: tuple[int, int], class_names: list[str] | None = None) -> Prompt:
    """Examples (3, H_i, W_i) uint8 with class-id labels (H_i, W_i) -> one prompt of (h, w) = `size`: each class
    painted with `build_palette(len(class_ids))`, other labels black, several examples tiled in a grid."""
    palette = build_palette(len(class_ids))
    lookup = {c: k + 1 for k, c in enumerate(class_ids)}
    masks = []
    for label in labels:
        rows = torch.zeros_like(label)
        for class_id, row in lookup.items():
            rows[label == class_id] = row
        masks.append(paint(resize_labels(rows, size), palette))
    image = spatial_ensemble(torch.stack([resize_image(im, size) for im in images]))
    target = spatial_ensemble(torch.stack(masks), mode="nearest")
    names = list(class_names) if class_names is not None else [str(c) for c in class_ids]
    return Prompt(image=image, target=target, palette=palette, class_ids=list(class_ids), class_names=names)


def instance_prompt_from_examples(images: list[torch.Tensor], instances: list[torch.Tensor], size: tuple[int, int]
                                  ) -> Prompt:
    """Examples (3, H_i, W_i) uint8 with instance id maps (H_i, W_i) (0 = no instance; crowd regions already 0)
    -> an instance prompt of (h, w) = `size`: every instance of every example its own colour of
    `build_palette(K)`, numbered 1..K by example, then by id, and named "instance k"."""
    labels, count = [], 0
    for ids in instances:
        present = torch.unique(ids[ids > 0])
        labels.append(torch.where(ids > 0, torch.searchsorted(present, ids) + 1 + count, 0))
        count += len(present)
    if not count:
        raise ValueError("the examples hold no instance to paint")
    numbers = list(range(1, count + 1))
    return prompt_from_examples(images, labels, numbers, size, [f"instance {k}" for k in numbers])


def save_prompt(prompt: Prompt, path: str | Path) -> None:
    save_atomic({k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in prompt.items()}, path)


def load_prompt(path: str | Path) -> Prompt:
    """Read a prompt file; a one-line error names the file when it is missing or malformed."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such prompt file (tune one, or build one with prompt_from_examples; "
                                "an instance prompt with datamodules.panoptic.instance_prompt)")
    data = load_weights_only(path, "prompt file")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a prompt file, a {type(data).__name__} instead of a dict")
    data.setdefault("class_names", [str(c) for c in data.get("class_ids", [])])  # files written before names
    missing = [k for k in Prompt.__annotations__ if k not in data]
    if missing:
        raise ValueError(f"{path}: not a prompt file, missing {missing}")
    if data["image"].shape != data["target"].shape or len(data["palette"]) != len(data["class_ids"]) + 1:
        raise ValueError(f"{path}: image {tuple(data['image'].shape)} and target {tuple(data['target'].shape)} "
                         f"must match, and the palette needs one row per class plus black")
    return Prompt(**{k: data[k] for k in Prompt.__annotations__})

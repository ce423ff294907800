"""Reference predictors, scored beside the model on the same items so that a number says how much of it comes from
reading the prompt: "oracle" (the ground truth: every score 100), "empty", "full", "copy_prompt" (the first prompt's
mask, for prompts of the query's size), "colour" (`colour_match`: the prompt's colours, no shape) and "all_objects"
(the category-blind oracle: every labelled object whatever the prompt, so its prompt-swap S is 0).
"""

from __future__ import annotations

from typing import Literal

import torch

from seggpt_lab.canvas import IGNORE_LABEL, clean

ReferenceName = Literal["oracle", "empty", "full", "copy_prompt", "colour", "all_objects"]
COLOUR_BINS = 8  # levels per channel of `colour_match`'s histogram: 512 colours


def colour_match(prompt_images: list[torch.Tensor], prompt_labels: list[torch.Tensor], query_image: torch.Tensor,
                 bins: int = COLOUR_BINS) -> torch.Tensor:
    """(H, W): each query pixel takes the label that its colour (quantised to `bins` levels per channel) carries
    most often in the prompts; background on a tie or for a colour no prompt shows."""
    def codes(image: torch.Tensor) -> torch.Tensor:  # (3, h, w) uint8 -> (h, w) histogram cell
        q = image.long() * bins // 256
        return (q[0] * bins + q[1]) * bins + q[2]

    num_labels = max(int(clean(label).max()) for label in prompt_labels) + 1
    counts = torch.zeros(bins ** 3, num_labels, dtype=torch.long, device=query_image.device)
    for image, label in zip(prompt_images, prompt_labels, strict=True):
        valid = label != IGNORE_LABEL
        cells, labels = codes(image)[valid], label[valid].long()
        counts.index_put_((cells, labels), torch.ones_like(cells), accumulate=True)
    return counts.argmax(1)[codes(query_image)]  # argmax takes the first of tied labels: background


def reference_labels(name: ReferenceName, prompt_images: list[torch.Tensor], prompt_labels: list[torch.Tensor],
                     query_image: torch.Tensor, truth: torch.Tensor, all_objects: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """Predictor `name`'s label map (H, W) for one query, whose ground truth is `truth` and every-object map
    `all_objects` (H, W each; the latter for "all_objects" only). ValueError for an unusable name or input."""
    if name == "oracle":
        return clean(truth)
    if name == "empty":
        return torch.zeros_like(truth)
    if name == "full":
        return torch.ones_like(truth)
    if name == "colour":
        return colour_match(prompt_images, prompt_labels, query_image).to(truth.device)
    if name == "copy_prompt":
        if prompt_labels[0].shape != truth.shape:
            raise ValueError(f"copy_prompt needs a prompt of the query's size {tuple(truth.shape)}, got "
                             f"{tuple(prompt_labels[0].shape)} (use it on sets whose images share one size)")
        return clean(prompt_labels[0]).to(truth.device)
    if name == "all_objects":
        if all_objects is None:
            raise ValueError("all_objects needs the query's every-object map, which these items do not carry")
        return clean(all_objects)
    raise ValueError(f"unknown reference predictor {name!r}; choose from {ReferenceName.__args__}")

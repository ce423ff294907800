"""In-context tuning (SegGPT, Wang et al. 2023, §3.3): a frozen model, a learned prompt (README, "Using a model").

The only parameters are the prompt halves of both canvases, image and target (3, h, w) in [0, 1]; the query half
holds a training crop and its labels painted with a fixed palette, and the loss is the pretraining loss on it.
Choices the paper leaves open: the prompt is clamped to [0, 1] after every step (projected gradient), so the file
is exactly what was scored; Adam without weight decay (the prompt is an input, not a weight); validation scores
the prompt on held-out images as `SemanticEvaluation` does, and the example prompt once before the first step,
so `results.json` holds both; the best prompt by `val/mIoU` is written, chosen on training images held out of
tuning (`selected_on` in `results.json`), never on the split its number is reported on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from seggpt_lab.canvas import IGNORE_LABEL, SemanticImage, make_canvas, normalize
from seggpt_lab.checkpoint import load_pretrained
from seggpt_lab.metrics import SemanticIoU
from seggpt_lab.model import SegGPT, masked_smooth_l1
from seggpt_lab.modules.contracts import PromptTuningData, require
from seggpt_lab.palette import build_palette, paint
from seggpt_lab.pictures import picture, prompt_tile
from seggpt_lab.prediction import SEG_TYPES, predict_with_prompt
from seggpt_lab.prompts import Prompt, load_prompt, prompt_from_examples, save_prompt


def class_balanced(weight: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Per-pixel weights (any shape, 0 on void) rescaled so that every class present (palette row, background
    included) has the same total weight, the total unchanged: the loss then counts classes as mIoU does."""
    valid = weight > 0
    counts = torch.bincount(rows[valid], weights=weight[valid]).float()
    present = (counts > 0).sum().clamp_min(1)
    return weight / counts.clamp_min(1e-12)[rows.clamp(max=len(counts) - 1)] * weight.sum() / present * valid


class PromptTuningModule(LightningModule):
    """Learns a prompt image and target for a frozen SegGPT; see the module docstring.

    Args:
        model: the SegGPT to prompt (frozen here); give it or `checkpoint`.
        checkpoint: instead of `model`, any file `load_pretrained` reads.
        init: "examples" (the data module's one-shot example, the prompt tuning is compared with), "noise"
            (uniform), or the path of a prompt file to continue from.
        lr: Adam's step size on the prompt pixels (values in [0, 1]).
        seg_type: the task token ("semantic" for class sets).
        loss_beta: smooth-l1 threshold in normalised units (official pretraining: 0.01).
        class_balance: weight the pixels of each class present in a batch alike, so the loss ranks prompts as
            mIoU does (BENCHMARKS.md, section 7); off: every valid pixel weighs the same, as in pretraining.

        background: decode with black as a class (LoveDA, VOC); False: every pixel takes its nearest class
            colour (ADE20K, whose 0 is void).
        output: the prompt file written (the best by val/mIoU; the last without validation).
        num_pictures: validation images drawn at every validation (tuned prompt | image | prediction | truth).
    """

    def __init__(self, model: SegGPT | None = None, checkpoint: str | None = None,
                 init: str = "examples", lr: float = 0.002, seg_type: Literal["semantic", "instance"] = "semantic",
                 loss_beta: float = 0.01, class_balance: bool = True, background: bool = True,
                 output: str = "outputs/prompt_tuning/prompt.pt",
                 num_pictures: int = 4) -> None:
        super().__init__()
        if (model is None) == (checkpoint is None):
            raise ValueError("model: give exactly one of `model` and `checkpoint`")
        if seg_type not in SEG_TYPES:
            raise ValueError(f"model.seg_type must be one of {list(SEG_TYPES)}, got {seg_type!r}")
        if init not in ("examples", "noise") and not Path(init).is_file():
            raise ValueError(f"model.init: {init!r} is neither 'examples', 'noise' nor an existing prompt file")
        # not the model: built in Python it is an nn.Module, which would be pickled into every checkpoint and make
        # it unreadable weights-only (resume refuses it); its weights are in the state dict, its config in the CLI's
        self.save_hyperparameters(ignore=["model"])
        self.model = load_pretrained(checkpoint) if model is None else model
        self.model.requires_grad_(False)
        half = (self.model.img_size[0] // 2, self.model.img_size[1])
        self.image = nn.Parameter(torch.zeros(3, *half))  # filled in setup(), once the classes are known
        self.target = nn.Parameter(torch.zeros(3, *half))
        # derived from the data's classes in setup(), so not part of checkpoints
        self.register_buffer("palette", torch.zeros(1, 3, dtype=torch.uint8), persistent=False)
        self.register_buffer("lookup", torch.zeros(1, dtype=torch.long), persistent=False)  # class id -> palette row
        self.class_ids: list[int] = []
        self.class_names: list[str] = []
        self.example_miou: float | None = None
        self.best_miou = -1.0
        self.metric: SemanticIoU | None = None

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # the frozen model runs in eval mode (no dropout, no drop-path): Lightning puts the whole module in train
        # mode at every epoch and restores per-module modes after validation, so the mode is set per batch
        self.model.eval()

    # --- the prompt ---

    def setup(self, stage: str) -> None:
        data = require(self, PromptTuningData)
        if not data.class_ids:
            data.setup(stage)
        self.class_ids, self.class_names = list(data.class_ids), list(data.class_names)
        self.palette = build_palette(len(self.class_ids)).to(self.device)
        lookup = torch.zeros(max(max(self.class_ids), IGNORE_LABEL) + 1, dtype=torch.long)
        lookup[self.class_ids] = torch.arange(1, len(self.class_ids) + 1)
        self.lookup = lookup.to(self.device)
        if stage != "fit" or self.global_step > 0:
            return
        half = tuple(self.image.shape[-2:])
        init = self.hparams.init
        if init == "noise":
            generator = torch.Generator().manual_seed(0)
            image, target = torch.rand(3, *half, generator=generator), torch.rand(3, *half, generator=generator)
        else:
            prompt = self.example_prompt() if init == "examples" else load_prompt(init)
            if prompt["class_ids"] != self.class_ids:
                raise ValueError(f"model.init: {init} paints classes {prompt['class_ids']}, not the data's "
                                 f"{self.class_ids}")
            image, target = (torch.nn.functional.interpolate(prompt[k][None].float(), size=half, mode=mode)[0]
                             for k, mode in (("image", "bilinear"), ("target", "nearest")))
        with torch.no_grad():
            self.image.copy_(image)
            self.target.copy_(target)

    def example_prompt(self) -> Prompt:
        """The data module's one-shot example, painted in this module's palette."""
        image, label = self.trainer.datamodule.example()
        return prompt_from_examples([image], [torch.where(label == IGNORE_LABEL, 0, label)], self.class_ids,
                                    tuple(self.image.shape[-2:]), self.class_names)

    def prompt(self) -> Prompt:
        """The current prompt, detached, in the form prompt files hold."""
        return Prompt(image=self.image.detach().clone(), target=self.target.detach().clone(),
                      palette=self.palette.cpu(), class_ids=list(self.class_ids), class_names=list(self.class_names))

    # --- training ---

    def configure_optimizers(self):
        return torch.optim.Adam([self.image, self.target], lr=self.hparams.lr)

    @classmethod
    def logged_metrics(cls, init_args: dict, config: dict) -> list[str]:
        """The figures a run logs (`seggpt_lab.cli.logged_metrics`)."""
        return ["train/loss", "val/mIoU"]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        image, label = batch["image"], batch["label"]
        n = image.shape[0]
        rows = self.lookup[label.clamp(0, len(self.lookup) - 1)]
        query_target = paint(rows, self.palette)  # (B, 3, h, w); classes outside the set are black
        image_canvas = normalize(make_canvas(self.image.expand(n, -1, -1, -1), image.float() / 255))
        target_canvas = normalize(make_canvas(self.target.expand(n, -1, -1, -1), query_target))
        weight = (label != IGNORE_LABEL).float()
        if self.hparams.class_balance:
            weight = class_balanced(weight, rows)
        valid = make_canvas(torch.zeros_like(weight[:, None]), weight[:, None])
        mask = self.model.query_mask(n, self.device)
        seg = torch.full((n,), SEG_TYPES[self.hparams.seg_type], device=self.device)
        pred = self.model(image_canvas, target_canvas, mask, seg)
        loss = masked_smooth_l1(pred, target_canvas, mask, self.model.patch_size, valid, self.hparams.loss_beta)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        with torch.no_grad():  # projected gradient: the prompt stays an image and a painted mask
            self.image.clamp_(0, 1)
            self.target.clamp_(0, 1)

    # --- validation: the tuned prompt on held-out images, the example prompt once for comparison ---

    def _score(self, metric: SemanticIoU, item: SemanticImage, prompt: Prompt) -> torch.Tensor:
        """Segment one image with `prompt` and count it; labels of classes beyond the set's largest id are void."""
        truth = item["label"].to(self.device)
        truth = torch.where(truth >= metric.num_classes, IGNORE_LABEL, truth)
        pred = predict_with_prompt(self.model, prompt, item["image"], self.hparams.seg_type,
                                   self.hparams.background).to(self.device)
        metric.update(pred[None], truth[None])
        return pred

    def _new_metric(self) -> SemanticIoU:
        return SemanticIoU(num_classes=max(self.class_ids) + 1, ignore_index=IGNORE_LABEL).to(self.device)

    def on_fit_start(self) -> None:
        data = self.trainer.datamodule
        if data.val_set is None or self.global_step > 0:
            return
        metric = self._new_metric()
        example = self.example_prompt()
        for i in range(len(data.val_set)):
            self._score(metric, data.val_set[i], example)
        self.example_miou = float(metric.compute()["mIoU"])
        for logger in self.loggers:
            logger.log_metrics({"val/example_mIoU": self.example_miou}, step=0)

    def on_validation_epoch_start(self) -> None:
        self.metric = self._new_metric()

    def validation_step(self, item: SemanticImage, index: int) -> None:
        pred = self._score(self.metric, item, self.prompt())
        if index < self.hparams.num_pictures and not self.trainer.sanity_checking:
            self._picture(item, pred, index)

    def on_validation_epoch_end(self) -> None:
        miou = float(self.metric.compute()["mIoU"])
        self.log("val/mIoU", miou, prog_bar=True, batch_size=1)
        if not self.trainer.sanity_checking and miou > self.best_miou:
            self.best_miou = miou
            self._write(best_step=self.global_step)

    def on_fit_end(self) -> None:
        if self.trainer.datamodule.val_set is None:
            self._write(best_step=self.global_step)

    @rank_zero_only
    def _write(self, best_step: int) -> None:
        """The prompt file, and `results.json` beside it: the example and tuned scores."""
        out = Path(self.hparams.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_prompt(self.prompt(), out)
        tuned = self.best_miou if self.best_miou >= 0 else None
        data, selected_on = self.trainer.datamodule, None
        if data.val_set is not None:  # the images the best prompt was chosen on (none: the last prompt is kept)
            images = {key for key, _, _ in data.val_set.items}
            selected_on = {"index": str(data.hparams.val_index), "images": len(images),
                           "held_out_of_training": not images & set(data.train_set.keys)}
        results = {"example_prompt_miou": self.example_miou, "tuned_prompt_miou": tuned, "step": best_step,
                   "selected_on": selected_on, "prompt": str(out),
                   "classes": dict(zip(self.class_ids, self.class_names, strict=True))}
        (out.parent / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    @rank_zero_only
    def _picture(self, item: SemanticImage, pred: torch.Tensor, index: int) -> None:
        example, example_labels = prompt_tile(self.prompt())
        image, truth = item["image"], item["label"]
        strip = picture([example, image, image], [example_labels, pred.cpu(), truth], max(self.class_ids))
        folder = Path(self.hparams.output).parent / "pictures"
        folder.mkdir(parents=True, exist_ok=True)
        strip.save(folder / f"step-{self.global_step:06d}-{index:03d}.png")
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key=f"val/prompt_{index}", images=[strip], step=self.global_step,
                                 caption=["tuned prompt | image | prediction | truth"])

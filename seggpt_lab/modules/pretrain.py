"""In-context colouring pretraining (SegGPT, Wang et al. 2023, §3-4): `seggpt-lab fit --config RECIPE`.

The module owns the optimisation: AdamW without weight decay on norms, biases and (`no_decay`) tokens and position
tables, optional layer-wise lr decay, linear warm-up then cosine per optimiser step. Clipping, bf16, accumulation
(for the paper's batch of 2048), DDP/FSDP and checkpoints are Trainer settings in the recipe. It logs the loss, the
lr, pairs/s and the workers' running counts, a prediction grid every `picture_every_n_steps`, and validates by one-shot
mIoU and, with the data module's `val_swap_queries`, the prompt-swap scores (`val/S`, `val/A`...) to select
checkpoints by.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image

from seggpt_lab.canvas import Episode, InContextBatch, SwapQuery, clean, denormalize, model_inputs
from seggpt_lab.checkpoint import initialize_from
from seggpt_lab.metrics import FewShotIoU, PromptSwap
from seggpt_lab.model import SegGPT, masked_smooth_l1, patch_mask_to_pixels
from seggpt_lab.modules.evaluate import predict_swap, update_swap
from seggpt_lab.pictures import grid
from seggpt_lab.prediction import SEG_TYPES, predict_labels

# Parameters that get no weight decay whatever their shape, besides every 1-D one (norms and biases), by rule:
# - "painter": Painter's trainer exempts 1-D parameters and the names its model's `no_weight_decay` lists,
#   {pos_embed, cls_token} (Painter models_painter.py:352-353, util/lr_decay.py:32); its mask and segment tokens
#   and relative-position tables are decayed. SegGPT's trainer is not released; the type tokens, which Painter
#   lacks, are decayed like its other tokens.
# - "ours": also every learned token and the relative-position tables, our choice (no source gives one): they are
#   embeddings, not weights to shrink towards 0.
NO_DECAY = {
    "painter": ("pos_embed", "cls_token"),
    "ours": ("pos_embed", "mask_token", "segment_token_x", "segment_token_y", "type_token_cls", "type_token_ins",
             "rel_pos_h", "rel_pos_w"),
}
TOKENS = ("mask_token", "segment_token_x", "segment_token_y", "type_token_cls", "type_token_ins")
NoDecay = Literal["ours", "painter"]


def layer_id(name: str, depth: int, rule: NoDecay = "ours") -> int:
    """BEiT/MAE layer-decay numbering: the patch and position embeddings 0, block i -> i + 1, the rest (norm,
    decoder) depth + 1. The learned tokens are 0 under "ours" (our choice: they are embeddings) and depth + 1
    under "painter", whose numbering knows only cls_token and pos_embed (Painter util/lr_decay.py:64-76)."""
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    if name.startswith(("patch_embed", "pos_embed", "cls_token")) or (rule == "ours" and name in TOKENS):
        return 0
    return depth + 1


def param_groups(model: SegGPT, weight_decay: float, layer_decay: float | None = None, no_decay: NoDecay = "ours"
                 ) -> list[dict]:
    """AdamW parameter groups: (decay or not) x (layer), each with its `lr_scale` (1 without layer decay).
    `no_decay` names the rule for what is not decayed besides 1-D parameters (see `NO_DECAY`)."""
    if no_decay not in NO_DECAY:
        raise ValueError(f"no_decay must be one of {list(NO_DECAY)}, got {no_decay!r}")
    depth = len(model.blocks)
    groups: dict[tuple[bool, int], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # "ours" matches the last name component (blocks.i.attn.rel_pos_h); Painter's rule whole names
        exempt = name.split(".")[-1] in NO_DECAY["ours"] if no_decay == "ours" else name in NO_DECAY["painter"]
        decay = p.ndim > 1 and not exempt
        layer = layer_id(name, depth, no_decay) if layer_decay is not None else 0
        scale = layer_decay ** (depth + 1 - layer) if layer_decay is not None else 1.0
        group = groups.setdefault((decay, layer), {"params": [], "weight_decay": weight_decay if decay else 0.0,
                                                   "lr_scale": scale, "names": []})
        group["params"].append(p)
        group["names"].append(name)
    return list(groups.values())


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Learning-rate factor: linear from 1/warmup to 1 over `warmup` steps, then cosine to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


VAL_SWAP_FIGURES = ("S", "S_low", "A", "recall", "absent_painted")  # the PromptSwap.FIGURES validation logs


class PretrainModule(LightningModule):
    """Trains a SegGPT on `InContextBatch`es; see the module docstring.

    Args:
        model: the SegGPT to train (a preset from recipes/models/ or explicit sizes).
        init_checkpoint: initialise from weights (SegGPT official / Hugging Face / Painter / ours, or a
            timm / MAE ViT): matching names and shapes load, the rest is reported and left as initialised.
        lr: peak learning rate (per the total batch; scale it yourself when changing the batch).
        weight_decay: AdamW decay on matrices (paper: 0.05).
        betas: AdamW betas (Painter: 0.9, 0.999).
        layer_decay: layer-wise lr decay factor (None: off); block i gets lr * decay^(depth - i).
        no_decay: what escapes weight decay besides 1-D parameters: "ours" (every learned token and the
            relative-position tables) or "painter" (only pos_embed, Painter models_painter.py `no_weight_decay`);
            with `layer_decay`, also the tokens' layer (`layer_id`).
        warmup_steps: linear warm-up, in optimiser steps (paper: 1.8K of 9K).
        total_steps: the schedule's length; None: the trainer's `estimated_stepping_batches` (max_steps).
        min_lr_ratio: the cosine's floor as a fraction of `lr`.
        foreground_weight: loss weight of pixels painted in a colour relative to black ones (1: the paper's plain
            loss); above 1 it counteracts the collapse to all-black predictions on small budgets.
        loss_beta: the smooth-l1 threshold in normalised units (official: 0.01, nearly l1). A larger one
            (1: nearly l2) rewards hedged colours early on, which nearest-colour decoding reads correctly.
        val_seg_type: task token for validation episodes.
        picture_every_n_steps: prediction grid interval (0: never).
        num_pictures: pairs per grid.
        output_dir: where the pictures go; None: the trainer's log_dir or default_root_dir.
        compile: torch.compile the model's blocks before training (`SegGPT.compile_blocks`): faster on GPUs after
            minutes of compiling per batch shape (BENCHMARKS.md §5).
    """

    def __init__(
        self,
        model: SegGPT,
        init_checkpoint: str | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        layer_decay: float | None = None,
        no_decay: NoDecay = "ours",
        warmup_steps: int = 1800,
        total_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        foreground_weight: float = 1.0,
        loss_beta: float = 0.01,
        val_seg_type: str = "semantic",
        picture_every_n_steps: int = 500,
        num_pictures: int = 4,
        output_dir: str | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if no_decay not in NO_DECAY:
            raise ValueError(f"no_decay must be one of {list(NO_DECAY)}, got {no_decay!r}")
        if val_seg_type not in SEG_TYPES:
            raise ValueError(f"val_seg_type must be one of {list(SEG_TYPES)}, got {val_seg_type!r}")
        if lr <= 0 or warmup_steps < 0 or foreground_weight <= 0:
            raise ValueError(f"need lr > 0, warmup_steps >= 0, foreground_weight > 0; got {lr}, {warmup_steps}, "
                             f"{foreground_weight}")
        # not the model: built in Python it is an nn.Module, which would be pickled into every checkpoint and make
        # it unreadable weights-only (resume refuses it); its weights are in the state dict, its config in the CLI's
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        if init_checkpoint is not None:
            initialize_from(model, init_checkpoint)
        self.val_metric: FewShotIoU | None = None
        self.val_swap: PromptSwap | None = None
        self._worker_stats: dict[int, dict[str, float]] = {}
        self._last_batch_end: float | None = None
        self.picture_dir: Path | None = None  # set in setup

    def configure_model(self) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.model.compile_blocks()
            self._compiled = True

    # --- optimisation ---

    def configure_optimizers(self):
        hp = self.hparams
        groups = param_groups(self.model, hp.weight_decay, hp.layer_decay, hp.no_decay)
        for g in groups:
            del g["names"]
        fused = self.device.type == "cuda"  # one kernel for all parameters (torch AdamW fused=True)
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), fused=fused or None)
        total = hp.total_steps or int(self.trainer.estimated_stepping_batches)
        if not 0 < total < 10**12:
            raise ValueError("the learning-rate schedule needs a length: set trainer.max_steps or model.total_steps")
        scales = [g["lr_scale"] for g in groups]
        factors = [lambda step, s=s: s * warmup_cosine(step, hp.warmup_steps, total, hp.min_lr_ratio) for s in scales]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def loss_weights(self, batch: InContextBatch) -> torch.Tensor:
        """(B, 1, H, W) per-pixel weights: `valid`, times `foreground_weight` where the target is not black."""
        weight = batch["valid"].float()
        if self.hparams.foreground_weight != 1.0:
            painted = (batch["target_canvas"] > 0).any(1, keepdim=True)
            weight = weight * torch.where(painted, self.hparams.foreground_weight, 1.0)
        return weight

    def training_step(self, batch: InContextBatch, batch_idx: int) -> torch.Tensor:
        image, target = model_inputs(batch)
        pred = self.model(image, target, batch["bool_masked_pos"], batch["seg_type"])
        loss = masked_smooth_l1(pred, target, batch["bool_masked_pos"], self.model.patch_size,
                                self.loss_weights(batch), self.hparams.loss_beta)
        size = image.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        group = self.optimizers().param_groups[0]
        self.log("train/lr", group["lr"] / group["lr_scale"], batch_size=size)  # the schedule, before layer decay
        self._log_data(batch, size)
        every = self.hparams.picture_every_n_steps
        if every and self.global_step % every == 0 and self._is_first_micro_batch(batch_idx):
            self._picture(batch, pred.detach())
        return loss

    def _is_first_micro_batch(self, batch_idx: int) -> bool:
        return batch_idx % self.trainer.accumulate_grad_batches == 0

    def on_train_batch_end(self, outputs, batch: InContextBatch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last_batch_end is not None:
            rate = batch["image_canvas"].shape[0] * self.trainer.world_size / (now - self._last_batch_end)
            self.log("train/pairs_per_s", rate, prog_bar=True, batch_size=1, rank_zero_only=True)
        self._last_batch_end = now

    def _log_data(self, batch: InContextBatch, size: int) -> None:
        """The workers' running counts, summed over this rank's workers (each batch brings its worker's)."""
        stats = batch.get("stats")
        if not stats:
            return
        stats = dict(stats)
        self._worker_stats[int(stats.pop("worker"))] = stats
        total: dict[str, float] = {}
        for counts in self._worker_stats.values():
            for k, v in counts.items():
                total[k] = total.get(k, 0) + v
        semantic = total.get("pairs/self", 0) + total.get("pairs/partner", 0) + total.get("pairs/fallback", 0)
        logged = {"data/partner_rate": total.get("pairs/partner", 0) / max(semantic, 1),
                  "data/mixed_rate": total.get("data/mixed", 0) / max(total.get("data/examples", 0), 1)}
        logged.update({k: v for k, v in total.items() if k.startswith(("skipped/", "read/"))})
        self.log_dict({k: float(v) for k, v in logged.items()}, batch_size=size, rank_zero_only=True)

    # --- validation: one-shot episodes, and prompt-swap queries when the data module has them ---

    @classmethod
    def logged_metrics(cls, init_args: dict, config: dict) -> list[str]:
        """The figures a run logs (`seggpt_lab.cli.logged_metrics`): training's, the data's rates, and validation's
        (FewShotIoU's and, with prompt-swap queries, PromptSwap's). Per-source counts (read/<source>: samples read,
        skipped/<source>[/<reason>]: samples skipped) are not listed."""
        return ["train/loss", "train/lr", "train/pairs_per_s", "data/partner_rate", "data/mixed_rate",
                *(f"val/{k}" for k in ("mIoU", "FB-IoU", *VAL_SWAP_FIGURES))]

    def on_validation_epoch_start(self) -> None:
        data = self.trainer.datamodule
        class_ids = getattr(data, "class_ids", None) if data else None
        if not class_ids:
            raise ValueError("validation needs the data module's class_ids (PretrainDataModule(val=...))")
        if self.val_metric is None or self.val_metric.class_ids != sorted(class_ids):
            self.val_metric = FewShotIoU(class_ids=list(class_ids)).to(self.device)
        self.val_swap = PromptSwap(kinds=data.swap_kinds).to(self.device) if getattr(data, "val_swaps", None) else None

    def _predict(self, images: list[torch.Tensor], labels: list[torch.Tensor], query: torch.Tensor,
                 truth: torch.Tensor, class_id: int | None = None) -> torch.Tensor:
        return predict_labels(self.model, images, [clean(p) for p in labels], query, 1,
                              self.hparams.val_seg_type).to(truth.device)

    def validation_step(self, item: Episode | SwapQuery, index: int, dataloader_idx: int = 0) -> None:
        if "targets" in item:  # a prompt-swap query
            update_swap(self.val_swap, item, *predict_swap(self._predict, item))
            return
        truth = item["query_label"]
        pred = self._predict(item["prompt_images"], item["prompt_labels"], item["query_image"], truth)
        self.val_metric.update(pred[None], truth[None], torch.tensor([item["class_id"]], device=truth.device))

    def on_validation_epoch_end(self) -> None:
        scores = {f"val/{k}": float(v) for k, v in self.val_metric.compute().items()}
        if self.val_swap is not None:
            swap = self.val_swap.compute()
            scores.update({f"val/{k}": float(swap[k]) for k in VAL_SWAP_FIGURES})
            self.val_swap.reset()
        # logged outside any dataloader's scope: one key each, whichever loader the last step came from
        for key, value in scores.items():
            self.log(key, value, prog_bar=key in ("val/mIoU", "val/S"), sync_dist=False, add_dataloader_idx=False)
        self.val_metric.reset()

    # --- pictures ---

    def setup(self, stage: str) -> None:
        # resolved here, on every rank: `trainer.log_dir` is a collective under DDP, so the rank-zero-only
        # picture writer must not ask for it
        root = self.hparams.output_dir or self.trainer.log_dir or self.trainer.default_root_dir
        self.picture_dir = Path(root) / "pictures"

    @rank_zero_only
    def _picture(self, batch: InContextBatch, pred: torch.Tensor) -> None:
        """prompt | prompt target | query | query target seen | prediction | truth, masked target patches grey."""
        n = min(self.hparams.num_pictures, pred.shape[0])
        h = pred.shape[-2] // 2
        shown = patch_mask_to_pixels(batch["bool_masked_pos"][:n], self.model.grid_size, self.model.patch_size)
        target = batch["target_canvas"][:n].float() / 255
        visible = torch.where(shown.bool(), 0.5, target)  # what the model saw of the target canvas
        rows = []
        for i in range(n):
            image = batch["image_canvas"][i].float() / 255
            cells = [image[:, :h], visible[i][:, :h], image[:, h:], visible[i][:, h:],
                     denormalize(pred[i].float())[:, h:], target[i][:, h:]]
            rows.append(torch.cat(cells, dim=-1))  # (3, h, 6w)
        tiles = torch.cat(rows, dim=-2).clamp(0, 1)
        picture = Image.fromarray((tiles * 255).round().byte().permute(1, 2, 0).cpu().numpy())
        picture = grid([picture], height=max(picture.height, 96 * n))
        folder = self.picture_dir
        folder.mkdir(parents=True, exist_ok=True)
        picture.save(folder / f"step-{self.global_step:07d}.png")
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="train/predictions", images=[picture], step=self.global_step,
                                 caption=["prompt | prompt target | query | query target seen | prediction | truth"])

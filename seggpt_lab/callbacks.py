"""Callbacks: the one the CLI adds to every run, and the writer of `seggpt-lab predict`.

`SaveConfig` is LightningCLI's `SaveConfigCallback` (the resolved config as `config.yaml` in the trainer's
log_dir, overwritten by a later run in the same folder instead of aborting it) that also stores the config
with each W&B run: as the file `seggpt-lab-config.yaml` in the run's files and under the key `cli` of the
run's config, so runs can be filtered by any recipe value. With a WandbLogger, Lightning's log_dir is the
logger's save_dir, shared by every run started there (ecosystem.md §1.4); the W&B copy is the one per run.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

CONFIG_FILE = "seggpt-lab-config.yaml"


class SaveConfig(SaveConfigCallback):
    """`config.yaml` in the log_dir, plus a copy in every W&B run (rank 0 only, as Lightning calls it)."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if not loggers:
            return
        text = self.parser.dump(self.config, skip_none=False)
        for logger in loggers:
            run = logger.experiment
            Path(run.dir, CONFIG_FILE).write_text(text)  # files in run.dir are synced with the run
            run.config.update({"cli": yaml.safe_load(text)}, allow_val_change=True)


class PredictionWriter(BasePredictionWriter):
    """Writes what `seggpt-lab predict` returns, under `output_dir`.

    Per query image NAME: `NAME_mask.png`, the labels as a palette PNG (0 background; the prompt's labels,
    or a prompt file's class ids), and `NAME_overlay.png`, the official demo's overlay of the colour
    prediction on the query. Per video NAME: `NAME/00000.png`... per-frame palette PNGs (the first is the
    given mask) and `NAME_overlay.gif`, an animation of the overlays.

    Args:
        output_dir: where the files go (made if missing); None: the trainer's default_root_dir.
        fps: the animation's frame rate.
    """

    def __init__(self, output_dir: str | None = None, fps: float = 10.0) -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.fps = output_dir, fps

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.output_dir = Path(self.output_dir or trainer.default_root_dir)

    def write_on_batch_end(self, trainer, pl_module, prediction: dict, batch_indices, batch, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        name = prediction["name"]
        if prediction["kind"] == "image":
            result = prediction["result"]
            result.label_image().save(self.output_dir / f"{name}_mask.png")
            result.overlay(prediction["path"]).save(self.output_dir / f"{name}_overlay.png")
            return
        folder = self.output_dir / name
        folder.mkdir(exist_ok=True)
        overlays = []
        for t, (image, result) in enumerate(zip(prediction["images"], prediction["frames"], strict=True)):
            result.label_image().save(folder / f"{t:05d}.png")
            overlays.append(result.overlay(image))
        overlays[0].save(self.output_dir / f"{name}_overlay.gif", save_all=True, append_images=overlays[1:],
                         duration=round(1000 / self.fps), loop=0)

"""Callbacks that the CLI adds to every run.

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

"""Running `seggpt-lab fit` on the quickstart recipe with tiny settings, for the pretraining tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer

from tests.conftest import REPO

QUICKSTART = str(REPO / "recipes" / "quickstart.yaml")


def overrides(out: Path, shards: Path, steps: int, batches_per_epoch: int = 4, sources: list[dict] | None = None,
              **trainer) -> Path:
    """A config file given after the quickstart's: tiny batches, few steps, outputs and shards under tmp dirs.

    `sources` replaces the default mixture (one synthetic source at `shards`, converted on demand)."""
    config = {
        "trainer": {
            "max_steps": steps, "val_check_interval": 2, "log_every_n_steps": 1, "default_root_dir": str(out),
            "enable_progress_bar": False, "enable_model_summary": False,
            "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                        "init_args": {"save_dir": str(out), "name": "csv", "version": ""}}],
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"dirpath": str(out / "checkpoints"), "save_last": True,
                                         "every_n_train_steps": 2, "save_top_k": -1}},
                          {"class_path": "tests.seggpt_lab.modules.pretrain_runs.Probe",
                           "init_args": {"out": str(out / "probe")}}],
            **trainer,
        },
        "model": {"init_args": {"picture_every_n_steps": 2, "num_pictures": 2}},
        "data": {"init_args": {
            "sources": sources or [{"path": str(shards),
                                    "convert": {"source": "synthetic", "samples": 60, "size": 32}}],
            "val": {"path": str(shards), "split": "val", "convert": {"source": "synthetic", "samples": 20, "size": 32}},
            "batch_size": 2, "num_workers": 0, "batches_per_epoch": batches_per_epoch, "val_episodes": 3,
            "val_min_pixels": 1}},
    }
    path = out / "overrides.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


class Probe(Callback):
    """Writes, per rank, the shards each source reads and the first and final weights, for the distributed test."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in pl_module.state_dict().items()},
                   self.out / f"rank{trainer.global_rank}-start.pt")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        streams = trainer.datamodule.dataset.streams
        rank = trainer.global_rank
        (self.out / f"rank{rank}.json").write_text(json.dumps({
            "rank": rank, "world_size": trainer.world_size, "step": trainer.global_step,
            "urls": {s.name: s.urls for s in streams}}))
        torch.save({k: v.detach().cpu() for k, v in pl_module.state_dict().items()}, self.out / f"rank{rank}.pt")

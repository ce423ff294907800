"""Callbacks and the checkpoint plugin of `seggpt_lab.cli`, and the writer of `seggpt-lab predict`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from seggpt_lab.checkpoint import load_weights_only, save_atomic
from seggpt_lab.pictures import line_plot

CONFIG_FILE = "seggpt-lab-config.yaml"
TRIAL_ENV = "SEGGPT_LAB_SWEEP_TRIAL"  # set by `seggpt-lab sweep` for its trials: the trial's folder


class SaveConfig(SaveConfigCallback):
    """LightningCLI's `config.yaml` in the log_dir, which a WandbLogger shares between runs (`Trainer.log_dir`),
    plus per W&B run the file `seggpt-lab-config.yaml` and the config under the key `cli`, to filter runs by."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if not loggers:
            return
        text = self.parser.dump(self.config, skip_none=False)
        for logger in loggers:
            run = logger.experiment
            Path(run.dir, CONFIG_FILE).write_text(text)  # files in run.dir are synced with the run
            run.config.update({"cli": yaml.safe_load(text)}, allow_val_change=True)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's `TorchCheckpointIO`, with local writes by `save_atomic` (beside the checkpoint, fsync, `os.replace`;
    Lightning's `_atomic_save` stages in the system temp folder, then copies when that is another file system, which
    a kill can cut short) and local reads weights-only whatever torch's default, unless `weights_only=False`
    (`--weights_only false`, for trusted files). Remote paths keep Lightning's fsspec transaction.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_atomic(checkpoint, path)

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if weights_only is False or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().load_checkpoint(path, map_location, weights_only)
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such checkpoint file")
        return load_weights_only(path, "checkpoint", map_location)


class LossCurve(Callback):
    """A PNG of a logged training figure against the step, written when training ends (rank 0) and logged to W&B.

    Args:
        path: the PNG to write; None: `loss.png` in the trainer's default_root_dir (each sweep trial its own).
        key: the logged figure, sampled every `log_every_n_steps` steps.
    """

    def __init__(self, path: str | None = None, key: str = "train/loss") -> None:
        self.path, self.key = path, key
        self.points: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        value = trainer.callback_metrics.get(self.key)
        if value is not None and trainer.global_step % trainer.log_every_n_steps == 0:
            self.points.append((trainer.global_step, float(value)))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or len(self.points) < 2:
            return
        image = line_plot(self.points, self.key)
        path = Path(self.path or Path(trainer.default_root_dir) / "loss.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"{self.key} curve", images=[image])

    def state_dict(self) -> dict[str, Any]:  # a resumed run draws its whole curve
        return {"points": self.points}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.points = [tuple(p) for p in state_dict["points"]]


class EvaluateAfterFit(Callback):
    """When training ends, `seggpt-lab test --config CONFIG` on the checkpoint it wrote, and the evaluation's metrics
    (results.json's `metrics`: what a `seggpt-lab test` run logs) logged to this run at its last step, so that one
    `seggpt-lab fit` (a sweep's trial) reports held-out figures too. The test runs in a process of its own.

    Args:
        config: the evaluation recipe; its `model.init_args.checkpoint` and `output_dir` are set here.
        checkpoint: which of ModelCheckpoint's files: "last" (needs save_last) or "best" (its monitor's).
        args: more `seggpt-lab test` arguments, such as `--model.init_args.references=[]` (given before the
            checkpoint and output_dir, which stay this callback's).
        output_dir: where the evaluation writes; None: `test/` in the trainer's default_root_dir.
    """

    def __init__(self, config: str, checkpoint: Literal["last", "best"] = "last", args: list[str] | None = None,
                 output_dir: str | None = None) -> None:
        if not Path(config).is_file():
            raise FileNotFoundError(f"EvaluateAfterFit: {config}: no such evaluation recipe")
        self.config, self.checkpoint, self.args, self.output_dir = config, checkpoint, list(args or []), output_dir

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or trainer.interrupted:
            return
        saver = trainer.checkpoint_callback
        path = getattr(saver, f"{self.checkpoint}_model_path", "") if saver else ""
        if not path:
            need = "save_last: true" if self.checkpoint == "last" else "a monitor"
            raise ValueError(f"EvaluateAfterFit: this run wrote no {self.checkpoint} checkpoint (a ModelCheckpoint "
                             f"with {need})")
        out = Path(self.output_dir or Path(trainer.default_root_dir) / "test")
        command = [sys.executable, "-m", "seggpt_lab.cli", "test", *self.run_args(vars(self)),
                   f"--model.init_args.checkpoint={path}", f"--model.init_args.output_dir={out}",
                   f"--trainer.default_root_dir={out}"]
        env = {k: v for k, v in os.environ.items() if k != TRIAL_ENV}  # the test reports through this run
        if subprocess.run(command, env=env).returncode != 0:
            raise RuntimeError(f"EvaluateAfterFit: `{' '.join(command)}` failed (its output is above)")
        metrics = json.loads((out / "results.json").read_text()).get("metrics", {})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})

    @staticmethod
    def run_args(init_args: dict) -> list[str]:
        """The `seggpt-lab test` arguments of the run whose metrics this callback logs (`cli.logged_metrics`)."""
        return ["--config", init_args["config"], *(init_args.get("args") or [])]


class TrialReport(Callback):
    """What a `seggpt-lab sweep` trial tells its sweep (`seggpt_lab.sweep`): every figure after each validation and
    when training ends, as lines of `metrics.jsonl` in `folder`; and a `stop` file there (early termination) ends
    training after the validation that finds it. The CLI adds it to `fit` when SEGGPT_LAB_SWEEP_TRIAL names folder.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def _report(self, trainer: Trainer) -> None:
        if not trainer.is_global_zero:
            return
        row = {"_step": trainer.global_step, **{k: float(v) for k, v in trainer.callback_metrics.items()
                                                 if v.numel() == 1}}
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._report(trainer)
        if (self.folder / "stop").exists():
            trainer.should_stop = True

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report(trainer)


class PredictionWriter(BasePredictionWriter):
    """Writes `seggpt-lab predict`'s results: per image NAME, `NAME_mask.png` (the labels as a palette PNG: 0
    background, then the prompt's labels or a prompt file's class ids) and `NAME_overlay.png` (the official demo's
    overlay); per video, `NAME/00000.png`... (frame 0: the given mask) and the overlays as `NAME_overlay.gif`.

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

"""The path of one training batch from shard to loss: which project files run, in what order, how often revisited.

Builds recipes/quickstart.yaml's data module and model with num_workers 0, no validation and no pictures, on a
smaller copy of the recipe's synthetic world (`--samples` scenes, generated into a temporary folder), and fits one
step with `sys.setprofile` on from the start of the training epoch (before the loader reads its first sample) until
the loss reaches the backward pass. At every Python call and return, the executing project file is that of the
innermost frame in seggpt_lab/ or datamodules/: code of other packages (webdataset, torch, Lightning) runs on
behalf of the project file that called it. Consecutive events in one file make a stay; a return is a stay in a file
that the walk was in before and left.

The figures of record are those of a batch of one pair (`--batch-sizes 1`): the path of one sample, one pair and
one example to the loss, with no step repeated per example (the shuffle buffer's first fill reads tar members in
shards.py only). A batch of two shows what each further example adds. `--show` prints the walk, file and function.

    python benchmarks/batch_path.py [--batch-sizes 1 2] [--samples 200] [--show]

Runs on any tree of the project that has the quickstart recipe: from that tree's root, with PYTHONPATH set to it.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer

import datamodules
import seggpt_lab

PACKAGES = [Path(p.__file__).resolve().parent for p in (seggpt_lab, datamodules)]
ROOT = PACKAGES[0].parent


class Walk(Callback):
    """Records the project file executing at every Python call and return, from the epoch's start to the loss."""

    def __init__(self) -> None:
        self.stays: list[str] = []  # file of each stay
        self.functions: list[str] = []  # the function each stay begins in
        self._files: dict[object, str | None] = {}  # code object -> project file (None: another package's)

    def _file(self, code) -> str | None:
        if code not in self._files:
            path = Path(code.co_filename).resolve()
            inside = next((p for p in PACKAGES if path.is_relative_to(p)), None)
            self._files[code] = str(path.relative_to(inside.parent)) if inside else None
        return self._files[code]

    def _event(self, frame, event: str, arg) -> None:
        if event not in ("call", "return"):
            return
        frame = frame if event == "call" else frame.f_back  # after a return its caller runs
        while frame is not None and (file := self._file(frame.f_code)) is None:
            frame = frame.f_back
        if frame is not None and (not self.stays or self.stays[-1] != file):
            self.stays.append(file)
            self.functions.append(frame.f_code.co_name)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        sys.setprofile(self._event)

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        sys.setprofile(None)
        trainer.should_stop = True

    def figures(self) -> tuple[int, int, int]:
        """(stays, files, returns)."""
        returns = sum(file in self.stays[:i] for i, file in enumerate(self.stays))
        return len(self.stays), len(set(self.stays)), returns


def build(folder: Path, batch_size: int, samples: int) -> tuple[LightningModule, LightningDataModule]:
    """The quickstart recipe's model and data module: its synthetic world with `samples` scenes in `folder`, one
    epoch of one batch, no validation, no pictures."""
    recipe = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    data = copy.deepcopy(recipe["data"])
    (source,) = data["init_args"]["sources"]
    convert = {**source["convert"], "samples": samples}
    data["init_args"].update(sources=[{**source, "path": str(folder / convert["source"]), "convert": convert}],
                             val=None, batch_size=batch_size, num_workers=0, batches_per_epoch=1)
    model = copy.deepcopy(recipe["model"])
    model["init_args"]["picture_every_n_steps"] = 0
    parser = ArgumentParser()
    parser.add_argument("--model", type=LightningModule)
    parser.add_argument("--data", type=LightningDataModule)
    built = parser.instantiate(parser.parse_object({"model": model, "data": data}))
    return built.model, built.data


def walk(batch_size: int, samples: int) -> Walk:
    """One training step of the quickstart recipe, recorded."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as out:
        model, data = build(Path(out), batch_size, samples)
        recorder = Walk()
        trainer = Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                          callbacks=[recorder], default_root_dir=out)
        trainer.fit(model, datamodule=data)
    return recorder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--samples", type=int, default=200, help="synthetic scenes to generate")
    parser.add_argument("--show", action="store_true", help="print each walk, file and function")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    walks = {b: walk(b, args.samples) for b in args.batch_sizes}
    print(f"one batch from shard to loss: {ROOT}, recipes/quickstart.yaml, num_workers 0")
    print(f"{'batch':>5} {'stays':>6} {'files':>6} {'returns':>8}")
    for b, recorded in walks.items():
        print(f"{b:5d} {recorded.figures()[0]:6d} {recorded.figures()[1]:6d} {recorded.figures()[2]:8d}")
    if args.show:
        for b, recorded in walks.items():
            steps = (f"{file}:{function}" for file, function in zip(recorded.stays, recorded.functions, strict=True))
            print(f"walk, batch {b}:\n  " + "\n  ".join(steps))


if __name__ == "__main__":
    main()

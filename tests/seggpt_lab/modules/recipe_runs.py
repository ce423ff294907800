"""Running an evaluation recipe through the CLI, as the recipe tests do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from datamodules.fewshot import image_tensor
from datamodules.shards import ShardReader
from seggpt_lab.cli import main
from seggpt_lab.prompts import prompt_from_examples, save_prompt
from tests.conftest import REPO

TINY = str(REPO / "recipes" / "models" / "seggpt_ci_tiny.yaml")
HALF = (64, 64)  # the tiny model's half canvas


def run(recipe: str, index: Path, out: Path, predictor: str, *extra: str) -> dict:
    """`seggpt-lab test --config recipes/<recipe>` on the shards of `index`, outputs in `out`; returns results.json."""
    args = ["test", "--config", str(REPO / "recipes" / recipe), "--data.init_args.index", str(index),
            "--model.init_args.checkpoint", "null", "--model.init_args.predictor", predictor,
            "--model.init_args.output_dir", str(out), "--trainer.accelerator", "cpu", "--trainer.default_root_dir",
            str(out), "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", *extra]
    if predictor == "model":
        args += ["--model.init_args.model", TINY]
    main(args)
    return json.loads((out / "results.json").read_text())


def prompt_file(index: Path, path: Path, class_ids: list[int]) -> str:
    """A prompt file built from the first two samples of the shards, every class of `class_ids` painted."""
    reader = ShardReader(index)
    samples = [reader.sample(key) for key in reader.keys()[:2]]
    labels = [torch.from_numpy(s.sem.astype(np.int64)) for s in samples]
    save_prompt(prompt_from_examples([image_tensor(s) for s in samples], labels, class_ids, HALF), path)
    return str(path)

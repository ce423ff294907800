"""Running an evaluation recipe through the CLI, as the recipe tests do."""

from __future__ import annotations

import json
from pathlib import Path

from seggpt_lab.cli import main
from tests.conftest import REPO

TINY = str(REPO / "recipes" / "models" / "seggpt_ci_tiny.yaml")


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

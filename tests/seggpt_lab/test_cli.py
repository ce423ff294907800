from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from jsonargparse import ArgumentParser

from seggpt_lab.cli import main
from seggpt_lab.model import PRESETS, SegGPT, create_model
from tests.conftest import REPO


def test_help_lists_the_lightning_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "{fit,validate,test,predict}" in out


def test_print_config_dumps_the_trainer_defaults(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--print_config", "--trainer.max_steps=7"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "max_steps: 7" in out and "accelerator: auto" in out


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_model_recipes_build_their_preset(name):
    parser = ArgumentParser()
    parser.add_subclass_arguments(SegGPT, "model")
    cfg = parser.parse_args(["--model", str(REPO / "recipes" / "models" / f"{name}.yaml")])
    with torch.device("meta"):
        model = parser.instantiate(cfg).model
        assert model.config == create_model(name).config


def test_the_model_cli_imports_no_datamodules():
    """Layering: `seggpt-lab` resolves data modules by class_path; only `seggpt-lab-data` imports the data package."""
    code = "import sys, seggpt_lab.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'datamodules'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

from __future__ import annotations

import pytest
import torch
from jsonargparse import ArgumentParser

from seggpt_lab.cli import data_main, main
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


def test_data_tool_lists_its_commands_and_sources(capsys):
    with pytest.raises(SystemExit) as exit_:
        data_main(["--help"])
    assert exit_.value.code == 0 and "{convert,inspect}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        data_main(["convert", "--help"])
    out = capsys.readouterr().out
    for flag in ("--shard-size", "--workers", "--skip-bad", "--root", "--split", "--out", "synthetic", "youtube-vos"):
        assert flag in out


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_model_recipes_build_their_preset(name):
    parser = ArgumentParser()
    parser.add_subclass_arguments(SegGPT, "model")
    cfg = parser.parse_args(["--model", str(REPO / "recipes" / "models" / f"{name}.yaml")])
    with torch.device("meta"):
        model = parser.instantiate(cfg).model
        assert model.config == create_model(name).config

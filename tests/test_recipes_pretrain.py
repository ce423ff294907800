"""The pretraining recipes, their launch scripts and the W&B sweeps, checked through the CLI's --print_config.

`--print_config` parses and validates a whole configuration without building the model or the data, so
every check here takes seconds on CPU.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from datamodules.sources import SOURCES
from seggpt_lab.cli import entry, main
from seggpt_lab.sweep import check, load
from tests.conftest import REPO

RECIPES = REPO / "recipes"
# recipe -> the --config files that make it; override files come after their base
COMPOSITIONS = {
    "quickstart.yaml": ["quickstart.yaml"],
    "quickstart_gpu.yaml": ["quickstart.yaml", "quickstart_gpu.yaml"],
    "pretrain_vit_l.yaml": ["pretrain_vit_l.yaml"],
    "pretrain_vit_l_fsdp.yaml": ["pretrain_vit_l.yaml", "pretrain_vit_l_fsdp.yaml"],
}
PRETRAIN = [name for name in COMPOSITIONS if name.startswith("pretrain")]
# SegGPT, Wang et al. 2023, appendix A: sampling weight of each dataset or group of datasets
PAPER_WEIGHTS = {
    ("coco-instance",): 0.22,
    ("ade20k",): 0.15,
    ("coco-panoptic",): 0.15,
    ("cityscapes",): 0.07,
    ("coco-stuff",): 0.07,
    ("lip",): 0.07,
    ("voc",): 0.07,
    ("paco",): 0.07,
    ("isaid", "loveda"): 0.06,
    ("chase", "drive", "hrf", "stare"): 0.06,
}
PAPER_BATCH = 2048
SWEEPS = sorted((RECIPES / "sweeps").glob("*.yaml"))
LAUNCHERS = sorted((RECIPES / "launch").glob("*.sh"))


def printed_config(capsys, *args: str) -> dict:
    """`seggpt-lab fit ARGS --print_config`, in-process: the resolved configuration as a dict."""
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *args, "--print_config"])
    assert exit_.value.code == 0, capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)


def recipe_args(name: str) -> list[str]:
    return [arg for config in COMPOSITIONS[name] for arg in ("--config", str(RECIPES / config))]


def lookup(config: dict, key: str):
    """The value at a dotted CLI key, e.g. model.init_args.lr."""
    for part in key.split("."):
        config = config[part]
    return config


def total_batch(config: dict) -> int:
    trainer = config["trainer"]
    return (config["data"]["init_args"]["batch_size"] * trainer["devices"] * trainer["num_nodes"]
            * trainer["accumulate_grad_batches"])


def test_every_pretrain_recipe_is_composed_here():
    files = {p.name for p in RECIPES.glob("pretrain*.yaml")}
    assert files == set(PRETRAIN), "add new pretrain recipes to COMPOSITIONS"


@pytest.mark.parametrize("name", sorted(COMPOSITIONS))
def test_recipe_parses(name, capsys):
    config = printed_config(capsys, *recipe_args(name))
    assert config["model"]["class_path"] == "seggpt_lab.modules.pretrain.PretrainModule"
    assert config["data"]["class_path"] == "datamodules.pretrain.PretrainDataModule"


@pytest.mark.parametrize("name", PRETRAIN)
def test_pretrain_recipe_is_the_papers_setup(name, capsys):
    config = printed_config(capsys, *recipe_args(name))
    trainer, module, data = config["trainer"], config["model"]["init_args"], config["data"]["init_args"]
    vit = module["model"]["init_args"]
    assert module["model"]["class_path"] == "seggpt_lab.model.SegGPT"
    assert (vit["embed_dim"], vit["depth"], vit["num_heads"], vit["patch_size"]) == (1024, 24, 16, 16)
    transform, sampler = data["transform"], data["sampler"]
    assert transform["class_path"] == "datamodules.augment.PairTransform" and transform["init_args"]["on_device"]
    assert vit["img_size"] == [896, 448] and transform["init_args"]["size"] == [448, 448]
    assert transform["init_args"]["patch_size"] == 16
    assert vit["drop_path_rate"] == 0.1
    assert (module["lr"], module["weight_decay"], module["warmup_steps"]) == (1e-4, 0.05, 1800)
    assert trainer["max_steps"] == 9000 and trainer["precision"] == "bf16-mixed"
    assert (trainer["num_nodes"], trainer["devices"]) == (8, 8)
    assert total_batch(config) == PAPER_BATCH
    assert sampler["class_path"] == "datamodules.pairing.PairSampler" and sampler["init_args"]["self_prob"] == 0.5
    assert data["pin_memory"] is True
    logger = trainer["logger"]
    assert logger["class_path"] == "lightning.pytorch.loggers.WandbLogger"
    assert logger["init_args"]["project"] == "seggpt-lab" and logger["init_args"]["offline"] is False
    checkpoints = [c["init_args"] for c in trainer["callbacks"]
                   if c["class_path"] == "lightning.pytorch.callbacks.ModelCheckpoint"]
    assert any(c["monitor"] == "val/mIoU" and c["mode"] == "max" for c in checkpoints)
    assert any(c["save_last"] and c["every_n_train_steps"] for c in checkpoints)


@pytest.mark.parametrize("name", PRETRAIN)
def test_mixture_has_the_papers_appendix_weights(name, capsys):
    data = printed_config(capsys, *recipe_args(name))["data"]["init_args"]
    sources = {Path(s["path"]).name: s for s in data["sources"]}
    assert len(sources) == len(data["sources"]) and set(sources) <= set(SOURCES)
    assert set(sources) == {name for group in PAPER_WEIGHTS for name in group}
    for group, weight in PAPER_WEIGHTS.items():
        assert sum(sources[name]["weight"] for name in group) == pytest.approx(weight), group
    for source_name, source in sources.items():
        assert source["task"] == ("instance" if source_name == "coco-instance" else "semantic"), source_name
    assert Path(data["val"]["path"]).name in SOURCES and data["val"]["split"] != "train"


def test_fsdp_recipe_wraps_and_checkpoints_blocks(capsys):
    config = printed_config(capsys, *recipe_args("pretrain_vit_l_fsdp.yaml"))
    strategy = config["trainer"]["strategy"]
    assert strategy["class_path"] == "lightning.pytorch.strategies.FSDPStrategy"
    assert strategy["init_args"]["auto_wrap_policy"] == ["seggpt_lab.model.Block"]
    assert strategy["init_args"]["activation_checkpointing_policy"] == ["seggpt_lab.model.Block"]
    assert strategy["init_args"]["sharding_strategy"] == "FULL_SHARD"
    assert "gradient_as_bucket_view" not in strategy["init_args"]  # nothing of the base's DDP settings left
    assert config["model"]["init_args"]["model"]["init_args"]["grad_checkpointing"] is False
    assert config["trainer"]["gradient_clip_val"] is None  # FSDPPrecision refuses norm clipping


def test_fsdp_strategy_builds_on_cpu_with_the_block_policy():
    """print_config only checks the class path's spelling; building the strategy resolves it to the class.

    The strategy object itself needs no GPU (Lightning refuses FSDP without one only when the Trainer
    connects it to an accelerator)."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import FSDPStrategy, Strategy
    from torch import nn

    from seggpt_lab.model import Block

    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    recipe = yaml.safe_load((RECIPES / "pretrain_vit_l_fsdp.yaml").read_text())
    strategy = parser.instantiate(parser.parse_object({"strategy": recipe["trainer"]["strategy"]})).strategy
    assert isinstance(strategy, FSDPStrategy)
    block = Block(8, 2, (2, 2))
    for policy in (strategy.kwargs["auto_wrap_policy"], strategy._activation_checkpointing_kwargs["auto_wrap_policy"]):
        assert policy(block, recurse=False) and not policy(nn.Linear(2, 2), recurse=False)


def sweep_params() -> list[tuple[Path, str]]:
    return [(path, key) for path in SWEEPS for key in yaml.safe_load(path.read_text())["parameters"]]


def sample_values(spec: dict) -> list:
    """Values a sweep can hand out for one parameter: the ends of its list or of its range."""
    if "values" in spec:
        return [spec["values"][0], spec["values"][-1]]
    if "value" in spec:
        return [spec["value"]]
    distribution = spec.get("distribution", "")
    assert distribution in ("", "uniform", "int_uniform", "log_uniform_values", "q_uniform", "q_log_uniform_values"), \
        f"{distribution}: min/max are not parameter values for this distribution"
    return [spec["min"], spec["max"]]


def fixed_args(command: list[str]) -> list[str]:
    """The arguments a sweep's command gives `seggpt-lab fit` before the agent's ${args}."""
    start = command.index("fit") + 1
    return [str(arg) for arg in command[start:command.index("${args}")]]


def test_there_are_sweeps():
    assert len(SWEEPS) >= 2


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_runs_seggpt_lab_fit_on_a_recipe_and_its_metric_is_logged(path, monkeypatch):
    """What `seggpt-lab sweep` checks before any trial: W&B's schema, a `${program} fit` command on recipes that
    exist, parameters that are CLI keys and a metric that a trial logs; and the file stays usable by `wandb agent`."""
    monkeypatch.chdir(REPO)
    config = load(path)
    check(config, path)
    command = config["command"]
    assert command[0] == "${env}" and command[-1] == "${args}"
    program = command.index("${program}")
    assert all(re.fullmatch(r"[A-Z_]+=\S*", arg) for arg in command[1:program])  # /usr/bin/env NAME=VALUE
    configs = [command[i + 1] for i, arg in enumerate(command) if arg == "--config"]
    assert configs and all((REPO / config).is_file() for config in configs)


@pytest.mark.parametrize(("path", "key"), sweep_params(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_sweep_parameter_is_a_cli_key(path, key, capsys, monkeypatch):
    """Each value reaches its key as the agent passes it: --key=value after the command's own arguments."""
    monkeypatch.chdir(REPO)  # the agent runs from the repository root; recipe paths are relative to it
    sweep = yaml.safe_load(path.read_text())
    for value in sample_values(sweep["parameters"][key]):
        config = printed_config(capsys, *fixed_args(sweep["command"]), f"--{key}={value}")
        assert lookup(config, key) == (value if isinstance(value, str) else pytest.approx(value)), (key, value)


def test_misspelt_key_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(RECIPES / "quickstart.yaml"), "--model.init_args.learning_rate=0.001",
              "--print_config"])
    assert exit_.value.code != 0
    assert "learning_rate" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "line"), [
    (["--data.init_args.transform.init_args.max_idss=1"],
     "data.init_args.transform.init_args.max_idss: datamodules.augment.PairTransform has no such argument"),
    (["--data.init_args.self_prob=0.3"],  # moved to the sampler: the old key is refused, not ignored
     "data.init_args.self_prob: datamodules.pretrain.PretrainDataModule has no such argument"),
    (["--data.init_args.transform.init_args.size=[32, 32]"],
     "data.transform.init_args.size [32, 32] and patch_size 8 do not fit the model (img_size [128, 64], patch_size 8)"),
])
def test_a_wrong_data_setting_ends_with_one_line_naming_its_key(args, line, tmp_path, monkeypatch, capsys):
    """Keys of the injected transform and sampler are checked like any other; values that must agree with the model
    or the data module are checked at construction or setup, before any worker starts."""
    monkeypatch.delenv("SEGGPT_LAB_TRACEBACK", raising=False)
    source = f"[{{path: {tmp_path / 'synthetic'}, convert: {{source: synthetic, samples: 8, size: 32}}}}]"
    monkeypatch.setattr(sys, "argv", ["seggpt-lab", "fit", *recipe_args("quickstart.yaml"), *args,
                                      f"--data.init_args.sources={source}", "--data.init_args.val=null",
                                      "--trainer.fast_dev_run=true", f"--trainer.default_root_dir={tmp_path}"])
    with pytest.raises(SystemExit) as exit_:
        entry()
    assert exit_.value.code == 2
    errors = [e for e in capsys.readouterr().err.splitlines() if e.startswith("seggpt-lab: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"seggpt-lab: error: {line}"), errors


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launch_script_is_valid_bash(path):
    assert os.access(path, os.X_OK), f"{path.name} is not executable"
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "recipes/pretrain_vit_l.yaml" in path.read_text()


def test_launchers_match_the_recipes_world(capsys):
    trainer = printed_config(capsys, *recipe_args("pretrain_vit_l.yaml"))["trainer"]
    slurm = (RECIPES / "launch" / "slurm.sh").read_text()
    assert re.search(rf"^#SBATCH --nodes={trainer['num_nodes']}$", slurm, re.M)
    assert re.search(rf"^#SBATCH --ntasks-per-node={trainer['devices']}$", slurm, re.M)
    torchrun = (RECIPES / "launch" / "torchrun.sh").read_text()
    assert f'NNODES="${{NNODES:-{trainer["num_nodes"]}}}"' in torchrun
    assert f'NPROC_PER_NODE="${{NPROC_PER_NODE:-{trainer["devices"]}}}"' in torchrun

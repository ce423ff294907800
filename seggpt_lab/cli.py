"""`seggpt-lab fit / validate / test / predict`: LightningCLI (`seggpt-lab sweep`: `seggpt_lab.sweep`).

It owns nothing but wiring and imports no `datamodules`: recipes name the data modules by class_path.
`seggpt-lab-data` (convert, inspect) is the data package's own, in `datamodules.cli`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import sys
from pathlib import Path

import yaml
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from seggpt_lab.callbacks import TRIAL_ENV, SafeCheckpointIO, SaveConfig, TrialReport
from seggpt_lab.checkpoint import load_weights_only

# jsonargparse's report around the reason: which union member failed, and the given value
_REPORT = ("Does not validate", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>",
           "Problem with given class_path")


def config_error(message: str) -> str:
    """jsonargparse's parse error (nested, several lines) -> one line: the full key, then what is wrong."""
    if group := re.search(r"Group '([^']+)' does not accept option '([^']+)'", message):
        return f"{group[1]}.{group[2]}: {group[1]} has no such key; check its spelling"
    if subcommand := re.search(r"Subcommand '([^']+)' does not accept option '([^']+)'", message):
        return f"{subcommand[2]}: {subcommand[1]} has no such key; check its spelling"
    if unknown := re.search(r"unrecognized arguments: (\S+)", message):
        return f"{unknown[1]}: no such option; check its spelling"
    keys = re.findall(r'Parser key "([^"]+)"', message)
    classes = re.findall(r"class_path '([^']+)'", message)
    lines = (re.sub(r'^(- )?(Parser key "[^"]+":)?', "", line.strip()).strip() for line in message.splitlines())
    reason = next((line for line in lines if line and not line.startswith(_REPORT)), message.strip())
    if (option := re.fullmatch(r"Option '([^']+)' is not accepted", reason)) and classes:
        keys.append(option[1])
        reason = f"{classes[-1]} has no such argument; check its spelling"
    return f"{'.init_args.'.join(keys)}: {reason}" if keys else reason


class Parser(LightningArgumentParser):
    """The CLI's parser: no abbreviated options (argparse would read `--trainer.max_step 3` as max_steps), and a
    configuration error ends with one line naming the key (exit status 2) instead of the usage and a nested report."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error or os.environ.get("SEGGPT_LAB_TRACEBACK") or os.environ.get("JSONARGPARSE_DEBUG"):
            return super().error(message, ex)
        command = self.prog.replace(" [options]", "")
        print(f"seggpt-lab: error: {config_error(message)} (`{command} --help` lists the options)", file=sys.stderr)
        raise SystemExit(2)


class CLI(LightningCLI):
    """LightningCLI with the project's defaults, so that recipes need not repeat them: checkpoints written
    atomically and read weights-only (`SafeCheckpointIO`), and a `--ckpt_path` file checked before any use."""

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and Path(path).is_file():  # LightningCLI reads its hyperparameters next: refuse pickled code here
            load_weights_only(path, "checkpoint", mmap=True)

    def instantiate_trainer(self, **kwargs) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default; a chosen plugin stays
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        if self.subcommand == "fit" and os.environ.get(TRIAL_ENV):  # a sweep's trial (`seggpt_lab.sweep`)
            trainer.callbacks.append(TrialReport(os.environ[TRIAL_ENV]))
        return trainer


def main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """`seggpt-lab fit|validate|test|predict --config recipes/....yaml`; tests and notebooks call `main([...])`."""
    os.environ.setdefault("WANDB_MODE", "offline")  # W&B runs stay local unless the user says otherwise
    cli = CLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_callback=SaveConfig,
        save_config_kwargs={"overwrite": True},
        parser_class=Parser,
    )
    wandb = sys.modules.get("wandb")
    if run and wandb is not None and wandb.run is not None:
        wandb.finish()  # one W&B run per command, also when main() runs again in one process (notebooks, tests)
    return cli


def resolved_config(args: list[str]) -> dict:
    """The configuration that `seggpt-lab SUBCOMMAND ARGS...` would run, resolved as --print_config prints it (no
    class is instantiated); a configuration error raises ValueError with the CLI's one line."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([*args, "--print_config"])  # printed and ended while parsing: nothing runs
        except SystemExit as e:
            if e.code:
                line = next((x for x in err.getvalue().splitlines() if x.startswith("seggpt-lab: error:")),
                            err.getvalue().strip() or f"exit status {e.code}")
                raise ValueError(line.removeprefix("seggpt-lab: error: ")) from None
    return yaml.safe_load(out.getvalue())


def class_of(entry: dict) -> type:
    """The class a resolved config's `{class_path: ...}` entry names."""
    module, _, name = entry["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)


def logged_metrics(config: dict) -> list[str] | None:
    """The metric names a run of the resolved `config` logs, as its classes declare them: the model class and any
    callback by a classmethod `logged_metrics(init_args, config)`, a callback that logs another run's metrics
    (`EvaluateAfterFit`) by `run_args(init_args)`, the arguments of that `seggpt-lab test`. None when the model class
    declares none."""
    model = class_of(config["model"])
    if not hasattr(model, "logged_metrics"):
        return None
    names = list(model.logged_metrics(config["model"].get("init_args") or {}, config))
    for callback in (config.get("trainer") or {}).get("callbacks") or []:
        cls, init_args = class_of(callback), callback.get("init_args") or {}
        if hasattr(cls, "logged_metrics"):
            names += cls.logged_metrics(init_args, config)
        if hasattr(cls, "run_args"):
            names += logged_metrics(resolved_config(["test", *cls.run_args(init_args)])) or []
    return names


def entry() -> None:
    """Console-script wrapper: run the CLI and exit 0 (main's return value is the CLI object, not a status).

    A bad input (a missing file, a wrong value, a server that does not answer: FileNotFoundError, ValueError,
    ConnectionError, whose messages here name the file, the key or the URL) ends with one line on stderr and exit
    status 2 instead of a traceback; SEGGPT_LAB_TRACEBACK=1 shows it.
    """
    try:
        main()
    except (FileNotFoundError, ValueError, ConnectionError) as e:
        if os.environ.get("SEGGPT_LAB_TRACEBACK"):
            raise
        # jsonargparse reports a class that refused its arguments as "Does not validate against any of the Union
        # subtypes", chaining the class's own error: that innermost one is the message
        chain = [e]
        while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and cause not in chain:
            chain.append(cause)
        inner = [c for c in chain if isinstance(c, FileNotFoundError | ValueError | ConnectionError) and str(c).strip()]
        message = str(inner[-1] if inner else e).strip().splitlines()[0]
        print(f"seggpt-lab: error: {message} (SEGGPT_LAB_TRACEBACK=1 for the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    entry()

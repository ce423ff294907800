"""Reliability of a run: SIGKILL mid-run and mid-save, files that carry pickled code, misspelt configuration keys."""

from __future__ import annotations

import csv
import io
import os
import pickle
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import webdataset as wds
import yaml

from datamodules.convert import convert
from datamodules.shards import iter_samples, sample_stream
from datamodules.sources.synthetic import Synthetic
from seggpt_lab.checkpoint import CheckpointError, load_pretrained
from seggpt_lab.cli import entry, main
from seggpt_lab.modules.pretrain import warmup_cosine
from seggpt_lab.prompts import load_prompt
from tests.conftest import REPO
from tests.seggpt_lab.modules.pretrain_runs import QUICKSTART, overrides


class Payload:
    """Pickled, it calls `open(marker, "w")` when unpickled: a stand-in for any code a file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _config(out: Path, shards: Path, steps: int, *callbacks: dict) -> Path:
    """The pretraining tests' tiny run with a checkpoint after every step, each step one pass over the data (so
    every checkpoint is a pass boundary, where the data resumes exactly), 2 warm-up steps, no validation."""
    path = overrides(out, shards, steps, batches_per_epoch=1, limit_val_batches=0)
    config = yaml.safe_load(path.read_text())
    checkpoints = config["trainer"]["callbacks"][0]
    # all explicit: a one-item callback list merges into the quickstart's ModelCheckpoint (monitor, mode, filename)
    checkpoints["init_args"].update(monitor=None, mode="min", filename=None, every_n_train_steps=1)
    config["trainer"]["callbacks"] = [checkpoints, *callbacks]
    config["model"]["init_args"].update(picture_every_n_steps=0, warmup_steps=2)
    path.write_text(yaml.safe_dump(config))
    return path


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_training_state(checkpoint: dict, reference: dict) -> None:
    """Same step, schedule position, AdamW moments and step counts, and weights (to float tolerance)."""
    assert checkpoint["global_step"] == reference["global_step"]
    assert checkpoint["lr_schedulers"] == reference["lr_schedulers"]  # last_epoch: the schedule's position
    states, expected = checkpoint["optimizer_states"][0], reference["optimizer_states"][0]
    assert states["param_groups"] == expected["param_groups"] and states["state"].keys() == expected["state"].keys()
    for k, state in expected["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(states["state"][k][name], value, rtol=1e-4, atol=1e-6, msg=f"{k} {name}")
    for key, value in reference["state_dict"].items():
        torch.testing.assert_close(checkpoint["state_dict"][key], value, rtol=1e-4, atol=1e-5, msg=key)


def _lr_by_step(out: Path) -> dict[int, float]:
    with open(out / "csv" / "metrics.csv") as f:
        return {int(r["step"]): float(r["train/lr"]) for r in csv.DictReader(f) if r.get("train/lr")}


def test_sigkill_mid_save_keeps_the_last_checkpoint_and_resume_continues(tmp_path: Path) -> None:
    """`seggpt-lab fit` killed (SIGKILL) halfway through writing its step-2 checkpoint, then `--ckpt_path last`:
    the step-1 checkpoint is whole, the partial file sits beside it (not in the system temp folder), and the
    resumed run ends where an uninterrupted one ends: step counter, learning rates, AdamW state and weights."""
    shards = tmp_path / "shards" / "synthetic"
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    main(["fit", "--config", QUICKSTART, "--config", str(_config(straight, shards, 4))])

    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    kill = {"class_path": "tests.seggpt_lab.crash_runs.KillDuringSave", "init_args": {"step": 2}}
    config = _config(killed, shards, 4, kill)
    done = subprocess.run([sys.executable, "-m", "seggpt_lab.cli", "fit", "--config", QUICKSTART, "--config",
                           str(config)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TMPDIR": str(system_tmp), "PYTHONUNBUFFERED": "1"})
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    folder = killed / "checkpoints"
    left = _load(folder / "last.ckpt")  # whole: the kill hit the next checkpoint's temporary file
    assert left["global_step"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=0-step=1.ckpt", "epoch=1-step=2.ckpt.tmp",
                                                        "last.ckpt"]
    assert not [p for p in system_tmp.rglob("*") if p.is_file()]  # nothing staged outside the checkpoint's folder
    _assert_same_training_state(left, _load(straight / "checkpoints" / "epoch=0-step=1.ckpt"))

    main(["fit", "--config", QUICKSTART, "--config", str(_config(killed, shards, 4)), "--ckpt_path", "last"])
    resumed, reference = _load(folder / "last.ckpt"), _load(straight / "checkpoints" / "last.ckpt")
    assert sorted(p.name for p in folder.iterdir()) == [f"epoch={e}-step={e + 1}.ckpt" for e in range(4)] + [
        "last.ckpt"]  # the resumed run wrote step 2 again, over the partial file
    assert resumed["global_step"] == reference["global_step"] == 4
    assert {int(s["step"]) for s in resumed["optimizer_states"][0]["state"].values()} == {4}  # not 4 - 1
    _assert_same_training_state(resumed, reference)
    # the learning rate of every resumed step is the uninterrupted schedule's (2 warm-up steps, then cosine)
    resumed_lr, reference_lr = _lr_by_step(killed), _lr_by_step(straight)
    schedule = {step: 2e-3 * warmup_cosine(step, 2, 4) for step in range(4)}  # the quickstart's peak lr
    assert reference_lr == pytest.approx(schedule) and resumed_lr == pytest.approx({s: schedule[s] for s in (1, 2, 3)})


def _pickled_code(path: Path, marker: Path, **extra) -> Path:
    torch.save({"state_dict": {}, "payload": Payload(marker), **extra}, path)
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("seggpt-lab: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def test_files_with_pickled_code_are_refused_without_running_it(tmp_path: Path, monkeypatch, capsys) -> None:
    """Model checkpoints, prompt files and Lightning checkpoints (`--ckpt_path FILE` and `--ckpt_path last`) are
    read weights-only whatever torch's default (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD: torch < 2.6's): a one-line
    error names the file, and the payload never runs."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.delenv("SEGGPT_LAB_TRACEBACK", raising=False)
    marker = tmp_path / "payload-ran"
    for reader, name in ((load_pretrained, "model.pth"), (load_prompt, "prompt.pt")):
        path = _pickled_code(tmp_path / name, marker)
        with pytest.raises(CheckpointError) as err:
            reader(path)
        message = str(err.value)
        assert message.startswith(f"{path}: refused") and "\n" not in message and "io.open" in message
    assert not marker.exists()

    shards = tmp_path / "shards" / "synthetic"
    evil = _pickled_code(tmp_path / "evil.ckpt", marker, hyper_parameters={"lr": 1.0})
    config = _config(tmp_path / "run", shards, 2)
    (tmp_path / "run" / "checkpoints").mkdir()
    _pickled_code(tmp_path / "run" / "checkpoints" / "last.ckpt", marker)
    for ckpt in (str(evil), "last"):
        monkeypatch.setattr(sys, "argv", ["seggpt-lab", "fit", "--config", QUICKSTART, "--config", str(config),
                                          "--ckpt_path", ckpt])
        with pytest.raises(SystemExit) as exit_:
            entry()
        assert exit_.value.code == 2
        line = _one_error_line(capsys)
        assert f"{evil if ckpt != 'last' else tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}: refused" in line, line
        assert not marker.exists()


def test_shard_decoding_never_unpickles(tmp_path: Path) -> None:
    """A shard sample carrying `.pyd` and `.pickle` members (webdataset's pickle extensions): the project's readers
    decode only the schema's members, so the payload never runs; webdataset's default decoder would run it."""
    convert(Synthetic(None, "train", samples=2, size=32), tmp_path, shard_size=2, progress=False)
    shard = tmp_path / "synthetic" / "train-000000.tar"
    marker = tmp_path / "payload-ran"
    data = pickle.dumps(Payload(marker))
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    first = members[0][0].name.split(".")[0]
    with tarfile.open(shard, "w") as tar:  # the extra members go with the first sample's, as a converter's would
        for i, (info, content) in enumerate(members):
            tar.addfile(info, io.BytesIO(content))
            if info.name.startswith(first) and not members[i + 1][0].name.startswith(first):
                for ext in ("pyd", "pickle"):
                    extra = tarfile.TarInfo(f"{first}.{ext}")
                    extra.size = len(data)
                    tar.addfile(extra, io.BytesIO(data))
    assert len(list(iter_samples(tmp_path / "synthetic" / "train-index.json"))) == 2
    assert len(list(sample_stream([str(shard)], seed=0, resampled=False, shuffle=0))) == 2
    assert not marker.exists()
    list(wds.WebDataset(str(shard), shardshuffle=False).decode())
    assert marker.exists()  # the members were live: a decoder that unpickles would have run them


@pytest.mark.parametrize(("args", "key"), [
    (["--model.init_args.lerning_rate", "0.1"], "model.init_args.lerning_rate"),
    (["--trainer.max_step", "3"], "--trainer.max_step"),  # not read as max_steps (argparse abbreviation)
    ({"trainer": {"max_step": 3}}, "trainer.max_step"),
    ({"model": {"init_args": {"model": {"init_args": {"embed_dimm": 64}}}}},
     "model.init_args.model.init_args.embed_dimm"),
])
def test_a_misspelt_key_ends_with_one_line_naming_it(args, key, tmp_path: Path, monkeypatch, capsys) -> None:
    if isinstance(args, dict):
        (tmp_path / "typo.yaml").write_text(yaml.safe_dump(args))
        args = ["--config", str(tmp_path / "typo.yaml")]
    monkeypatch.setattr(sys, "argv", ["seggpt-lab", "fit", "--config", QUICKSTART, *args, "--trainer.fast_dev_run",
                                      "true", "--trainer.default_root_dir", str(tmp_path)])  # no outputs if it ran
    with pytest.raises(SystemExit) as exit_:
        entry()
    assert exit_.value.code == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"seggpt-lab: error: {key}: ") and "spelling" in line, line
    assert not (tmp_path / "csv").exists()  # nothing ran


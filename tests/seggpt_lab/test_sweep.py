"""`seggpt-lab sweep`: a W&B sweep file run here by W&B's engine, trials as `seggpt-lab fit` processes on the tiny
preset of the pretraining tests (a few steps on 32 px scenes)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from seggpt_lab.callbacks import TrialReport
from seggpt_lab.main import entry
from seggpt_lab.modules.pretrain import PretrainModule
from seggpt_lab.sweep import STATE, Sweep, main
from tests.conftest import REPO
from tests.seggpt_lab.modules.pretrain_runs import QUICKSTART, overrides


def tiny_sweep(tmp_path: Path, name: str = "tiny-lr-grid", **fields) -> Path:
    """A sweep file over the quickstart recipe with the tiny preset: a 3-point grid of learning rates on val/mIoU."""
    preset = overrides(tmp_path / "preset", tmp_path / "shards" / "synthetic", 4)
    config = yaml.safe_load(preset.read_text())
    config["trainer"]["callbacks"] = [c for c in config["trainer"]["callbacks"] if "Probe" not in c["class_path"]]
    config["trainer"]["callbacks"][0]["init_args"]["dirpath"] = None  # each trial's checkpoints in its folder
    preset.write_text(yaml.safe_dump(config))
    sweep = {"program": "seggpt-lab", "name": name, "method": "grid",
             "metric": {"name": "val/mIoU", "goal": "maximize"},
             "parameters": {"model.init_args.lr": {"values": [1e-3, 2e-3, 3e-3]}},
             "command": ["${env}", "WANDB_MODE=online", "${program}", "fit", "--config", QUICKSTART,
                         "--config", str(preset), "${args}"], **fields}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def state(folder: Path) -> dict:
    return json.loads((folder / STATE).read_text())


def last_reported(folder: Path, key: str) -> float:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r][-1]


def test_a_three_trial_sweep_runs_to_the_end_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    path, folder = tiny_sweep(tmp_path), tmp_path / "sweep"
    assert main([str(path), "--dir", str(folder)]) == 0
    trials = state(folder)["trials"]
    assert [t["name"] for t in trials] == ["trial-001", "trial-002", "trial-003"]
    assert [t["params"]["model.init_args.lr"] for t in trials] == [1e-3, 2e-3, 3e-3]  # the grid, in order
    for t in trials:
        trial = folder / "trials" / t["name"]
        assert t["status"] == "finished" and t["reason"] is None
        assert t["value"] == last_reported(trial, "val/mIoU")  # the metric as the trial reported it last
        assert f"--model.init_args.lr={t['params']['model.init_args.lr']}" in (trial / "command.txt").read_text()
        # logged offline by W&B, in the sweep's group; what `wandb sync` uploads
        run = next((trial / "wandb").glob("offline-run-*/run-*.wandb"))
        assert b"tiny-lr-grid" in run.read_bytes()
        assert len(list(trial.glob("seggpt-lab/*/checkpoints/last.ckpt"))) == 1  # under the trial's W&B run
        # what the sweep checked the metric against (PretrainModule.logged_metrics) is what a trial reports
        reported = {k for row in map(json.loads, (trial / "metrics.jsonl").read_text().splitlines()) for k in row}
        declared = PretrainModule.logged_metrics({}, {})
        assert set(declared) == {k for k in reported if k != "_step" and not k.startswith(("skipped/", "read/"))}
    with open(folder / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    values = [float(r["val/mIoU"]) for r in rows]
    assert values == sorted(values, reverse=True)  # best first
    assert {r["trial"] for r in rows} == {t["name"] for t in trials}
    assert Image.open(folder / "sweep.png").width == 320  # one panel: one parameter
    out = capsys.readouterr().out
    assert "sweep tiny-lr-grid: 3 trials, best first (maximize val/mIoU)" in out
    assert "[sweep tiny-lr-grid] trial-002 of 3: lr=0.002 (about " in out  # a grid without run_cap: its size
    # run again: nothing left to run, nothing run twice
    assert main([str(path), "--dir", str(folder)]) == 0
    assert state(folder)["trials"] == trials
    assert "resuming" in capsys.readouterr().out


def test_a_killed_sweep_resumes_without_running_a_trial_twice(tmp_path, monkeypatch):
    """SIGKILL while the second trial runs: the trial dies with the sweep; started again, the sweep marks it
    failed with the reason, keeps the first as it was and runs the third."""
    monkeypatch.chdir(REPO)
    path, folder = tiny_sweep(tmp_path), tmp_path / "sweep"
    runner = subprocess.Popen([sys.executable, "-m", "seggpt_lab.sweep", str(path), "--dir", str(folder)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        trials = state(folder)["trials"] if (folder / STATE).is_file() else []
        if len(trials) == 2 and "pid" in trials[1]:
            break
        assert runner.poll() is None, "the sweep ended before its second trial"
        time.sleep(0.2)
    else:
        pytest.fail("the second trial never started")
    first, pid = trials[0], trials[1]["pid"]
    time.sleep(2)  # well into the trial's start-up
    runner.kill()
    runner.wait()
    for _ in range(100):  # the trial follows its runner (PR_SET_PDEATHSIG)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the trial outlived its sweep")
    assert state(folder)["trials"][1]["status"] == "running"  # as the killed sweep left it

    assert main([str(path), "--dir", str(folder)]) == 0
    trials = state(folder)["trials"]
    assert [t["name"] for t in trials] == ["trial-001", "trial-002", "trial-003"]
    assert trials[0] == first  # finished before the kill: not run again
    assert trials[1]["status"] == "failed" and "the sweep stopped while it ran" in trials[1]["reason"]
    assert trials[2]["status"] == "finished" and trials[2]["params"]["model.init_args.lr"] == 3e-3


def test_a_trial_that_fails_is_marked_with_its_error_and_the_sweep_goes_on(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    path = tiny_sweep(tmp_path, parameters={"data.init_args.batch_size": {"values": [0, 2]}})  # 0 parses, then fails
    folder = tmp_path / "sweep"
    assert main([str(path), "--dir", str(folder)]) == 0
    failed, done = state(folder)["trials"]
    assert failed["status"] == "failed" and failed["value"] is None
    assert failed["reason"].startswith("exit status 2: seggpt-lab: error: data: need batch_size >= 1")
    assert done["status"] == "finished" and done["params"] == {"data.init_args.batch_size": 2}
    with open(folder / "trials.csv") as f:
        assert [r["trial"] for r in csv.DictReader(f)] == ["trial-002", "trial-001"]  # failed ones last


@pytest.mark.parametrize(("fields", "line"), [
    ({"method": "best"}, "method: 'best' is not one of"),
    ({"parameters": {"model.init_args.learning_rate": {"values": [1e-3]}}},
     "parameters or command: model.init_args.learning_rate"),
    ({"metric": {"name": "val/mIoUU", "goal": "maximize"}}, "metric.name: no trial logs 'val/mIoUU'"),
    ({"command": ["${program}", "fit", "--config", "recipes/quickstart.yaml", "${args_json}"]},
     "program, command: need `program: seggpt-lab`"),
    ({"run_cap": 0}, "run_cap: a number of trials >= 1"),
])
def test_a_bad_sweep_file_ends_with_one_line_before_any_trial(fields, line, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    path, folder = tiny_sweep(tmp_path, **fields), tmp_path / "sweep"
    assert main([str(path), "--dir", str(folder)]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and err[0].startswith(f"seggpt-lab sweep: error: {path}: {line}"), err
    assert not (folder / "trials").exists()


def test_a_missing_or_changed_sweep_file_is_one_line(tmp_path, monkeypatch, capsys):
    assert main([str(tmp_path / "none.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"seggpt-lab sweep: error: {tmp_path / 'none.yaml'}: no such sweep file"
    path, folder = tiny_sweep(tmp_path), tmp_path / "sweep"
    Sweep(path, folder).save()
    changed = yaml.safe_load(path.read_text())
    changed["parameters"]["model.init_args.lr"]["values"].append(4e-3)
    path.write_text(yaml.safe_dump(changed))
    assert main([str(path), "--dir", str(folder)]) == 2
    assert "differs from the file that began the sweep" in capsys.readouterr().err


def finished(sweep: Sweep, params: dict, history: list[dict], status: str = "finished") -> None:
    """A trial in the sweep's state as if it had run and reported `history`."""
    name = f"trial-{len(sweep.trials) + 1:03d}"
    folder = sweep.folder / "trials" / name
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in history))
    sweep.trials.append({"name": name, "params": params, "status": status, "started": 0.0, "ended": 1.0,
                         "value": history[-1].get(sweep.metric) if history else None, "reason": None})


@pytest.mark.parametrize("goal", ["maximize", "minimize"])
def test_bayes_proposes_from_the_finished_trials(goal, tmp_path):
    """Six finished trials whose metric rises with x: the engine's next proposals lie where the goal is."""
    path = tiny_sweep(tmp_path, method="bayes", metric={"name": "val/mIoU", "goal": goal},
                      parameters={"model.init_args.lr": {"min": 0.0, "max": 1.0}})
    sweep = Sweep(path, tmp_path / "sweep")
    for x in (0.05, 0.2, 0.35, 0.5, 0.65, 0.8):
        finished(sweep, {"model.init_args.lr": x}, [{"_step": 4, "val/mIoU": 10 * x}])
    np.random.seed(0)
    proposals = [sweep.propose()["model.init_args.lr"] for _ in range(5)]
    assert all(0 <= p <= 1 for p in proposals)
    assert (np.mean(proposals) > 0.6) if goal == "maximize" else (np.mean(proposals) < 0.3), proposals


def test_hyperband_stops_a_trial_that_trails_the_finished_ones(tmp_path):
    """The file's early_terminate (W&B's hyperband): a running trial below the finished ones at a band is stopped."""
    path = tiny_sweep(tmp_path, metric={"name": "val/loss", "goal": "minimize"},
                      early_terminate={"type": "hyperband", "max_iter": 5, "eta": 2, "s": 2})
    sweep = Sweep(path, tmp_path / "sweep")
    for loss in ([10, 9], [10, 6, 6]):
        finished(sweep, {"model.init_args.lr": 1e-3}, [{"val/loss": v} for v in loss])
    finished(sweep, {"model.init_args.lr": 2e-3}, [{"val/loss": v} for v in (10, 10)], status="running")
    finished(sweep, {"model.init_args.lr": 3e-3}, [{"val/loss": v} for v in (10, 7, 7)], status="running")
    assert sweep.should_stop(sweep.trials[2]) and not sweep.should_stop(sweep.trials[3])


def test_trial_report_writes_each_validation_and_honours_a_stop_file(tmp_path):
    report = TrialReport(str(tmp_path))
    trainer = SimpleNamespace(is_global_zero=True, sanity_checking=False, global_step=7, should_stop=False,
                              callback_metrics={"val/S": torch.tensor(3.5), "vector": torch.zeros(2)})
    report.on_validation_end(trainer, None)
    assert not trainer.should_stop
    (tmp_path / "stop").touch()
    trainer.global_step = 9
    report.on_validation_end(trainer, None)
    assert trainer.should_stop
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"_step": 7, "val/S": 3.5}, {"_step": 9, "val/S": 3.5}]


def test_the_seggpt_lab_command_runs_sweep(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["seggpt-lab", "sweep", str(tmp_path / "none.yaml")])
    with pytest.raises(SystemExit) as exit_:
        entry()
    assert exit_.value.code == 2 and "no such sweep file" in capsys.readouterr().err


def test_a_second_runner_on_a_running_sweeps_folder_is_refused(tmp_path, capsys):
    path, folder = tiny_sweep(tmp_path), tmp_path / "sweep"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
                               "fcntl.lockf(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(folder / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main([str(path), "--dir", str(folder)]) == 2
        assert "another seggpt-lab sweep is running in this folder" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()

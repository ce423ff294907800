"""`seggpt-lab sweep FILE [--count N] [--dir DIR]`: a W&B sweep file run on this machine, no W&B server needed.

    seggpt-lab sweep recipes/sweeps/colouring.yaml                 # trials under outputs/sweeps/<file name>
    wandb sync outputs/sweeps/colouring/trials/*/wandb/offline-run-*   # later, to upload the trials as they are

The search is W&B's own engine (the `sweeps` package that `wandb controller` runs: grid, random and bayes, and
hyperband early termination), called here with the finished trials. Each trial is the file's `command` (a
`seggpt-lab fit`, its parameters LightningCLI keys given as --key=value by ${args}) in a process of its own, logged
by a WandbLogger in offline mode, every trial of the sweep in one W&B group. The same file works with a server:
`wandb sweep FILE`, then `wandb agent ID`.

Everything the sweep knows lives in DIR/sweep.json, replaced atomically after every change: a sweep started again
resumes, never runs a trial twice, and marks a trial that was running when the sweep died as failed, with the
reason. A trial that fails does not end the sweep. At the end: a table of the trials, best first (printed, and
DIR/trials.csv) and DIR/sweep.png, the metric against each parameter (also logged to W&B, as the group's summary run).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from seggpt_lab.atomic import write_atomic
from seggpt_lab.callbacks import TRIAL_ENV
from seggpt_lab.pictures import sweep_plot

STATE = "sweep.json"
PROGRAM = "seggpt-lab"
DONE = ("finished", "stopped", "failed")  # a trial's final states; "running" while it runs
POLL_S = 1.0  # how often a running trial's metrics are read (early termination)


class SweepError(ValueError):
    """A sweep file or folder that cannot be run: the message is one line naming the file and the key."""


def load(path: Path) -> dict:
    """The sweep file, checked against W&B's sweep schema and this runner's needs (`command`)."""
    if not path.is_file():
        raise SweepError(f"{path}: no such sweep file")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SweepError(f"{path}: not YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise SweepError(f"{path}: a sweep file is a mapping (method, metric, parameters, command)")
    import sweeps  # scikit-learn and scipy behind it: imported when a sweep runs
    from sweeps.config.schema import validator

    cap = config.pop("run_cap", None)  # the W&B server's key, unknown to the engine's schema: the runner's count
    if cap is not None and (not isinstance(cap, int) or cap < 1):
        raise SweepError(f"{path}: run_cap: a number of trials >= 1, got {cap!r}")
    for error in validator.iter_errors(config):
        key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise SweepError(f"{path}: {key}: {error.message.splitlines()[0]}")
    problems = sweeps.schema_violations_from_proposed_config(config)  # min < max and the like
    if problems:
        raise SweepError(f"{path}: {problems[0]}")
    if "metric" not in config or not config.get("parameters"):
        raise SweepError(f"{path}: metric and parameters: a sweep needs both")
    command = config.get("command") or []
    if config.get("program") != PROGRAM or "${program}" not in command or "${args}" not in command:
        raise SweepError(f"{path}: program, command: need `program: {PROGRAM}` and a command with ${{program}} fit "
                         "... ${args} (see recipes/sweeps/lr_warmup.yaml)")
    after = command[command.index("${program}") + 1 :]
    if after[:1] != ["fit"]:
        raise SweepError(f"{path}: command: ${{program}} must be followed by fit, got {after[:1]}")
    unknown = [t for t in command if t.startswith("${") and t not in ("${env}", "${program}", "${args}")]
    if unknown:
        raise SweepError(f"{path}: command: {unknown[0]} is not supported here (${{env}}, ${{program}}, ${{args}})")
    config = sweeps.SweepConfig(config)  # W&B's defaults filled in (metric.impute, early_terminate's...)
    if cap is not None:
        config["run_cap"] = cap
    return config


def as_arg(value) -> str:
    """A parameter value as LightningCLI reads it: numbers and strings as they are, others as JSON (YAML reads it)."""
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def fit_args(config: dict, params: dict, extra: list[str] = ()) -> tuple[list[str], dict[str, str]]:
    """`seggpt-lab fit`'s arguments for `params` (the command's own, then `extra` and --key=value where ${args}
    stands: the parameters have the last word), and the environment the command's ${env} sets."""
    command, env, args = config["command"], {}, []
    i = 0
    while i < len(command):
        token = command[i]
        if token == "${env}":  # /usr/bin/env NAME=value...: taken as the trial's environment
            while i + 1 < len(command) and "=" in command[i + 1] and not command[i + 1].startswith("-"):
                name, _, value = command[i + 1].partition("=")
                env[name] = value
                i += 1
        elif token == "${args}":
            args += [*extra, *(f"--{k}={as_arg(v)}" for k, v in params.items())]
        elif token != "${program}":
            args.append(token)
        i += 1
    return args[1:], env  # args[0] is "fit"


def check(config: dict, path: Path) -> None:
    """Before any trial: every parameter is a LightningCLI key of the command, with a value the engine would give
    it, and the metric is one that such a run logs (as its classes declare, `cli.logged_metrics`)."""
    import sweeps

    from seggpt_lab.cli import logged_metrics, resolved_config

    first = sweeps.next_run(config, [])
    params = {k: v["value"] for k, v in (first.config if first else {}).items()}
    args, _ = fit_args(config, params)
    try:
        resolved = resolved_config(["fit", *args])
    except ValueError as e:
        raise SweepError(f"{path}: parameters or command: {e}") from None
    names = logged_metrics(resolved)
    metric = config["metric"]["name"]
    if names is not None and metric not in names:
        raise SweepError(f"{path}: metric.name: no trial logs {metric!r}; a trial logs {', '.join(sorted(names))}")


class Sweep:
    """One sweep folder: its state file, its trials and the engine's next proposal."""

    def __init__(self, path: Path, folder: Path, config: dict | None = None) -> None:
        self.path, self.folder = path, folder
        self.config = load(path) if config is None else config
        self.name = self.config.get("name") or path.stem
        state = folder / STATE
        if state.is_file():
            saved = json.loads(state.read_text())
            if saved["config"] != json.loads(json.dumps(self.config)):
                raise SweepError(f"{path}: differs from the file that began the sweep in {folder}; give another "
                                 "--dir, or restore the file to resume")
            self.trials = saved["trials"]
        else:
            self.trials = []
        for trial in self.trials:
            if trial["status"] == "running":  # its runner died, and it with its runner: ended at its last output
                log = folder / "trials" / trial["name"] / "output.log"
                self.finish(trial, "failed", "the sweep stopped while it ran (killed or crashed); not run again",
                            log.stat().st_mtime if log.is_file() else None)

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {"file": str(self.path), "name": self.name, "config": self.config, "trials": self.trials}
        write_atomic(self.folder / STATE, (json.dumps(state, indent=1) + "\n").encode())

    def finish(self, trial: dict, status: str, reason: str | None = None, ended: float | None = None) -> None:
        trial.update(status=status, reason=reason, ended=max(ended or time.time(), trial["started"]))
        self.save()

    @property
    def metric(self) -> str:
        return self.config["metric"]["name"]

    def runs(self) -> list:
        """The trials as the engine's `SweepRun`s: finished and early-stopped ones with their metrics."""
        import sweeps

        states = {"finished": "finished", "stopped": "finished", "failed": "failed", "running": "running"}
        runs = []
        for trial in self.trials:
            history = read_history(self.folder / "trials" / trial["name"])
            # by the fields' aliases, as W&B's API names them: sweeps 0.2 under pydantic 2 takes no other name
            runs.append(sweeps.SweepRun(name=trial["name"], state=sweeps.RunState(states[trial["status"]]),
                                        config={k: {"value": v} for k, v in trial["params"].items()},
                                        sampledHistory=history, summaryMetrics=summary(history)))
        return runs

    def propose(self) -> dict | None:
        """The engine's next parameters, given every trial so far; None when a grid is done."""
        import sweeps

        run = sweeps.next_run(self.config, self.runs())
        return None if run is None else {k: plain(v["value"]) for k, v in run.config.items()}

    def should_stop(self, trial: dict) -> bool:
        """Hyperband's verdict on a running trial (the file's early_terminate)."""
        if not self.config.get("early_terminate"):
            return False
        import sweeps

        return trial["name"] in {r.name for r in sweeps.stop_runs(self.config, self.runs())}

    def best_first(self) -> list[dict]:
        sign = -1 if self.config["metric"]["goal"] == "maximize" else 1
        return sorted(self.trials, key=lambda t: (t.get("value") is None, sign * (t.get("value") or 0)))


def plain(value):
    """numpy scalars (the engine's) as Python ones, for JSON and the command line."""
    return value.item() if hasattr(value, "item") else value


def read_history(folder: Path) -> list[dict]:
    """A trial's reported rows (`callbacks.TrialReport`); a half-written last line is left for the next read."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def summary(history: list[dict]) -> dict:
    """Each figure's last reported value, as a W&B run's summary holds it."""
    out: dict = {}
    for row in history:
        out.update(row)
    return out


def _die_with_parent() -> None:
    """In the trial's process (Linux): end it with SIGTERM when the sweep's process dies, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: a killed sweep leaves its trial running to its end


def _tee(stream, sink, log: Path) -> None:
    """The trial's output, as it comes (progress bars included), to the console and to its log file."""
    with open(log, "ab") as f:
        for chunk in iter(lambda: stream.read1(65536), b""):
            sink.write(chunk)
            sink.flush()
            f.write(chunk)


def failure(log: Path) -> str:
    """What ended a trial, from its output: the last one-line error of seggpt-lab (its own, or its evaluation's),
    else the last exception, else the last line that is not W&B's closing chatter."""
    text = log.read_bytes()[-50000:].decode(errors="replace") if log.is_file() else ""
    lines = [x.strip() for x in re.sub(r"\x1b\[[0-9;]*m", "", text).replace("\r", "\n").splitlines() if x.strip()]
    ours = [x for x in lines if x.startswith("seggpt-lab: error:")]
    raised = [x for x in lines if re.match(r"[\w.]*(Error|Exception|Interrupt)\b", x)]
    rest = [x for x in lines if not x.startswith("wandb:")]
    return (ours or raised or rest or ["no output"])[-1]


def run_trial(sweep: Sweep, trial: dict) -> None:
    """One trial to its end: `seggpt-lab fit` in a process of its own, its output shown and kept in output.log."""
    folder = sweep.folder / "trials" / trial["name"]
    folder.mkdir(parents=True, exist_ok=True)
    # the runner's own arguments: the logger (W&B offline, in the trial's folder), the folder for everything else
    args, env = fit_args(sweep.config, trial["params"], [
        "--trainer.logger=lightning.pytorch.loggers.WandbLogger", f"--trainer.logger.init_args.save_dir={folder}",
        f"--trainer.logger.init_args.project={sweep.config.get('project') or PROGRAM}",
        f"--trainer.default_root_dir={folder}"])
    command = [sys.executable, "-m", "seggpt_lab.cli", "fit", *args]
    env = {**os.environ, **env, "WANDB_MODE": "offline", "WANDB_RUN_GROUP": sweep.name, "WANDB_NAME": trial["name"],
           "WANDB_JOB_TYPE": "trial", TRIAL_ENV: str(folder)}
    (folder / "command.txt").write_text(" ".join(command) + "\n")
    log = folder / "output.log"
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    trial["pid"] = process.pid
    sweep.save()
    tee = threading.Thread(target=_tee, args=(process.stdout, sys.stdout.buffer, log), daemon=True)
    tee.start()
    stopping = False
    try:
        while process.poll() is None:
            time.sleep(POLL_S)
            if not stopping and sweep.should_stop(trial):
                (folder / "stop").touch()  # TrialReport ends training after its next validation
                stopping = True
                print(f"[sweep {sweep.name}] {trial['name']}: early termination (hyperband)", flush=True)
    except BaseException as e:  # Ctrl-C or SIGTERM (`run`): the trial ends with the sweep, marked as such
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        sweep.finish(trial, "failed", f"the sweep was stopped ({type(e).__name__}) while it ran; not run again")
        raise
    tee.join()
    trial["value"] = summary(read_history(folder)).get(sweep.metric)
    if process.returncode != 0:
        code = process.returncode
        why = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        sweep.finish(trial, "failed", f"{why}: {failure(log)}")
    elif trial["value"] is None:
        sweep.finish(trial, "failed", f"finished without logging {sweep.metric}")
    else:
        sweep.finish(trial, "stopped" if stopping else "finished")


def describe(params: dict) -> str:
    return " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in params.items())


def trials_to_run(sweep: Sweep, count: int) -> Iterator[dict]:
    """New trials, each as the engine proposes it after the last has ended, until `count` trials exist in all."""
    while len(sweep.trials) < count:
        params = sweep.propose()
        if params is None:
            return
        trial = {"name": f"trial-{len(sweep.trials) + 1:03d}", "params": params, "status": "running",
                 "started": time.time(), "ended": None, "value": None, "reason": None}
        sweep.trials.append(trial)
        sweep.save()
        yield trial


def report(sweep: Sweep) -> list[dict]:
    """The table, best first: printed, and in trials.csv with every figure each trial reported; the metric's
    spread per parameter value (by_parameter.csv); sweep.png. The table and the picture are logged to W&B too."""
    keys = list(sweep.config["parameters"])
    rows, figures = [], {}
    for t in sweep.best_first():
        minutes = (t["ended"] - t["started"]) / 60 if t.get("ended") else None
        rows.append({"trial": t["name"], "status": t["status"], sweep.metric: t.get("value"),
                     **{k: t["params"].get(k) for k in keys},
                     "minutes": None if minutes is None else round(minutes, 2), "reason": t.get("reason") or ""})
        figures[t["name"]] = summary(read_history(sweep.folder / "trials" / t["name"]))
    names = sorted({k for f in figures.values() for k in f} - {"_step", sweep.metric})
    write_csv(sweep.folder / "trials.csv", [{**r, **{k: figures[r["trial"]].get(k) for k in names}} for r in rows])
    print(f"\nsweep {sweep.name}: {len(rows)} trials, best first ({sweep.config['metric']['goal']} {sweep.metric})")
    if rows:
        cells = [[k.rsplit(".", 1)[-1] for k in rows[0]]] + [[fmt(v) for v in r.values()] for r in rows]
        widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
        for c in cells:
            print("  " + "  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
    scored = [r for r in rows if r[sweep.metric] is not None]
    by_value = by_parameter(scored, keys, sweep.metric)
    if by_value:
        print(f"\n  {sweep.metric} by parameter value: trials, mean, spread (sample std), range")
        for r in by_value:
            print(f"  {r['parameter'].rsplit('.', 1)[-1]} = {r['value']}: {r['trials']} trials, mean {fmt(r['mean'])}, "
                  f"std {fmt(r['std'])}, {fmt(r['min'])} to {fmt(r['max'])}")
        write_csv(sweep.folder / "by_parameter.csv", by_value)
    if scored:
        picture = sweep_plot([{k: r[k] for k in keys} for r in scored], [r[sweep.metric] for r in scored],
                             sweep.metric)
        picture.save(sweep.folder / "sweep.png")
        log_summary(sweep, rows, picture)
    print(f"  table: {sweep.folder / 'trials.csv'}; picture: {sweep.folder / 'sweep.png'}")
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)


def by_parameter(rows: list[dict], keys: list[str], metric: str, most: int = 10) -> list[dict]:
    """The metric's mean, sample standard deviation and range per value of each parameter with `most` values or
    fewer (over seeds, when the other parameter is a seed)."""
    out = []
    for key in keys:
        values = sorted({json.dumps(r[key]) for r in rows})
        if not 1 < len(values) <= most:
            continue
        for value in values:
            scores = [r[metric] for r in rows if json.dumps(r[key]) == value]
            mean = sum(scores) / len(scores)
            std = math.sqrt(sum((x - mean) ** 2 for x in scores) / (len(scores) - 1)) if len(scores) > 1 else None
            out.append({"parameter": key, "value": json.loads(value), "trials": len(scores), "mean": mean, "std": std,
                        "min": min(scores), "max": max(scores)})
    return out


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def log_summary(sweep: Sweep, rows: list[dict], picture) -> None:
    """The table and the picture as one more offline W&B run in the sweep's group (job type sweep-summary)."""
    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")
    columns = list(rows[0])
    with wandb.init(project=sweep.config.get("project") or PROGRAM, group=sweep.name, name=f"{sweep.name}-summary",
                    job_type="sweep-summary", dir=str(sweep.folder), config={"sweep": dict(sweep.config)}) as run:
        run.log({"trials": wandb.Table(columns=columns, data=[[fmt(r[c]) for c in columns] for r in rows]),
                 "metric_by_parameter": wandb.Image(picture)})


@contextlib.contextmanager
def lock(folder: Path) -> Iterator[None]:
    """This process's hold on the sweep's folder: two runners on one folder would each take the other's running
    trial for a dead one. A POSIX record lock: the processes a run starts (trials, W&B's service) do not inherit it,
    and it ends with the process, however that ends."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SweepError(f"{folder}: another seggpt-lab sweep is running in this folder") from None
        yield


def run(path: Path, folder: Path, count: int | None) -> list[dict]:
    """The sweep to its end (`count` trials in all, else run_cap, else every grid point), then its report."""
    config = load(path)  # a bad file ends here, before the folder is made
    with lock(folder):
        sweep = Sweep(path, folder, config)
        if not sweep.trials:
            check(sweep.config, path)
        cap = count or sweep.config.get("run_cap")
        if cap is None and sweep.config["method"] != "grid":
            raise SweepError(f"{path}: run_cap: a {sweep.config['method']} sweep needs run_cap or --count")
        if cap is None:  # every point of the grid
            cap = math.prod(len(p.get("values", [None])) for p in sweep.config["parameters"].values())
        sweep.save()
        done = sum(t["status"] in DONE for t in sweep.trials)
        if done:
            print(f"[sweep {sweep.name}] resuming in {folder}: {done} trials done", flush=True)
        for trial in trials_to_run(sweep, cap):
            timed = [(t["ended"] - t["started"]) / 60 for t in sweep.trials if t["status"] in DONE]
            left = ""
            if timed:  # this trial and those after it, at the mean pace so far
                left = f" (about {sum(timed) / len(timed) * (cap - len(sweep.trials) + 1):.0f} min left)"
            print(f"[sweep {sweep.name}] {trial['name']} of {cap}: {describe(trial['params'])}{left}", flush=True)
            run_trial(sweep, trial)
            best = sweep.best_first()[0]
            minutes = (trial["ended"] - trial["started"]) / 60
            why = f" ({trial['reason']})" if trial["reason"] else ""
            print(f"[sweep {sweep.name}] {trial['name']} {trial['status']} in {minutes:.1f} min: {sweep.metric} = "
                  f"{fmt(trial['value'])}{why}; best so far {best['name']} {fmt(best.get('value'))}", flush=True)
        return report(sweep)


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through `run_trial`, which ends the trial and records why


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seggpt-lab sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="a W&B sweep file (recipes/sweeps/*.yaml)")
    parser.add_argument("--count", type=int,
                        help="trials in all, resumed ones included (default: run_cap, or a grid's size)")
    parser.add_argument("--dir", type=Path, help="the sweep's folder (default: outputs/sweeps/<file name>)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        run(args.file, args.dir or Path("outputs/sweeps") / args.file.stem, args.count)
    except SweepError as e:
        print(f"seggpt-lab sweep: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The console script `seggpt-lab`: `sweep` (`seggpt_lab.sweep`, a runner of `fit` processes), else LightningCLI's
fit / validate / test / predict (`seggpt_lab.cli`)."""

from __future__ import annotations

import sys

from seggpt_lab import cli


def entry() -> None:
    if sys.argv[1:2] == ["sweep"]:
        from seggpt_lab.sweep import main as sweep  # the engine's scikit-learn only when a sweep runs

        raise SystemExit(sweep(sys.argv[2:]))
    cli.entry()

"""A callback that kills its own `seggpt-lab fit` process with SIGKILL halfway through writing a checkpoint."""

from __future__ import annotations

import builtins
import os
import signal

from lightning.pytorch import Callback, LightningModule, Trainer


class _KillingFile:
    """A binary file opened for writing whose first write stops halfway, with SIGKILL: nothing after it runs."""

    def __init__(self, file) -> None:
        self._file = file

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        self._file.write(data[: len(data) // 2])
        self._file.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable: the process is gone")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def __getattr__(self, name: str):
        return getattr(self._file, name)


class KillDuringSave(Callback):
    """After optimiser step `step`, the next file opened with mode "wb" (the checkpoint ModelCheckpoint writes
    then, wherever the CheckpointIO stages it) is killed in mid-write. Lightning runs ModelCheckpoint after
    every other callback, so its save is what comes next."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step != self.step:
            return
        real_open = builtins.open

        def killing_open(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            return _KillingFile(handle) if mode == "wb" else handle

        builtins.open = killing_open

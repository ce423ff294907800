"""Files replaced whole: a reader, or a run resumed after a crash or a SIGKILL mid-write, finds the old contents or
the new ones, never a mix (checkpoints, shard indexes, a sweep's state)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[IO[bytes]]:
    """A file to write `path`'s new contents to: PATH.tmp in the same folder, fsynced, then `os.replace`d over it;
    whoever reads `path` (or resumes after a crash or a SIGKILL mid-write) finds the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")  # same folder, so the rename is atomic; not *.ckpt, so never "last"
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # the rename is durable once the folder's entry is on disk
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def write_atomic(path: str | Path, data: bytes) -> None:
    """`data` as the whole of `path`, atomically (`replacing`)."""
    with replacing(Path(path)) as f:
        f.write(data)

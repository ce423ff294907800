"""Conversion throughput of `seggpt-lab-data convert` on this machine, in images per second.

Converts the real DAVIS-2016 sample (../shared/data, or $SEGGPT_LAB_SHARED_DATA) and N synthetic
scenes into a temporary folder with every core, and prints images/s for each.

    python benchmarks/convert_speed.py [--synthetic 10000] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from datamodules.convert import convert
from datamodules.sources import get_source


def timed_convert(name: str, root: str | None, split: str, workers: int, limit: int | None = None) -> None:
    source = get_source(name)(root, split)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        index = convert(source, out, shard_size=1000, workers=workers, limit=limit, progress=False)
        seconds = time.perf_counter() - start
    n = index["num_samples"]
    print(f"{name:<10} {split:<10} {n:>6} images in {seconds:6.1f} s = {n / seconds:7.1f} images/s "
          f"({workers} workers)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=10000, help="synthetic scenes to convert")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    shared = Path(os.environ.get("SEGGPT_LAB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    timed_convert("davis", str(shared / "davis2016" / "DAVIS"), "2016-val", args.workers)
    timed_convert("synthetic", None, "train", args.workers, limit=args.synthetic)


if __name__ == "__main__":
    main()

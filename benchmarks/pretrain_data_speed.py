"""Pretraining input pipeline throughput at the paper's 448 x 448 views, in pairs per second per worker.

Converts the real DAVIS-2016 sample (854 x 480 JPEG frames; ../shared/data or $SEGGPT_LAB_SHARED_DATA)
and N synthetic 512 x 512 PNG scenes into a temporary folder, then draws batches from
`PretrainDataModule` in the main process (num_workers=0: exactly the work one DataLoader worker does:
shard reading, decoding, pairing, crops, jitter, colouring, patch masks, collation) and prints pairs/s.
Each setting runs after a warm-up batch; a DataLoader with W workers yields up to W times the rate.

    python benchmarks/pretrain_data_speed.py [--batches 30] [--batch-size 8] [--synthetic 200]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from datamodules.convert import convert
from datamodules.pretrain import PretrainDataModule, ShardSource
from datamodules.sources import get_source


def pairs_per_second(folder: Path, split: str, batches: int, batch_size: int, **data) -> float:
    module = PretrainDataModule([ShardSource(str(folder), split=split)], size=(448, 448), patch_size=16,
                                batch_size=batch_size, num_workers=0, batches_per_epoch=batches + 1, **data)
    module.setup("fit")
    loader = iter(module.train_dataloader())
    next(loader)  # warm-up: opens the shard, fills the shuffle buffer's first samples
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--synthetic", type=int, default=200, help="synthetic 512 px scenes to convert")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a DataLoader worker runs single-threaded
    shared = Path(os.environ.get("SEGGPT_LAB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    with tempfile.TemporaryDirectory() as out:
        convert(get_source("davis")(str(shared / "davis2016" / "DAVIS"), "2016-val"), out, progress=False)
        convert(get_source("synthetic")(None, "train", samples=args.synthetic, size=512), out, progress=False)
        davis, synthetic = (Path(out) / "davis", "2016-val"), (Path(out) / "synthetic", "train")
        runs = [  # label, shards, PretrainDataModule arguments
            ("DAVIS-2016 854x480 JPEG, defaults", davis, {}),
            ("DAVIS-2016, no colour jitter", davis, {"jitter": 0.0}),
            ("synthetic 512x512 PNG, defaults", synthetic, {}),
            ("synthetic, mix-context p=0.5", synthetic, {"mix_prob": 0.5}),
        ]
        print(f"one worker (1 thread), 448 x 448 views, batch {args.batch_size}, {args.batches} batches each")
        for label, (folder, split), data in runs:
            rate = pairs_per_second(folder, split, args.batches, args.batch_size, **data)
            print(f"  {label:<36} {rate:7.1f} pairs/s")


if __name__ == "__main__":
    main()

"""Pretraining input pipeline throughput at the paper's 448 x 448 views, in pairs per second per worker.

Converts the real DAVIS-2016 sample (854 x 480 JPEG frames; ../shared/data or $SEGGPT_LAB_SHARED_DATA)
and N synthetic 512 x 512 PNG scenes into a temporary folder, then draws batches from
`PretrainDataModule` in the main process (num_workers=0: exactly the work one DataLoader worker does:
shard reading, decoding, pairing, crops, jitter and colour draws, patch masks, collation) and prints
pairs/s. By default the colour jitter, the flips and the painting of the targets happen after the batch
reaches the accelerator (`on_device`, `augment.finish_batch`), so they are not timed; the "on_device=False"
line times the pipeline with them in the worker instead. Each setting runs after a warm-up batch; a
DataLoader with W workers yields up to W times the rate.

The floor (issue 7, target 3) is the rate of merely decoding the same images and masks: every sample of
the DAVIS shards decoded at full size (PIL, RGB array) with its label maps (both, sem.png and ins.png),
once per pair that uses it: a self-pair uses one sample, a partner pair two, so floor pairs/s = samples/s /
(1 + partner pairs / pairs), with the partner share the pipeline itself reports. The pipeline decodes less
than the floor where it can: JPEGs at the smallest DCT scale the crop allows, and only the label map a pair
colours. The second line therefore also compares it with a stricter floor that decodes only that map.
Floor and pipeline alternate in short rounds (each round's floor decodes its share of the samples) and the
median of the rounds' ratios is reported, so load on the machine affects both alike.

    python benchmarks/pretrain_data_speed.py [--batches 64] [--rounds 8] [--batch-size 8] [--synthetic 200]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datamodules.augment import PairTransform
from datamodules.convert import convert
from datamodules.pairing import PairSampler
from datamodules.pretrain import PretrainDataModule, ShardSource
from datamodules.schema import decode_png16
from datamodules.shards import iter_raw
from datamodules.sources import get_source


class Pipeline:
    """One worker's batches from one shard set; `rate(batches)` times the next ones, in pairs/s."""

    def __init__(self, folder: Path, split: str, batch_size: int, transform: dict | None = None, **data) -> None:
        transform = PairTransform(**{"size": (448, 448), "patch_size": 16, "on_device": True, **(transform or {})})
        module = PretrainDataModule([ShardSource(str(folder), split=split)], transform, PairSampler(),
                                    batch_size=batch_size, num_workers=0, batches_per_epoch=10**6, **data)
        module.setup("fit")
        self.loader, self.batch_size = iter(module.train_dataloader()), batch_size
        self.stats = next(self.loader)["stats"]  # warm-up: opens the shard, fills the shuffle buffer's first samples

    def rate(self, batches: int) -> float:
        start = time.perf_counter()
        for _ in range(batches):
            self.stats = next(self.loader)["stats"]
        return batches * self.batch_size / (time.perf_counter() - start)


def _used_map(sample: dict[str, bytes]) -> str:
    """The label map a pair of this sample colours: ins.png for instance data; sem.png (when present) otherwise (a
    panoptic sample is paired by one of its two maps, either of which costs about the same to decode)."""
    task = json.loads(sample["json"])["task"]
    return "ins.png" if task == "instance" or "sem.png" not in sample else "sem.png"


def decode_rate(raw: list[dict[str, bytes]], maps: str = "all") -> float:
    """Samples per second when all that is done is decoding each image and its label maps ("all"), or only the map
    its pairs colour ("used")."""
    start = time.perf_counter()
    for sample in raw:
        image = Image.open(io.BytesIO(sample["jpg"] if "jpg" in sample else sample["png"]))
        image = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))  # as the pipeline: no extra copy
        keys = ("sem.png", "ins.png") if maps == "all" else (_used_map(sample),)
        labels = [decode_png16(sample[k]) for k in keys if k in sample]
        assert image.shape[:2] == labels[0].shape
    return len(raw) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=8, help="alternations of pipeline and floor (DAVIS)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--synthetic", type=int, default=200, help="synthetic 512 px scenes to convert")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a DataLoader worker runs single-threaded
    shared = Path(os.environ.get("SEGGPT_LAB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    with tempfile.TemporaryDirectory() as out:
        convert(get_source("davis")(str(shared / "davis2016" / "DAVIS"), "2016-val"), out, progress=False)
        convert(get_source("synthetic")(None, "train", samples=args.synthetic, size=512), out, progress=False)
        davis, synthetic = (Path(out) / "davis", "2016-val"), (Path(out) / "synthetic", "train")
        print(f"one worker (1 thread), 448 x 448 views, batch {args.batch_size}")
        pipeline = Pipeline(*davis, args.batch_size)
        raw = list(iter_raw(davis[0] / f"{davis[1]}-index.json"))
        chunk = -(-len(raw) // args.rounds)  # each round decodes its share of the samples...
        rounds = []
        for k in range(args.rounds):  # ...right after the pipeline's round, so both see the machine alike
            share = raw[k * chunk : (k + 1) * chunk]
            rounds.append((pipeline.rate(args.batches // args.rounds), decode_rate(share), decode_rate(share, "used")))
        per_pair = 1 + pipeline.stats["pairs/partner"] / pipeline.stats["pairs/pairs"]
        rate, samples, used = (statistics.median(r) for r in zip(*rounds, strict=True))
        ratios = sorted(r * per_pair / f for r, f, _ in rounds)
        strict = statistics.median(r * per_pair / u for r, _, u in rounds)
        print(f"  DAVIS-2016 854x480 JPEG, defaults    {rate:7.1f} pairs/s   decode-only floor "
              f"{samples / per_pair:7.1f} pairs/s ({samples:.1f} samples/s, {per_pair:.2f} samples per pair)   "
              f"pipeline / floor {statistics.median(ratios):.0%} (rounds {ratios[0]:.0%}-{ratios[-1]:.0%})   "
              "(target >= 60%)")
        print(f"  {'':36} {'':7}            floor decoding only the map a pair colours {used / per_pair:7.1f} "
              f"pairs/s   pipeline / that floor {strict:.0%}")
        runs = [  # label, shards, PretrainDataModule arguments (PairTransform's under "transform")
            ("DAVIS-2016, no colour jitter", davis, {"transform": {"jitter": 0.0}}),
            ("DAVIS-2016, on_device=False", davis, {"transform": {"on_device": False}}),
            ("synthetic 512x512 PNG, defaults", synthetic, {}),
            ("synthetic, mix-context p=0.5", synthetic, {"mix_prob": 0.5}),
        ]
        for label, (folder, split), data in runs:
            print(f"  {label:<36} {Pipeline(folder, split, args.batch_size, **data).rate(args.batches):7.1f} pairs/s")


if __name__ == "__main__":
    main()

"""Synthetic data speed: samples/s for generating and encoding shards' worth of scenes on this machine.

Each sample goes through what `seggpt-lab-data convert synthetic` does for it: `Synthetic.load`
(generate the scene, PNG-encode the image) and `schema.encode_sample` (PNG-encode the label maps, write the
JSON), in `--workers` processes. A single-process pass first splits one sample's time into its
stages. The target: the default 10,000-sample train split in under a minute on 2 cores.

    python benchmarks/synthetic_speed.py [--samples 4000] [--workers 2] [--size 128]
"""

from __future__ import annotations

import argparse
import io
import os
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from PIL import Image

from datamodules import schema
from datamodules.sources.synthetic import PNG_LEVEL, Synthetic


def encoded_size(source: Synthetic, item: int) -> int:
    """Bytes of one sample's tar members."""
    return sum(len(v) for k, v in schema.encode_sample(source.load(item)).items() if k != "__key__")


def stages(source: Synthetic, n: int) -> dict[str, float]:
    """Milliseconds per sample for each stage, one process."""
    times = dict.fromkeys(("scene", "image png", "label pngs + json"), 0.0)
    for item in range(n):
        start = time.perf_counter()
        scene = source.scenes.scene(item)
        mid = time.perf_counter()
        Image.fromarray(scene.rgb).save(io.BytesIO(), format="PNG", compress_level=PNG_LEVEL)
        end = time.perf_counter()
        schema.encode_sample(schema.Sample("k", b"", "png", {"task": "panoptic"}, scene.sem, scene.ins))
        times["scene"] += mid - start
        times["image png"] += end - mid
        times["label pngs + json"] += time.perf_counter() - end
    return {k: 1e3 * v / n for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()

    source = Synthetic(split="train", samples=args.samples, size=args.size)
    for stage, ms in stages(source, min(500, args.samples)).items():
        print(f"{stage:>18}: {ms:5.2f} ms/sample (1 process)")

    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        sizes = list(pool.map(partial(encoded_size, source), source.items(), chunksize=64))
    elapsed = time.perf_counter() - start
    rate = args.samples / elapsed
    print(f"{args.samples} samples of {args.size}x{args.size} in {elapsed:.1f} s with {args.workers} processes: "
          f"{rate:.0f} samples/s, {sum(sizes) / len(sizes) / 1024:.1f} KB/sample; "
          f"10,000 samples would take {10_000 / rate:.0f} s")


if __name__ == "__main__":
    main()

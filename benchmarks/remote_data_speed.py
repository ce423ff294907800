"""Pretraining input pipeline from object storage and HTTP against from local disk, in pairs per second per worker.

Converts N synthetic 512 x 512 scenes into shards (`--shard-size` each) in a temporary folder, uploads them to a real
S3-compatible server started on the loopback address (SeaweedFS, as the tests run it), and draws 448 x 448 batches
from `PretrainDataModule` (its shuffle buffer filled first: the steady state) in the main process (num_workers=0:
exactly one DataLoader worker's work) reading:

- local: the folder on disk;
- s3, http: the server's S3 gateway and its HTTP filer over loopback (what the remote path itself costs: ranged
  requests, whole shards in memory, the TLS-free client stack);
- s3 over a slow link, in_flight k: through a proxy, in its own process, that holds each answer `--latency` seconds
  before the first byte and then delivers `--rate` MB/s per connection (S3 from another region, or a busy
  gateway), with k ranged requests of `--block-mb` running ahead of the reader (and the next shard's first k
  opened meanwhile; 0: every block asked for when needed).

Settings alternate in rounds of `--batches` batches, each after a warm-up batch, and the median of each setting's
ratio to local disk over the rounds is reported, so load on the machine affects all alike. The smallest `in_flight`
within 5% of local disk keeps a worker busy on that link; with it, the data in flight per shard stream in MB and
in shards.

    python benchmarks/remote_data_speed.py [--samples 240] [--shard-size 120] [--batches 8] [--rounds 3]
        [--latency 0.05] [--rate 20] [--block-mb 4.19] [--in-flight 0 1 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.datamodules.object_store: the servers

from datamodules.augment import PairTransform  # noqa: E402
from datamodules.convert import convert  # noqa: E402
from datamodules.pairing import PairSampler  # noqa: E402
from datamodules.pretrain import PretrainDataModule, ShardSource  # noqa: E402
from datamodules.remote import Network  # noqa: E402
from datamodules.sources.synthetic import Synthetic  # noqa: E402
from tests.datamodules.object_store import Fault, FaultProxy, SeaweedFS  # noqa: E402


def _proxy(upstream: str, latency: float, rate: float, urls: mp.Queue) -> None:
    """A slow link in its own process (its threads must not take the measured worker's CPU or GIL)."""
    proxy = FaultProxy(upstream)
    proxy.add(Fault("slow", lambda method, path: True, times=None, latency=latency, rate=rate))
    urls.put(proxy.url)
    proxy.thread.join()


class Pipeline:
    """One worker's batches from one source; `rate(batches)` times the next ones, in pairs/s."""

    def __init__(self, path: str, batch_size: int, shuffle: int, network: Network) -> None:
        transform = PairTransform(size=(448, 448), patch_size=16, on_device=True)
        module = PretrainDataModule([ShardSource(path)], transform, PairSampler(), batch_size=batch_size,
                                    num_workers=0, batches_per_epoch=10**6, shuffle=shuffle, network=network)
        module.setup("fit")
        self.loader, self.batch_size = iter(module.train_dataloader()), batch_size
        # warm-up until the shuffle buffer is full: while it fills, the stream reads two samples per sample it yields
        for _ in range(-(-2 * shuffle // batch_size)):
            next(self.loader)

    def rate(self, batches: int) -> float:
        start = time.perf_counter()
        for _ in range(batches):
            next(self.loader)
        return batches * self.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=240)
    parser.add_argument("--shard-size", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shuffle", type=int, default=100, help="shuffle buffer (filled before the timing)")
    parser.add_argument("--batches", type=int, default=8, help="batches per setting and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds before the first byte, per request")
    parser.add_argument("--rate", type=float, default=20.0, help="MB/s per connection")
    parser.add_argument("--block-mb", type=float, default=Network.block_size / 1e6,
                        help="MB per ranged request (network.block_size; default: its default)")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[0, 1, 2])
    opts = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp, SeaweedFS() as store:
        os.environ.update(store.env)
        convert(Synthetic(None, "train", samples=opts.samples, size=512), tmp, shard_size=opts.shard_size,
                progress=False)
        folder = Path(tmp) / "synthetic"
        shard_mb = sum(p.stat().st_size for p in folder.glob("*.tar")) / len(list(folder.glob("*.tar"))) / 1e6
        s3 = store.upload(folder, "bench/synthetic")
        urls: mp.Queue = mp.get_context("spawn").Queue()
        link = mp.get_context("spawn").Process(target=_proxy, args=(f"127.0.0.1:{store.s3_port}", opts.latency,
                                                                    opts.rate * 1e6, urls), daemon=True)
        link.start()
        proxy_url = urls.get(timeout=60)
        try:
            settings: dict[str, Pipeline] = {}
            for name, path, endpoint, in_flight in [
                ("local disk", str(folder), None, Network.in_flight),
                ("s3, loopback", s3, store.s3_url, Network.in_flight),
                ("http, loopback", f"{store.http_url}/bench/synthetic", None, Network.in_flight),
                *((f"s3 over the link, in_flight {k}", s3, proxy_url, k) for k in opts.in_flight),
            ]:
                network = Network(in_flight=in_flight, endpoint_url=endpoint, block_size=int(opts.block_mb * 1e6))
                settings[name] = Pipeline(path, opts.batch_size, opts.shuffle, network)
            rates: dict[str, list[float]] = {name: [] for name in settings}
            for _ in range(opts.rounds):
                for name, pipeline in settings.items():
                    rates[name].append(pipeline.rate(opts.batches))
        finally:
            link.terminate()

    print(f"{opts.samples} scenes of 512 px in shards of {opts.shard_size} ({shard_mb:.1f} MB each); 448 px views, "
          f"batch {opts.batch_size}, shuffle buffer {opts.shuffle}; one worker (the main process), 1 compute thread; "
          f"median of {opts.rounds} "
          f"rounds of {opts.batches} batches; link: {opts.latency * 1000:.0f} ms to the first byte, "
          f"{opts.rate:g} MB/s per connection; requests of {opts.block_mb:.2f} MB")
    local = rates["local disk"]
    busy = None
    for name, values in rates.items():
        ratio = statistics.median(v / lo for v, lo in zip(values, local, strict=True))
        print(f"  {name:34s} {statistics.median(values):6.1f} pairs/s   {ratio:5.2f} x local disk")
        if name.startswith("s3 over the link") and busy is None and ratio >= 0.95:
            busy = int(name.rsplit(" ", 1)[1])
    if busy is None:
        print(f"no in_flight up to {max(opts.in_flight)} keeps a worker busy on this link")
    else:
        print(f"in_flight that keeps a worker busy on this link: {busy} requests of {opts.block_mb:.2f} MB ahead, "
              f"{busy * opts.block_mb:.1f} MB = {busy * opts.block_mb / shard_mb:.2f} shards in flight per stream")


if __name__ == "__main__":
    main()

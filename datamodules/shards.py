"""Reading shard sets written by `seggpt-lab-data convert`: their index, their URLs, their samples.

Streams go through webdataset and so read any URL it opens; `ShardReader` gives evaluation loaders random access by
key. The training streams (`SampleStream`, `MixedStream`, `pretrain.PretrainStream`) are `SeededStream`s.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
import struct
import tarfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from datamodules import remote
from datamodules.remote import Network, NetworkError
from datamodules.schema import IMAGE_ERRORS, InvalidSample, Sample, decode_sample, validate

log = logging.getLogger(__name__)


def find_indexes(folder: str | Path) -> list[Path]:
    """The `<split>-index.json` files of a source folder, sorted; a one-line error when there are none."""
    folder = Path(folder)
    found = sorted(folder.glob("*-index.json"))
    if not found:
        raise FileNotFoundError(f"{folder}: no <split>-index.json here; convert a source into it first "
                                "(seggpt-lab-data convert SOURCE --out ...)")
    return found


def read_index(path: str | Path, network: Network = Network()) -> dict:
    """An index, from a local path or a URL (read as `network` says)."""
    return json.loads(remote.read_text(path, network))


def shard_urls(index_file: str | Path, network: Network = Network()) -> list[str]:
    """Paths (or URLs, beside a remote index) of the shards an index lists, in order."""
    folder = remote.parent(index_file)
    return [remote.join(folder, s["name"]) for s in read_index(index_file, network)["shards"]]


def shard_sizes(index_file: str | Path, network: Network = Network()) -> dict[str, int]:
    """{shard path: sample count} from an index, for a stream to count the samples a damaged shard lost."""
    folder = remote.parent(index_file)
    return {remote.join(folder, s["name"]): int(s["samples"]) for s in read_index(index_file, network)["shards"]}


def open_shards(urls: Iterable[str], network: Network = Network(),
                handler: Callable[[str, Exception], bool] | None = None) -> Iterator[dict[str, Any]]:
    """Shard URLs -> `{"url", "stream"}` for webdataset's tar stage: local files and `pipe:` commands opened by
    webdataset, remote shards streamed in retried blocks (`remote.RemoteShard`). A shard that does not open goes
    to `handler(url, exception)`: True goes on with the next, False stops; without one, it raises."""
    urls = iter(urls)
    first = next(urls, None)
    if first is None:
        return
    urls = chain([first], urls)
    opened = remote.open_remote(urls, network) if remote.is_remote(first) else ((url, None) for url in urls)
    for url, stream in opened:
        try:
            if isinstance(stream, Exception):
                raise stream
            stream = stream or wds.gopen(url)
        except Exception as exn:
            if handler is not None and handler(url, exn):
                continue
            raise
        yield {"url": url, "stream": stream}


def iter_raw(index_file: str | Path) -> Iterator[dict[str, bytes]]:
    """Every sample of one split, in shard order, as undecoded tar members."""
    shards = open_shards(shard_urls(index_file))
    yield from wds.tariterators.group_by_keys(wds.tariterators.tar_file_expander(shards))


def iter_samples(index_file: str | Path) -> Iterator[Sample]:
    """Every sample of one split, in shard order, decoded to Sample."""
    return map(decode_sample, iter_raw(index_file))


# webdataset's `base_plus_ext`: the key is the name up to the first dot of its last path part
_MEMBER = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
Location = tuple[str, int, int]  # (shard path, payload offset, payload size)


class ShardReader:
    """Random access by key to a shard set (`<split>-index.json`), local or remote: tar headers scanned once (a remote
    shard streamed past), then each read fetches the span of the members it needs (a remote one in a ranged
    request), so a reader is cheap to pickle into DataLoader workers."""

    def __init__(self, index_file: str | Path, network: Network = Network()) -> None:
        self.index_file, self.network = index_file if remote.is_remote(index_file) else Path(index_file), network
        if not remote.exists(self.index_file, network):
            raise FileNotFoundError(f"{self.index_file}: no such index file; convert a source first "
                                    "(seggpt-lab-data convert SOURCE --out ...)")
        self.members: dict[str, dict[str, Location]] = {}
        urls = shard_urls(self.index_file, network)
        if remote.is_remote(self.index_file):  # streamed: the offsets come from the headers as they pass
            tars = ((s["url"], tarfile.open(fileobj=s["stream"], mode="r|")) for s in open_shards(urls, network))
        else:
            for shard in urls:
                if not Path(shard).is_file():
                    raise FileNotFoundError(f"{shard}: shard listed in {self.index_file} is missing")
            # uncompressed: iterating seeks from header to header
            tars = ((shard, tarfile.open(shard, "r:")) for shard in urls)
        for shard, tar in tars:
            with tar:
                for info in tar:
                    match = _MEMBER.match(info.name)
                    if not info.isfile() or match is None:
                        continue
                    key, ext = match.groups()
                    members = self.members.setdefault(key, {})
                    if ext in members:
                        raise ValueError(f"{shard}: member {info.name} appears twice in the shard set")
                    members[ext] = (shard, info.offset_data, info.size)

    def __len__(self) -> int:
        return len(self.members)

    def keys(self) -> list[str]:
        """Every sample key, in shard order (the converter's item order)."""
        return list(self.members)

    def _locations(self, key: str) -> dict[str, Location]:
        try:
            return self.members[key]
        except KeyError:
            raise KeyError(f"{key}: no such sample in {self.index_file}") from None

    def _read(self, key: str, exts: list[str]) -> dict[str, bytes]:
        """The members `exts` of one sample: per shard, one read (or ranged request) of the span holding them."""
        locations = self._locations(key)
        spans: dict[str, list[tuple[str, int, int]]] = {}
        for ext in exts:
            shard, offset, size = locations[ext]
            spans.setdefault(shard, []).append((ext, offset, size))
        raw = {"__key__": key}
        for shard, members in spans.items():
            lo, hi = min(m[1] for m in members), max(m[1] + m[2] for m in members)
            if remote.is_remote(shard):
                data = remote.read_bytes(shard, self.network, lo, hi)
            else:
                with open(shard, "rb") as f:
                    f.seek(lo)
                    data = f.read(hi - lo)
            raw.update({ext: data[offset - lo: offset - lo + size] for ext, offset, size in members})
        return raw

    def meta(self, key: str) -> dict:
        """The sample's json metadata (only that member is read)."""
        if "json" not in self._locations(key):
            raise KeyError(f"{key}: sample has no json member in {self.index_file}")
        return json.loads(self._read(key, ["json"])["json"])

    def sample(self, key: str) -> Sample:
        """The whole sample, decoded."""
        return decode_sample(self._read(key, list(self._locations(key))))


# --- streaming pipeline: per-rank shard lists, one builder, weighted mixing, fixed-length epochs ---


def rank_shards(urls: list[str], rank: int, world_size: int) -> list[str]:
    """`urls[rank::world_size]`; with fewer shards than ranks, the one shard `urls[rank % len(urls)]`, so that no
    rank is empty (an empty rank hangs DDP: webdataset/webdataset#188); a fixed stream then reads some samples on
    several ranks."""
    if not urls:
        raise ValueError("rank_shards: no shard URLs")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank_shards: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if len(urls) < world_size:
        return [urls[rank % len(urls)]]
    return urls[rank::world_size]


# what damaged shard bytes raise while tars are read and samples decoded and validated: tarfile errors, I/O and
# image decoding errors (OSError), malformed members (ValueError: bad json or UTF-8, a member name twice,
# `schema.SampleError`), PIL's broken-PNG SyntaxError, a cut zlib stream. Anything else is a bug and propagates.
DATA_ERRORS = (tarfile.TarError, ValueError, EOFError, zlib.error, struct.error, *IMAGE_ERRORS)


class TooManySkips(RuntimeError):
    """A source skipped more of its samples than `max_rate` allows: its shards are broken, not a few samples."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # webdataset appends the stream and URL to the args of what passes its tar stage
        return self.message


def skip_reason(exn: BaseException) -> str:
    """The name a skip is counted under: the broken rule for `InvalidSample`, `network` for a remote shard that could
    not be read (`remote.NetworkError`), else the exception's type."""
    return exn.reason if isinstance(exn, InvalidSample | NetworkError) else type(exn).__name__


# skips that are not corruption: a sample with nothing to colour, crops that left no label in view. They are
# counted but not judged against `max_rate` (a source of small objects is not broken).
UNUSABLE = ("unpaired", "empty")


class SkipCounter:
    """Counts what one source reads and skips (`counts` by reason), per process: each worker judges its own.

    Pass it as `handler=` to every stage that can fail; call `read()` for each sample through and `skip(reason)` for
    one dropped later. Once `min_samples` are seen it raises `TooManySkips` when the corrupt share passes
    `max_rate`, or when `min_samples` in a row were skipped, so a broken source stops the run instead of starving it.
    """

    def __init__(self, source: str = "", max_rate: float = 1.0, min_samples: int = 100) -> None:
        if not 0 <= max_rate <= 1 or min_samples < 1:
            raise ValueError(f"need 0 <= max_rate <= 1 and min_samples >= 1, got {max_rate} and {min_samples}")
        self.source, self.max_rate, self.min_samples = source, max_rate, min_samples
        self.counts: Counter[str] = Counter()
        self.seen = 0
        self.streak = 0  # samples skipped since the last usable one
        self._streak_before_read = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def corrupt(self) -> int:
        return sum(n for reason, n in self.counts.items() if reason not in UNUSABLE)

    def read(self) -> None:
        """One sample came through the reading stages."""
        self.seen += 1
        self._streak_before_read, self.streak = self.streak, 0

    def skip(self, reason: str, detail: str = "", after_read: bool = True, count: int = 1) -> None:
        """Count `count` dropped samples (`after_read`: the one `read` just counted); raise when too many are."""
        self.counts[reason] += count
        if after_read:
            self.streak = self._streak_before_read + count  # the sample just read was not usable after all
        else:
            self.seen += count
            self.streak += count
        name = self.source or "shards"
        (log.debug if reason in UNUSABLE else log.warning)("%s: skipped a sample (%d so far): %s%s", name,
                                                           self.total, reason, f": {detail}" if detail else "")
        if self.seen < self.min_samples:
            return
        if self.corrupt > self.max_rate * self.seen:
            if 2 * self.counts[NetworkError.reason] > self.corrupt:
                problem = f"{self.corrupt} of the {self.seen} samples were lost, most to network failures"
                advice = "check the server, the network and the shard URLs, or raise data.max_skip_rate"
            else:
                problem = f"{self.corrupt} of the {self.seen} samples read were corrupt"
                advice = "check or re-convert its shards, or raise data.max_skip_rate"
            problem += f", more than max_skip_rate {self.max_rate:g}"
        elif self.streak >= self.min_samples:
            problem, advice = f"the last {self.streak} samples were all skipped", "check its shards, labels and task"
        else:
            return
        raise TooManySkips(f"source {name}: {problem} ({self._detail()}; the last: {detail or reason}); {advice}")

    def __call__(self, exn: Exception) -> bool:
        if not isinstance(exn, DATA_ERRORS):
            raise exn
        self.skip(skip_reason(exn), str(exn).splitlines()[0] if str(exn) else "", after_read=False)
        return True  # webdataset: True = continue with the next sample

    def _detail(self) -> str:
        return ", ".join(f"{name}: {n}" for name, n in sorted(self.counts.items()))

    def __str__(self) -> str:
        detail = self._detail()
        return f"{self.source or 'shards'}: skipped {self.total}" + (f" ({detail})" if detail else "")


def worker_id() -> int:
    """This DataLoader worker's id; 0 in the main process."""
    info = get_worker_info()
    return 0 if info is None else info.id


def worker_seed(seed: int, rank: int, worker: int, epoch: int = 0) -> int:
    """A 64-bit seed for one worker of one rank in one epoch, by numpy's `SeedSequence` hash: nearby tuples give
    unrelated streams, where `seed + rank + worker` would overlap."""
    if min(seed, rank, worker, epoch) < 0:
        raise ValueError(f"seed, rank, worker and epoch must be non-negative, got {(seed, rank, worker, epoch)}")
    return int(np.random.SeedSequence([seed, rank, worker, epoch]).generate_state(1, np.uint64)[0])


class SeededStream(IterableDataset):
    """A stream that is a function of (seed, rank, DataLoader worker, pass) alone: a subclass implements `stream`,
    given the one seed it may draw with, `worker_seed(seed, rank, worker, pass)`; `EpochLoader` sets the pass. A
    stream that wraps others reads them with `iterate` for the same worker and pass."""

    def __init__(self, seed: int, rank: int = 0) -> None:
        super().__init__()
        self.seed, self.rank, self.epoch = seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        """Reseed the next iteration (EpochLoader calls it before it starts the workers)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator:
        return self.iterate(worker_id(), self.epoch)

    def iterate(self, worker: int, epoch: int) -> Iterator:
        """What DataLoader worker `worker` reads in pass `epoch`."""
        yield from self.stream(worker_seed(self.seed, self.rank, worker, epoch), worker, epoch)

    def stream(self, seed: int, worker: int, epoch: int) -> Iterator:
        """The items of one worker and pass, every draw seeded by `seed`."""
        raise NotImplementedError


class SampleStream(SeededStream):
    """Decoded `Sample`s from one rank's shards, a webdataset pipeline built per worker and pass (`sample_stream`)."""

    def __init__(self, urls: list[str], seed: int, rank: int, resampled: bool, shuffle: int,
                 handler: SkipCounter, sizes: dict[str, int] | None = None, lazy_labels: bool = False,
                 network: Network = Network()) -> None:
        super().__init__(seed, rank)
        if not urls:
            raise ValueError("sample_stream: no shard URLs for this rank (see rank_shards)")
        self.urls = list(urls)
        self.resampled, self.shuffle, self.handler, self.lazy_labels = resampled, shuffle, handler, lazy_labels
        self.network = network
        self.sizes = {u: sizes[u] for u in self.urls if u in sizes} if sizes else {}

    def pipeline(self, seed: int) -> wds.DataPipeline:
        if self.resampled:
            # each worker draws its own seeded shard sequence; splitting a resampled stream by worker adds nothing
            shards = [wds.ResampledShards(self.urls, seed=self.seed, worker_seed=lambda: seed, deterministic=True)]
        else:
            shards = [wds.SimpleShardList(self.urls), wds.split_by_worker]  # nodes were split by rank_shards
        return wds.DataPipeline(
            *shards,
            self._tar_samples,
            wds.shuffle(self.shuffle, initial=min(self.shuffle, 100), rng=random.Random(seed)) if self.shuffle > 1
            else None,
            # raw members -> Sample: decode and map in one stage
            wds.map(functools.partial(read_sample, lazy=self.lazy_labels), handler=self.handler),
        )

    def _tar_samples(self, shards: Iterator[dict[str, str]]) -> Iterator[dict[str, Any]]:
        """webdataset's tar stage, shard by shard (`open_shards`), counting what a shard lost: a tar cut at a member
        boundary just ends, and only its index (`sizes`) knows what is missing; a remote shard that stops answering
        loses the samples not read yet, under `network`, and a shard that does not open all of its own."""

        def unopened(url: str, exn: Exception) -> bool:
            if not isinstance(exn, DATA_ERRORS):
                raise exn
            detail = str(exn) if str(exn).startswith(url) else f"{url}: {exn}"  # a NetworkError names its URL
            self.handler.skip(skip_reason(exn), detail, after_read=False, count=self.sizes.get(url, 1))
            return True

        for shard in open_shards((s["url"] for s in shards), self.network, unopened):
            read, errors, failure = 0, 0, None

            def handler(exn: Exception) -> bool:
                nonlocal errors, failure
                if isinstance(exn, NetworkError):  # the rest of a remote shard is out of reach: counted below
                    failure = exn
                    return False
                errors += 1
                return self.handler(exn)

            files = wds.tariterators.tar_file_expander(iter([shard]), handler=handler)
            for raw in wds.tariterators.group_by_keys(files, handler=handler):
                if failure is not None:  # the sample the failure cut short, flushed as the shard ended: in `lost`
                    break
                read += 1
                yield raw
            lost = self.sizes.get(shard["url"], 0) - read - errors  # the errors were counted as skips already
            if failure is not None:
                detail = str(failure.args[0]).split(" @ ")[0]  # without what webdataset's stages appended
                self.handler.skip(failure.reason, detail, after_read=False, count=max(lost, 1))
            elif lost > 0:
                self.handler.skip("lost", f"{lost} samples of {shard['url']} never came out of the tar",
                                  after_read=False, count=lost)

    def check_workers(self, num_workers: int) -> None:
        """A fixed stream gives each DataLoader worker whole shards: more workers than shards leave some idle."""
        if not self.resampled and num_workers > len(self.urls):
            raise ValueError(f"source {self.handler.source or self.urls[0]}: {num_workers} DataLoader workers but "
                             f"only {len(self.urls)} shards for this rank, so some workers would read nothing; use "
                             f"num_workers <= {len(self.urls)}, more shards, or a resampled stream")

    def stream(self, seed: int, worker: int, epoch: int) -> Iterator[Sample]:
        for sample in self.pipeline(seed):
            self.handler.read()
            yield sample


def read_sample(raw: dict[str, bytes], lazy: bool = False) -> Sample:
    """Tar members -> a `Sample` checked against the schema (`schema.validate`), for the stream's decode stage; with
    `lazy` its label maps stay encoded until used (`Sample.label`)."""
    return validate(decode_sample(raw, lazy))


def sample_stream(urls: list[str], seed: int, resampled: bool = True, shuffle: int = 1000,
                  handler: SkipCounter | None = None, rank: int = 0, sizes: dict[str, int] | None = None,
                  lazy_labels: bool = False, network: Network = Network()) -> SampleStream:
    """The one webdataset pipeline: shards -> worker split -> tar -> shuffle -> decode to `Sample`.

    Args:
        urls: this rank's shards (`rank_shards`); node splitting is done there, not by webdataset.
        seed: base seed; the stream is a function of (seed, rank, DataLoader worker, epoch).
        resampled: draw shards with replacement forever (training); False reads `urls` once, split by worker.
        shuffle: sample shuffle buffer size; 0 or 1 keeps shard order.
        handler: the `SkipCounter` for tar, decode and validation errors; default one that never stops.
        rank: the global rank, for seeding only.
        sizes: {shard: sample count} (`shard_sizes`), to count a damaged shard's samples that never came out ("lost").
        lazy_labels: keep label maps PNG-encoded until `Sample.label` decodes (and checks) one.
        network: retries, timeouts and shards in flight for remote shards (`remote.Network`).
    """
    return SampleStream(urls, seed, rank, resampled, shuffle,
                        handler or SkipCounter(remote.basename(remote.parent(urls[0]))), sizes, lazy_labels, network)


class MixedStream(SeededStream):
    """Weighted random mixing of several streams (`mixed_stream`): `(i, item)`, the index of the stream drawn from
    with each item; stops when the drawn stream runs dry. Not `wds.RandomMix`, which draws with the global
    `random.random()`, unseeded per worker (webdataset's `mix.py`): here each worker's draws are its seed's."""

    def __init__(self, streams: list[SeededStream], weights: list[float], seed: int, rank: int = 0) -> None:
        super().__init__(seed, rank)
        if not streams or len(streams) != len(weights):
            raise ValueError(f"mixed_stream: need one weight per stream, got {len(streams)} streams, "
                             f"{len(weights)} weights")
        w = np.asarray(weights, dtype=float)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"mixed_stream: weights must be >= 0 with a positive sum, got {weights}")
        self.streams, self.probs = streams, w / w.sum()

    def check_workers(self, num_workers: int) -> None:
        """Each worker mixes its own copy of every stream, so every stream must serve `num_workers` workers."""
        for stream in self.streams:
            if hasattr(stream, "check_workers"):
                stream.check_workers(num_workers)

    def stream(self, seed: int, worker: int, epoch: int) -> Iterator[tuple[int, Any]]:
        rng = np.random.default_rng(seed)
        sources = [s.iterate(worker, epoch) for s in self.streams]
        while True:
            i = rng.choice(len(sources), p=self.probs)
            try:
                item = next(sources[i])
            except StopIteration:
                return
            yield i, item


def mixed_stream(streams: list[SeededStream], weights: list[float], seed: int, rank: int = 0) -> MixedStream:
    """Each item comes from stream i with probability weights[i] / sum(weights), reproducibly, as `(i, item)`."""
    return MixedStream(streams, weights, seed, rank)


class EpochLoader:
    """Exactly `batches` batches per iteration from `loader` on every rank, counted in the main process (webdataset's
    `with_epoch` on the dataset counts per worker: webdataset/webdataset#250). A dry stream restarts the loader as a
    new pass, `set_epoch(pass)` before its workers start (so no `persistent_workers`); one that yields nothing raises.
    The pass counter is the loader's state, which Lightning saves with checkpoints."""

    def __init__(self, loader: DataLoader, batches: int) -> None:
        if batches < 1:
            raise ValueError(f"batches per epoch must be >= 1, got {batches}")
        if getattr(loader, "persistent_workers", False):
            raise ValueError("EpochLoader reseeds the dataset every pass; persistent_workers would ignore it")
        if hasattr(loader.dataset, "check_workers"):  # here, in the main process, before any worker starts
            loader.dataset.check_workers(loader.num_workers)
        self.loader, self.batches, self.passes = loader, batches, 0

    def __len__(self) -> int:
        return self.batches

    def state_dict(self) -> dict[str, int]:
        """The pass counter; Lightning stores it in checkpoints (a `_Stateful` loader of the fit loop)."""
        return {"passes": self.passes}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next pass is seeded after the saved ones, so a resumed run does not replay data."""
        self.passes = int(state["passes"])

    def __iter__(self) -> Iterator[Any]:
        produced = 0
        while produced < self.batches:
            if hasattr(self.loader.dataset, "set_epoch"):
                self.loader.dataset.set_epoch(self.passes)
            self.passes += 1
            before = produced
            for batch in self.loader:
                yield batch
                produced += 1
                if produced == self.batches:
                    return
            if produced == before:
                raise RuntimeError("EpochLoader: the stream yielded no batch; this rank has no readable samples")


def with_epoch(dataset: IterableDataset, batches_per_rank: int, batch_size: int | None,
               **loader_kw: Any) -> EpochLoader:
    """An `EpochLoader` over `DataLoader(dataset, batch_size, **loader_kw)`; `Sample`s need a `collate_fn`; None: the
    dataset yields whole batches."""
    return EpochLoader(DataLoader(dataset, batch_size=batch_size, **loader_kw), batches_per_rank)

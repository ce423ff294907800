"""`seggpt-lab-data convert`: one Source split -> webdataset shards plus an index.

Writes `OUT/<source>/<split>-%06d.tar`, a stats file `<split>-%06d.json` beside each shard, and
`<split>-index.json` (shard names, sample counts, per-class image and pixel counts, skipped items,
licence note). Worker processes read and encode samples; the main process writes the tars in item
order, so the output does not depend on the number of workers. OUT may be a local folder or object
storage (`s3://bucket/prefix`); each file appears under its final name complete or not at all
(`remote.Output`: renamed from a temporary name, or uploaded whole), a shard's stats file first: a
re-run keeps every shard whose stats file and tar both exist for the same items and redoes the rest.
Tar headers carry fixed owners and times, so the same input gives byte-identical shards.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from tqdm import tqdm

from datamodules import remote
from datamodules.remote import Network, Output
from datamodules.schema import SCHEMA_VERSION, SEM_VOID, Sample, SampleError, encode_sample
from datamodules.sources.base import Source

# tar member times: fixed for byte-identical shards; an int, because a float gives every member a pax header,
# which doubles the time a reader spends parsing headers
SHARD_MTIME = 0


class BadSampleError(RuntimeError):
    """An item that could not be converted, with skipping off; the message is one line naming the file."""


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def index_name(split: str) -> str:
    return f"{split}-index.json"


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def class_stats(sample: Sample) -> tuple[dict[int, int], str]:
    """({class id: pixel count}, 'sem' or 'ins') for the classes present; 0 and SEM_VOID are not classes."""
    if sample.sem is not None:
        ids, counts = np.unique(sample.sem, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts, strict=True) if 0 < i < SEM_VOID}, "sem"
    pixels: Counter[int] = Counter()
    if sample.ins is not None:
        ids, counts = np.unique(sample.ins, return_counts=True)
        for i, c in zip(ids, counts, strict=True):
            if i > 0:
                pixels[sample.meta["instances"][str(i)]["category"]] += int(c)
    return dict(pixels), "ins"


_SOURCE: Source | None = None  # the Source in a worker process, set once by the pool initialiser


def _init_worker(source: Source) -> None:
    global _SOURCE
    _SOURCE = source


Result = tuple[dict | None, dict[int, int], str | None]  # (tar members, class pixel counts, error)


def _load(item: Any) -> Result:
    """(encoded tar members, class pixel counts, None) or (None, {}, error message) for one item."""
    assert _SOURCE is not None
    try:
        sample = _SOURCE.load(item)
        return encode_sample(sample), class_stats(sample)[0], None
    except SampleError as e:
        return None, {}, str(e)
    except Exception as e:  # a converter bug or an unexpected file: report it against the item, like bad data
        return None, {}, f"{item}: {type(e).__name__}: {e}"


def _fingerprint(items: Sequence[Any]) -> str:
    return hashlib.sha1(json.dumps([str(i) for i in items]).encode()).hexdigest()


def _stats_name(split: str, index: int) -> str:
    return shard_name(split, index).removesuffix(".tar") + ".json"


def _done(output: Output, split: str, index: int, items: Sequence[Any]) -> dict | None:
    """The stats of shard `index` if a previous run finished it for the same items, else None."""
    stats_name = _stats_name(split, index)
    if not output.exists(stats_name) or not output.exists(shard_name(split, index)):
        return None
    stats = json.loads(output.read_text(stats_name))
    return stats if stats.get("items") == _fingerprint(items) else None


def _results(source: Source, items: Sequence[Any], workers: int) -> Iterator[Result]:
    if workers <= 1:
        _init_worker(source)
        yield from map(_load, items)
        return
    ctx = mp.get_context("spawn")  # no fork: torch or a converter may hold threads
    with ctx.Pool(workers, initializer=_init_worker, initargs=(source,)) as pool:
        yield from pool.imap(_load, items, chunksize=16)


def convert(source: Source, out: str | Path, shard_size: int = 1000, workers: int = 1, skip_bad: bool = False,
            limit: int | None = None, progress: bool = True,
            network: Network = Network()) -> dict:
    """Convert one split of `source`; returns the index (also written to `<split>-index.json`).

    Args:
        source: the dataset split to convert.
        out: the shard root, a local folder or object storage (`s3://bucket/prefix`); shards go to
            `out/<source name>/`.
        shard_size: samples per shard.
        workers: processes that read and encode samples (1: in this process).
        skip_bad: skip items that cannot be read and list them in the index, instead of stopping.
        limit: convert only the first `limit` items.
        progress: show a progress bar.
        network: retries and timeouts of the uploads, the S3 endpoint, when `out` is remote.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    items = list(source.items())[:limit]
    if not items:
        raise SampleError(source.root, f"no {source.name} items found for split {source.split!r}")
    output = Output(remote.join(out, source.name), network)
    try:
        chunks = [items[i:i + shard_size] for i in range(0, len(items), shard_size)]
        stats: list[dict | None] = [_done(output, source.split, k, chunk) for k, chunk in enumerate(chunks)]
        todo = [k for k, s in enumerate(stats) if s is None]
        todo_items = [item for k in todo for item in chunks[k]]

        bar = tqdm(total=len(items), initial=len(items) - len(todo_items), unit="img", disable=not progress,
                   desc=f"{source.name} {source.split}")
        results = _results(source, todo_items, workers)
        try:
            for k in todo:
                stats[k] = _write_shard(output, source.split, k, chunks[k], results, skip_bad, bar)
        finally:
            bar.close()
            results.close()

        index = _index(source, [s for s in stats if s is not None])
        output.write(index_name(source.split), _dumps(index))
    finally:
        output.close()
    return index


def _write_shard(output: Output, split: str, k: int, chunk: Sequence[Any], results: Iterator[Result],
                 skip_bad: bool, bar: tqdm) -> dict:
    name = shard_name(split, k)
    tmp = output.stage(name)
    images: Counter[int] = Counter()
    pixels: Counter[int] = Counter()
    keys, skipped = [], []
    try:
        with open(tmp, "wb") as f:
            writer = wds.TarWriter(f, mtime=SHARD_MTIME, user="seggpt", group="seggpt", mode=0o0444)
            try:
                for item in chunk:
                    members, class_pixels, error = next(results)
                    bar.update()
                    if error is not None:
                        if not skip_bad:
                            raise BadSampleError(f"{error} (--skip-bad skips such samples, listed in the index)")
                        skipped.append({"item": str(item), "error": error})
                        continue
                    writer.write(members)
                    keys.append(members["__key__"])
                    images.update(class_pixels.keys())
                    pixels.update(class_pixels)
            finally:
                writer.close()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    shard = {"name": name, "samples": len(keys), "items": _fingerprint(chunk), "skipped": skipped,
             "class_images": dict(sorted(images.items())), "class_pixels": dict(sorted(pixels.items()))}
    output.write(_stats_name(split, k), _dumps(shard))  # stats first: a tar never exists without them
    output.publish(name)
    return json.loads(_dumps(shard))  # as a later run will read it back (string class ids)


def _index(source: Source, shards: list[dict]) -> dict:
    images: Counter[str] = Counter()
    pixels: Counter[str] = Counter()
    for s in shards:
        images.update(s["class_images"])
        pixels.update(s["class_pixels"])
    return {
        "schema_version": SCHEMA_VERSION,
        "source": source.name,
        "split": source.split,
        "task": source.task,
        "licence": source.licence,
        "classes": {str(k): v for k, v in sorted(source.classes.items())},
        "num_samples": sum(s["samples"] for s in shards),
        "shards": [{"name": s["name"], "samples": s["samples"]} for s in shards],
        "class_images": dict(sorted(images.items(), key=lambda kv: int(kv[0]))),
        "class_pixels": dict(sorted(pixels.items(), key=lambda kv: int(kv[0]))),
        "skipped": [x for s in shards for x in s["skipped"]],
    }

"""Shards on object storage and HTTP(S): `s3://bucket/prefix/...`, `https://host/...` (any fsspec protocol).

Remote shards are streamed through fsspec (s3fs for S3, aiohttp for HTTP) in ranged requests of
`Network.block_size`, each retried with exponential back-off, so a connection dropped mid-shard costs one block's
request, not the shard; `Network.in_flight` requests per shard stream run ahead of the reader, in threads, and the
next shard is opened meanwhile, so the reader rarely waits, and a stream holds a few blocks in memory, whatever the
shard's size. A request that still fails after `Network.retries` retries raises `NetworkError`, which the streams
count as a skip (`skipped/<source>/network`, for the samples of the shard not read yet) before they go on with the
next shard.

Credentials come from the clients' usual places, never from a recipe: for S3, botocore's `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_PROFILE` (~/.aws), `AWS_DEFAULT_REGION`. The endpoint of a non-AWS
server (MinIO, SeaweedFS, Ceph) comes from `AWS_ENDPOINT_URL` or the config key `Network.endpoint_url`; any other
s3fs or HTTP option from fsspec's configuration (`FSSPEC_S3_<OPTION>` variables, or JSON files in
`FSSPEC_CONFIG_DIR`).

`Output` is where `seggpt-lab-data convert` writes: each file appears under its final name complete or not at all.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import botocore.exceptions as boto
import fsspec

from seggpt_lab.atomic import write_atomic

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_remote(path: str | Path) -> bool:
    """A URL that fsspec opens (`s3://`, `https://`, `gs://`...), not a local path, `file://` or a `pipe:` command."""
    return isinstance(path, str) and "://" in path.split("{")[0] and not path.startswith(("file://", "pipe:"))


def join(folder: str | Path, name: str) -> str:
    """`folder/name`: a URL joined with '/', a local path as `Path` joins it."""
    return f"{folder.rstrip('/')}/{name}" if is_remote(folder) else str(Path(folder) / name)


def parent(path: str | Path) -> str:
    """The folder of a file's path or URL."""
    return posixpath.dirname(path.rstrip("/")) if is_remote(path) else str(Path(path).parent)


def basename(path: str | Path) -> str:
    return posixpath.basename(path.rstrip("/")) if is_remote(path) else Path(path).name


@dataclass(frozen=True)
class Network:
    """How remote shards are read.

    Args:
        retries: tries of a request after its first failure (a dropped connection, a timeout, a 5xx answer, a
            missing object); then it counts as a `network` skip.
        backoff: seconds before the first retry, doubled before each next one, at most `max_backoff`.
        max_backoff: the longest wait between two tries.
        timeout: seconds to connect, and seconds without a byte before a read counts as stalled.
        block_size: bytes per ranged request: what a dropped connection costs, and the unit of memory.
        in_flight: ranged requests a shard stream keeps running ahead of its reader, and the next shard's first
            ones, asked for while this one is read (0: each block is asked for when it is needed). A stream holds up
            to 2 x in_flight + 1 blocks, and a DataLoader worker reads one shard per source at a time:
            sources x (2 x in_flight + 1) x block_size bytes per worker at most.
        endpoint_url: the S3 server (MinIO, SeaweedFS, Ceph...); None: `AWS_ENDPOINT_URL`, else AWS. Credentials are
            never set here: they come from the environment (see the module docstring).
    """

    retries: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    timeout: float = 30.0
    block_size: int = 4 * 2**20
    in_flight: int = 2
    endpoint_url: str | None = None

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < self.backoff or self.timeout <= 0 \
                or self.block_size < 1 or self.in_flight < 0:
            raise ValueError(f"network: need retries >= 0, 0 <= backoff <= max_backoff, timeout > 0, block_size >= 1 "
                             f"and in_flight >= 0, got {self}")

    def waits(self) -> Iterator[float]:
        """The back-off before each retry."""
        for k in range(self.retries):
            yield min(self.backoff * 2**k, self.max_backoff)


class NetworkError(ConnectionError):
    """A remote request that failed every try; counted as a skip under `reason`."""

    reason = "network"


# What one failed request raises: OSError (connection, timeout, FileNotFoundError for a missing object, s3fs's
# translated 5xx answers), EOFError (a short body), and the errors of the clients under fsspec that are not OSErrors:
# aiohttp's (HTTP, and the transport under s3fs) and botocore's (s3fs's client) that s3fs does not translate.
TRANSIENT = (OSError, EOFError, aiohttp.ClientError, boto.ClientError, boto.HTTPClientError, boto.IncompleteReadError,
             boto.ResponseStreamingError)


def filesystem(url: str, network: Network = Network()) -> tuple[Any, str]:
    """(fsspec filesystem, path in it) for `url`, with `network`'s timeouts; the retries are ours alone (`retrying`),
    so the clients' own are turned off: theirs would multiply ours."""
    protocol = url.split("://", 1)[0]
    options: dict[str, Any] = {}
    if protocol in ("s3", "s3a"):
        if network.endpoint_url:
            options["endpoint_url"] = network.endpoint_url
        options["config_kwargs"] = {"connect_timeout": network.timeout, "read_timeout": network.timeout,
                                    "retries": {"total_max_attempts": 1, "mode": "standard"}}
    elif protocol in ("http", "https"):
        options["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(total=None, sock_connect=network.timeout,
                                                                     sock_read=network.timeout)}
    fs, path = fsspec.core.url_to_fs(url, **options)
    if hasattr(fs, "retries"):  # s3fs retries some errors itself, 5 times by default
        fs.retries = 1
    return fs, path


def retrying(what: str, url: str, network: Network, request: Callable[[], T]) -> T:
    """`request()`, tried again after each `TRANSIENT` failure with exponential back-off, `network.retries` times;
    then `NetworkError`, one line naming the URL and the last failure."""
    waits = network.waits()
    while True:
        try:
            return request()
        except TRANSIENT as e:
            wait = next(waits, None)
            first = str(e).splitlines()[0] if str(e) else ""
            if wait is None:
                raise NetworkError(f"{url}: {what} failed {network.retries + 1} times (the last: "
                                   f"{type(e).__name__}{': ' + first if first else ''})") from e
            log.info("%s: %s failed (%s: %s); trying again in %.1f s", url, what, type(e).__name__, first, wait)
            time.sleep(wait)


def read_bytes(url: str, network: Network = Network(), start: int | None = None, end: int | None = None) -> bytes:
    """Bytes [start, end) of a remote object (all of it by default) in `block_size` ranged requests, each retried."""
    fs, path = filesystem(url, network)
    if start is None or end is None:
        size = retrying("reading its size", url, network, lambda: fs.size(path))
        start, end = start or 0, size if end is None else end
    return b"".join(_read_range(fs, path, url, network, lo, min(lo + network.block_size, end))
                    for lo in range(start, end, network.block_size))


def _read_range(fs: Any, path: str, url: str, network: Network, lo: int, hi: int) -> bytes:
    """Bytes [lo, hi) in one ranged request, retried; a body cut short without an error counts as a failure."""

    def request() -> bytes:
        data = fs.cat_file(path, start=lo, end=hi)
        if len(data) != hi - lo:  # a body cut short without an error, or an object replaced meanwhile
            raise EOFError(f"got {len(data)} of {hi - lo} bytes")
        return data

    return retrying(f"reading bytes {lo}-{hi}", url, network, request)


def read_text(path: str | Path, network: Network = Network()) -> str:
    """A small file's text, local or remote; a missing one raises FileNotFoundError at once (no retries)."""
    if not is_remote(path):
        return Path(path).read_text()
    fs, fs_path = filesystem(path, network)

    def once() -> bytes:
        try:
            return fs.cat_file(fs_path)
        except FileNotFoundError as e:  # not transient: out of `retrying`'s reach, re-raised below
            raise _Missing from e

    try:
        return retrying("reading", path, network, once).decode()
    except _Missing:
        raise FileNotFoundError(f"{path}: no such object") from None


class _Missing(Exception):
    pass


def exists(path: str | Path, network: Network = Network()) -> bool:
    if not is_remote(path):
        return Path(path).exists()
    fs, fs_path = filesystem(path, network)
    return retrying("checking", path, network, lambda: fs.exists(fs_path))


class RemoteShard(io.RawIOBase):
    """A remote object as a file read front to back (a shard, for webdataset's tar stage): `block_size` ranged
    requests, each retried (`retrying`), `in_flight` of them requested ahead on `pool`. A block that cannot be read
    raises `NetworkError` from `read`; the size is asked for at once, so a missing object raises here."""

    def __init__(self, url: str, network: Network, pool: ThreadPoolExecutor) -> None:
        super().__init__()
        self.url, self.network, self.pool = url, network, pool
        self.fs, self.path = filesystem(url, network)
        self.size = retrying("reading its size", url, network, lambda: self.fs.size(self.path))
        self.blocks: deque[Future] = deque()
        self.requested = 0  # bytes asked for so far
        self.block, self.offset = memoryview(b""), 0  # the block being read, and where in it
        self._request(self.network.in_flight)

    def _request(self, ahead: int) -> None:
        """Ask for the next blocks until `ahead` are pending (or the object ends)."""
        while len(self.blocks) < ahead and self.requested < self.size:
            lo = self.requested
            hi = min(lo + self.network.block_size, self.size)
            self.blocks.append(self.pool.submit(_read_range, self.fs, self.path, self.url, self.network, lo, hi))
            self.requested = hi

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.offset == len(self.block):
            self._request(1)
            if not self.blocks:
                return 0
            future = self.blocks.popleft()
            self._request(self.network.in_flight)  # the next blocks are asked for before this one is waited on
            self.block, self.offset = memoryview(future.result()), 0
        n = min(len(buffer), len(self.block) - self.offset)
        buffer[:n] = self.block[self.offset:self.offset + n]
        self.offset += n
        return n

    def close(self) -> None:
        for future in self.blocks:
            future.cancel()
        self.blocks.clear()
        super().close()


def open_remote(urls: Iterable[str], network: Network) -> Iterator[tuple[str, RemoteShard | NetworkError]]:
    """(url, `RemoteShard`) for each of `urls`, read one at a time over one thread pool, the next one opened (and its
    first blocks asked for) while this one is read, unless `in_flight` is 0; (url, NetworkError) for one that could
    not be opened. Each shard is closed when the next is asked for."""
    pool = ThreadPoolExecutor(max(network.in_flight, 1) + 1, thread_name_prefix="shard-blocks")
    urls = iter(urls)

    def opening() -> tuple[str, Future] | None:
        url = next(urls, None)
        return None if url is None else (url, pool.submit(RemoteShard, url, network, pool))

    following = opening()
    try:
        while following is not None:
            url, shard = following
            if network.in_flight:  # the next shard opens while this one is read
                following = opening()
            try:
                shard = shard.result()
            except NetworkError as e:
                yield url, e
            else:
                try:
                    yield url, shard
                finally:
                    shard.close()
            if not network.in_flight:
                following = opening()
    finally:  # a request still running ends by itself (its timeout bounds it); nobody waits for it
        pool.shutdown(wait=False, cancel_futures=True)


class Output:
    """A folder that `convert` writes, where each file appears under its final name complete or not at all.

    A file is written to `stage(name)` first, then `publish(name)` puts it in place: a local folder renames it (atomic
    on one file system); a remote one uploads it whole from a local staging folder, and an S3 object, put at once or
    in a multipart upload, is only visible once complete. HTTP(S) servers take no uploads here.
    """

    def __init__(self, folder: str | Path, network: Network = Network()) -> None:
        self.folder, self.network = str(folder), network
        if is_remote(self.folder):
            if self.folder.split("://", 1)[0] in ("http", "https"):
                raise ValueError(f"{self.folder}: convert writes to a local folder or to object storage (s3://...), "
                                 "not to an HTTP server")
            self._staging = Path(tempfile.mkdtemp(prefix="seggpt-lab-convert-"))
        else:
            Path(self.folder).mkdir(parents=True, exist_ok=True)
            self._staging = None

    def path(self, name: str) -> str:
        return join(self.folder, name)

    def stage(self, name: str) -> Path:
        """The local file to write `name` to before `publish`."""
        if self._staging is None:
            return Path(self.folder) / f"{name}.tmp"
        return self._staging / name

    def publish(self, name: str) -> None:
        staged = self.stage(name)
        if self._staging is None:
            os.replace(staged, Path(self.folder) / name)
            return
        fs, path = filesystem(self.path(name), self.network)
        retrying("uploading", self.path(name), self.network, lambda: fs.put_file(str(staged), path))
        staged.unlink()

    def write(self, name: str, data: bytes) -> None:
        """A small file (an index, a shard's stats) whole; a local one also synced to disk (`write_atomic`)."""
        if self._staging is None:
            write_atomic(self.path(name), data)
            return
        self.stage(name).write_bytes(data)
        self.publish(name)

    def exists(self, name: str) -> bool:
        return exists(self.path(name), self.network)

    def read_text(self, name: str) -> str:
        return read_text(self.path(name), self.network)

    def close(self) -> None:
        """Remove the staging folder (and what a failed write left there)."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)

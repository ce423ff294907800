"""Reliability of the pretraining data: corrupt shards are skipped, counted per source and stopped past a rate;
a fuzzed copy of real shards trains without crashing or hanging; configuration errors come before any worker
starts; a DDP rank with unreadable shards does not hang the other."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
import yaml
from PIL import Image

from datamodules.augment import PairTransform
from datamodules.convert import convert
from datamodules.pairing import PairSampler
from datamodules.pretrain import PretrainDataModule, ShardSource
from datamodules.schema import SEM_VOID, InvalidSample, Sample, decode_sample, encode_png16, encode_sample, validate
from datamodules.shards import SkipCounter, TooManySkips, sample_stream, shard_urls, with_epoch
from datamodules.sources.synthetic import Synthetic
from datamodules.sources.video import DAVIS
from tests.conftest import REPO

SIZE = (32, 32)
# one compute thread per process: on 2 shared cores, torch's default threads contend and a tiny model's step
# takes 10x longer
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _write(folder: Path, split: str, shards: list[list[dict]]) -> Path:
    """Tar member dicts -> `<split>-%06d.tar` shards and the index a ShardSource reads (names and counts)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k, members in enumerate(shards):
        name = f"{split}-{k:06d}.tar"
        with wds.TarWriter(str(folder / name), mtime=0) as writer:
            for raw in members:
                writer.write(raw)
        names.append({"name": name, "samples": len(members)})
    (folder / f"{split}-index.json").write_text(json.dumps({"shards": names}))
    return folder


def _synthetic(n: int, split: str = "train") -> list[dict]:
    source = Synthetic(None, split, samples=n, size=32)
    return [encode_sample(source.load(item)) for item in source.items()]


def _speck(key: str) -> dict:
    """A 32 px semantic sample whose only labelled pixel is in a corner: small crops leave it out of view."""
    sem = np.zeros((32, 32), np.int32)
    sem[0, 0] = 1
    return encode_sample(Sample(f"speck__{key}", _png(np.full((32, 32, 3), 90, np.uint8)), "png",
                         {"source": "speck", "split": "train", "task": "semantic", "classes": {"1": "dot"},
                          "size": [32, 32]}, sem=sem))


def _data(sources: list[ShardSource], transform: dict | None = None, sampler: dict | None = None,
          **kw) -> PretrainDataModule:
    kw = {"batch_size": 4, "num_workers": 0, "batches_per_epoch": 5, "shuffle": 0, **kw}
    transform = PairTransform(**{"size": SIZE, "patch_size": 8, "on_device": True, **(transform or {})})
    data = PretrainDataModule(sources, transform, PairSampler(**(sampler or {})), **kw)
    data.setup("fit")
    return data


# --- 1. every kind of corrupt sample: validated once, skipped, counted per source by reason ---


def _broken(good: list[dict]) -> list[dict]:
    """One copy of `good[i]` per way a sample can be broken; the reason each is counted under."""
    cases = []

    def case(reason: str, i: int, **change: bytes | None) -> None:
        raw = {**good[i], "__key__": f"{good[i]['__key__']}-{reason}"}
        for member, value in change.items():
            member = member.replace("_", ".")
            if value is None:
                del raw[member]
            else:
                raw[member] = value
        cases.append(raw)

    sem = np.asarray(Image.open(io.BytesIO(good[2]["sem.png"]))).astype(np.int32)
    sem[:4, :4] = 77  # a class the sample's json does not list
    case("image", 0, png=b"this is not an image")
    case("image_data", 1, png=good[1]["png"][:80])  # the header reads, the pixels do not
    case("labels", 2, sem_png=encode_png16(sem))
    case("size", 3, sem_png=encode_png16(np.zeros((16, 32), np.int32)))
    case("no_mask", 4, sem_png=None, ins_png=None)
    case("members", 5, json=None)  # decode: a sample needs an image and json (SampleError)
    return cases


def test_validate_names_the_broken_rule() -> None:
    good = _synthetic(6)
    for raw in _broken(good):
        reason = raw["__key__"].rsplit("-", 1)[1]
        if reason in ("image_data", "members"):
            continue  # only the header is read here; decode itself refuses a sample without json
        with pytest.raises(InvalidSample, match=raw["__key__"]) as info:
            validate(decode_sample(raw))
        assert info.value.reason == reason
    assert validate(decode_sample(good[0])).key == good[0]["__key__"]
    # label maps kept encoded (the pretraining stream) are checked when they are decoded, by the same rules
    broken = {raw["__key__"].rsplit("-", 1)[1]: raw for raw in _broken(good)}
    cut = {**good[0], "__key__": "cut", "sem.png": good[0]["sem.png"][:60]}  # the header reads, the pixels do not
    for reason, raw in [("labels", broken["labels"]), ("size", broken["size"]), ("label_data", cut)]:
        sample = validate(decode_sample(raw, lazy=True))
        assert sample.sem is None and sample.label("ins") is not None
        with pytest.raises(InvalidSample, match=raw["__key__"]) as info:
            sample.label("sem")
        assert info.value.reason == reason
    sem = np.full((32, 32), SEM_VOID, np.int32)  # void is always allowed
    assert validate(Sample("x__void", good[0]["png"], "png", {"task": "semantic"}, sem=sem)).sem is sem


def test_corrupt_samples_are_skipped_and_counted_per_source(tmp_path: Path) -> None:
    """A clean source mixed with one holding every kind of damage: the run goes on, only clean examples come out,
    and the damaged source's skips are counted by reason in the batches' stats (what the module logs)."""
    good = _synthetic(40)
    bad = good[:20] + _broken(good) + [_speck(str(i)) for i in range(6)]
    clean = _write(tmp_path / "clean", "train", [good[20:]])
    damaged = _write(tmp_path / "damaged", "train", [bad[:20], bad[20:]] + [good[:10]])
    cut = damaged / "train-000002.tar"
    cut.write_bytes(cut.read_bytes()[:len(cut.read_bytes()) // 2])  # a truncated tar: its last samples never come out
    data = _data([ShardSource(str(clean)), ShardSource(str(damaged))], transform={"scale": (0.05, 0.05),
                 "on_device": False}, sampler={"self_prob": 1.0}, max_skip_rate=1.0, batch_size=1)
    examples = list(islice(iter(data.dataset), 300))  # batches of one example
    assert all(e["target_canvas"].any() for e in examples)  # no example without a coloured label
    stats = examples[-1]["stats"]
    reasons = {k.split("/")[2]: v for k, v in stats.items() if k.startswith("skipped/damaged/")}
    assert set(reasons) >= {"image", "image_data", "labels", "size", "no_mask", "SampleError", "empty"}, reasons
    assert reasons.get("lost", 0) >= 4, reasons  # the truncated shard: counted from its index
    assert stats["skipped/damaged"] == sum(reasons.values())
    assert stats["skipped/clean"] == stats.get("skipped/clean/empty", 0)  # small crops miss objects there too


def test_skip_rate_stops_with_one_line_naming_the_source(tmp_path: Path) -> None:
    good = _synthetic(40)
    broken = _write(tmp_path / "broken", "train", [[{**raw, "png": b"garbage"} for raw in good[:30]] + good[30:]])
    data = _data([ShardSource(str(_write(tmp_path / "ok", "train", [good]))), ShardSource(str(broken))],
                 max_skip_rate=0.1, skip_rate_min_samples=20)
    with pytest.raises(TooManySkips, match=r"^source broken: \d+ of the \d+ samples read were corrupt, more than "
                                           r"max_skip_rate 0.1 \(image: \d+; the last: .*raise data.max_skip_rate$"):
        list(data.train_dataloader())
    # one bad sample early on does not stop a run: the rate is judged after skip_rate_min_samples
    once = _write(tmp_path / "once", "train", [[{**good[0], "png": b"garbage"}] + good[1:]])
    data = _data([ShardSource(str(once))], max_skip_rate=0.01, skip_rate_min_samples=50)
    assert len(list(data.train_dataloader())) == 5
    assert data.dataset.streams[0].skips.counts == {"image": 1}  # num_workers 0: counted in this process
    counter = SkipCounter("x", max_rate=0.5, min_samples=4)
    for _ in range(3):
        counter(ValueError("bad json"))  # under min_samples: counted, not judged
    with pytest.raises(TooManySkips, match="source x: 4 of the 4 samples"):
        counter(ValueError("bad json"))
    with pytest.raises(TypeError, match="a bug"):  # not a data error: never swallowed
        counter(TypeError("a bug"))


def test_a_source_with_nothing_usable_stops_instead_of_starving(tmp_path: Path) -> None:
    specks = _write(tmp_path / "specks", "train", [[_speck(str(i)) for i in range(8)]])
    data = _data([ShardSource(str(specks))], transform={"scale": (0.01, 0.01)}, sampler={"self_prob": 1.0},
                 skip_rate_min_samples=30)
    with pytest.raises(TooManySkips, match=r"source specks: the last 30 samples were all skipped \(empty: 30"):
        list(data.train_dataloader())
    # a source that becomes unreadable mid-run stops too, even when any corrupt share is allowed
    counter = SkipCounter("gone", max_rate=1.0, min_samples=5)
    for _ in range(10):
        counter.read()
    for _ in range(4):
        counter(FileNotFoundError("no such shard"))
    with pytest.raises(TooManySkips, match=r"source gone: the last 5 samples were all skipped \(FileNotFoundError: 5"):
        counter(FileNotFoundError("no such shard"))


# --- 2. fuzz: real shards with random byte flips and truncations train without crashing or hanging ---


def _fuzz(folder: Path, seed: int, flips: int) -> None:
    """In every shard two members cut short (the tar itself intact), then `flips` random bytes overwritten in the
    tar; every other shard cut at a random point."""
    rng = random.Random(seed)
    for shard in sorted(folder.glob("*.tar")):
        raws = [{k: v for k, v in raw.items() if not k.startswith("__") or k == "__key__"}
                for raw in wds.WebDataset(str(shard), shardshuffle=False, empty_check=False)]
        for raw in rng.sample(raws, 2):
            member = rng.choice(sorted(k for k in raw if k != "__key__"))
            raw[member] = raw[member][:rng.randrange(len(raw[member]))]
        with wds.TarWriter(str(shard), mtime=0) as writer:
            for raw in raws:
                writer.write(raw)
        data = bytearray(shard.read_bytes())
        for _ in range(flips):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.5:
            data = data[:rng.randrange(len(data))]
        shard.write_bytes(bytes(data))


def _fit(config: Path, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`seggpt-lab fit --config CONFIG` in its own process group, all of which is killed when it overruns (a hang
    fails the test, and leaves no DDP rank behind); `env`: variables added to its environment."""
    proc = subprocess.Popen([sys.executable, "-m", "seggpt_lab.cli", "fit", "--config", str(config)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**ONE_THREAD, **(env or {})}, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _tiny_config(out: Path, sources: list[dict], steps: int, **trainer) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": steps, "precision": "32-true",
                    "log_every_n_steps": 25, "val_check_interval": None, "num_sanity_val_steps": 0,
                    "check_val_every_n_epoch": None, "limit_val_batches": 0, "default_root_dir": str(out),
                    "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(out), "name": "csv", "version": ""}}, **trainer},
        "model": {"class_path": "seggpt_lab.modules.pretrain.PretrainModule", "init_args": {
            "model": {"class_path": "seggpt_lab.model.SegGPT", "init_args": {
                "img_size": [64, 32], "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2,
                "merge_index": 1, "feature_indices": [1, 2], "decoder_embed_dim": 8, "pretrain_img_size": 32}},
            "warmup_steps": 10, "lr": 0.001,
            "picture_every_n_steps": 0}},
        "data": {"class_path": "datamodules.pretrain.PretrainDataModule", "init_args": {
            "sources": sources, "batch_size": 1, "num_workers": 0, "batches_per_epoch": 100, "shuffle": 20,
            "transform": {"class_path": "datamodules.augment.PairTransform", "init_args": {
                "size": [32, 32], "patch_size": 8, "max_ids": 1, "on_device": True}},
            "sampler": {"class_path": "datamodules.pairing.PairSampler"}}},
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_fuzzed_real_shards_train_without_crashing_or_hanging(shared_data: Path, tmp_path: Path) -> None:
    """DAVIS-2016 frames (real JPEGs and masks) converted, then fuzzed with a fixed seed; 300 steps on them."""
    convert(DAVIS(shared_data / "davis2016" / "DAVIS", "2016-val"), tmp_path, shard_size=10, limit=60,
            progress=False)
    folder = tmp_path / "davis"
    _fuzz(folder, seed=1, flips=12)
    out = tmp_path / "run"
    config = _tiny_config(out, [{"path": str(folder), "split": "2016-val"}], steps=300)
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["init_args"]["max_skip_rate"] = 1.0  # train through heavy damage: what is under test is no crash
    config.write_text(yaml.safe_dump(cfg))
    start = time.perf_counter()
    result = _fit(config, timeout=150)
    wall = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    last = {k: float(v) for row in rows for k, v in row.items() if v}  # the latest value of every column
    reasons = {k.split("/", 2)[2]: int(v) for k, v in last.items() if k.startswith("skipped/davis/")}
    steps = int(max(float(r["step"]) for r in rows if r.get("train/loss"))) + 1
    assert last["skipped/davis"] == sum(reasons.values()) > 0 and steps == 300
    skipped = sum(reasons.values())  # the figures for the closing note (one example per step)
    print(f"\nfuzz run: about {steps + skipped} samples read, {skipped} skipped {dict(sorted(reasons.items()))}, "
          f"{steps} steps in {wall:.1f} s")


# --- 3. configuration errors, before any worker starts ---


def test_configuration_errors_come_before_any_worker(tmp_path: Path) -> None:
    urls = shard_urls(_write(tmp_path / "two", "train", [_synthetic(4), _synthetic(4, "val")]) / "train-index.json")
    fixed = sample_stream(urls, seed=0, resampled=False)
    with pytest.raises(ValueError, match=r"^source two: 3 DataLoader workers but only 2 shards for this rank, so "
                                         r"some workers would read nothing; use num_workers <= 2"):
        with_epoch(fixed, 2, 2, num_workers=3, collate_fn=list)
    assert len(list(with_epoch(sample_stream(urls, seed=0), 2, 2, num_workers=3, collate_fn=list))) == 2
    transform, sampler = PairTransform(), PairSampler()
    with pytest.raises(ValueError, match=r"sources\[1\] \(two\): weight must be > 0, got -1"):
        PretrainDataModule([ShardSource(urls[0]), ShardSource(str(tmp_path / "two"), weight=-1)], transform, sampler)
    nothing = PretrainDataModule([ShardSource(str(tmp_path / "two" / "nope-{000000..000003}.tar"))], transform,
                                 sampler)
    with pytest.raises(FileNotFoundError, match=r"source nope-: the pattern .* matches no shard"):
        nothing.setup("fit")
    with pytest.raises(ValueError, match="max_skip_rate"):
        PretrainDataModule([ShardSource(urls[0])], transform, sampler, max_skip_rate=1.5)


# --- 4. distributed: a rank whose shards are unreadable does not hang the other ---


def test_a_rank_whose_fixed_stream_runs_dry_still_yields_every_batch(tmp_path: Path) -> None:
    """Ranks meet in collectives once per batch: a rank with fewer samples than an epoch needs (a fixed stream,
    no resampling) restarts its stream instead of ending early, so it never leaves the other waiting."""
    small = shard_urls(_write(tmp_path / "small", "train", [_synthetic(3)]) / "train-index.json")
    large = shard_urls(_write(tmp_path / "large", "train", [_synthetic(40)]) / "train-index.json")
    epochs = [[len(list(with_epoch(sample_stream(urls, seed=0, resampled=False), 10, 2, collate_fn=list)))
               for _ in range(2)] for urls in (small, large)]
    assert epochs == [[10, 10], [10, 10]]  # 3 samples give 10 batches of 2, every epoch, like 40 do


@pytest.mark.slow
def test_ddp_rank_with_unreadable_shards_fails_both_ranks(tmp_path: Path) -> None:
    """Two shards over 2 gloo ranks, rank 1's garbage: both processes end, with the source named, well before any
    collective's timeout."""
    good = _synthetic(20)
    folder = _write(tmp_path / "half", "train", [good[:10], good[10:]])
    (folder / "train-000001.tar").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(40000)))
    out = tmp_path / "run"
    config = _tiny_config(out, [{"path": str(folder)}], steps=50, strategy="ddp", devices=2)
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["init_args"].update(skip_rate_min_samples=20, batches_per_epoch=10)
    config.write_text(yaml.safe_dump(cfg))
    start = time.perf_counter()
    result = _fit(config, timeout=180)
    print(f"\nDDP with a corrupt rank: exit {result.returncode} after {time.perf_counter() - start:.1f} s")
    assert result.returncode != 0
    # rank 1 names the source; rank 0, waiting in the gradient all-reduce, fails as gloo loses its peer
    assert re.search(r"\[rank1\]: \S*TooManySkips: source half: \d+ of the \d+ samples read were corrupt",
                     result.stderr), result.stderr[-3000:]
    assert "[rank0]:" in result.stderr

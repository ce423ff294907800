from __future__ import annotations

import hashlib
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.cli import main as data_main
from datamodules.contact_sheet import inspect
from datamodules.convert import BadSampleError, convert
from datamodules.schema import SEM_VOID, SampleError, decode_sample, encode_sample
from datamodules.shards import iter_samples
from datamodules.sources.base import Source, read_image
from tests.conftest import REPO


class Squares(Source):
    """Generated PNG images with one labelled square each; item 'bad-N' fails like a corrupt file."""

    name = "squares"
    task = "semantic"
    splits = ("train",)
    licence = "test data"
    classes = {1: "red", 2: "green", 3: "blue"}

    def __init__(self, root, split, count: int = 7, bad: tuple[int, ...] = ()) -> None:
        super().__init__(root, split)
        self.count, self.bad = count, bad

    def items(self):
        return [f"bad-{i}" if i in self.bad else f"img-{i}" for i in range(self.count)]

    def load(self, item):
        i = int(item.split("-")[1])
        path = self.root / f"{item}.png"
        if item.startswith("bad"):
            path.write_bytes(b"not a png")
        else:
            rng = np.random.default_rng(i)
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(path)
        image = read_image(path)
        sem = np.zeros((20, 30), dtype=np.int32)
        sem[2:2 + i + 1, 3:3 + i + 1] = 1 + i % 3
        sem[0, 0] = SEM_VOID
        return self.sample(item, image, path, sem=sem)


def tree_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_round_trip_counts_and_index(tmp_path):
    source = Squares(tmp_path, "train")
    index = convert(source, tmp_path / "out", shard_size=3, progress=False)
    folder = tmp_path / "out" / "squares"
    assert [s["name"] for s in index["shards"]] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert [s["samples"] for s in index["shards"]] == [3, 3, 1]
    assert json.loads((folder / "train-index.json").read_text()) == index
    samples = list(iter_samples(folder / "train-index.json"))
    assert [s.key for s in samples] == [f"squares__img-{i}" for i in range(7)]
    for i, s in enumerate(samples):
        expected = source.load(f"img-{i}")
        assert np.array_equal(s.sem, expected.sem) and s.image == expected.image
        assert s.meta == expected.meta and s.meta["classes"] == {str(1 + i % 3): source.classes[1 + i % 3]}
    # images per class: squares 0..6 cycle through classes 1, 2, 3
    assert index["class_images"] == {"1": 3, "2": 2, "3": 2}
    assert index["class_pixels"]["1"] == 1 + 16 + 49
    assert index["classes"] == {"1": "red", "2": "green", "3": "blue"} and index["licence"] == "test data"


def test_shards_are_byte_identical_across_runs_and_worker_counts(tmp_path):
    convert(Squares(tmp_path, "train"), tmp_path / "a", shard_size=2, workers=1, progress=False)
    convert(Squares(tmp_path, "train"), tmp_path / "b", shard_size=2, workers=2, progress=False)
    assert tree_digest(tmp_path / "a" / "squares") == tree_digest(tmp_path / "b" / "squares")


def test_a_bad_sample_stops_with_one_line_and_leaves_no_partial_shard(tmp_path):
    with pytest.raises(BadSampleError) as err:
        convert(Squares(tmp_path, "train", bad=(4,)), tmp_path / "out", shard_size=3, progress=False)
    message = str(err.value)
    assert "bad-4.png: unreadable image" in message and "\n" not in message
    names = sorted(p.name for p in (tmp_path / "out" / "squares").iterdir())
    assert names == ["train-000000.json", "train-000000.tar"]  # shard 0 done, shard 1 neither tar nor tmp


def test_resume_keeps_finished_shards_and_redoes_the_rest(tmp_path):
    with pytest.raises(BadSampleError):
        convert(Squares(tmp_path, "train", bad=(4,)), tmp_path / "out", shard_size=3, progress=False)
    folder = tmp_path / "out" / "squares"
    first = (folder / "train-000000.tar").stat().st_mtime_ns
    convert(Squares(tmp_path, "train"), tmp_path / "out", shard_size=3, progress=False)
    assert (folder / "train-000000.tar").stat().st_mtime_ns == first
    convert(Squares(tmp_path, "train"), tmp_path / "fresh", shard_size=3, progress=False)
    assert tree_digest(folder) == tree_digest(tmp_path / "fresh" / "squares")


def test_resume_redoes_a_shard_whose_items_changed(tmp_path):
    convert(Squares(tmp_path, "train", count=4), tmp_path / "out", shard_size=3, progress=False)
    index = convert(Squares(tmp_path, "train", count=5), tmp_path / "out", shard_size=3, progress=False)
    assert [s["samples"] for s in index["shards"]] == [3, 2]


def test_skip_bad_lists_the_skipped_items(tmp_path):
    index = convert(Squares(tmp_path, "train", bad=(1, 5)), tmp_path / "out", shard_size=3, skip_bad=True,
                    progress=False)
    assert index["num_samples"] == 5
    assert [s["item"] for s in index["skipped"]] == ["bad-1", "bad-5"]
    assert "bad-5.png: unreadable image" in index["skipped"][1]["error"]


def test_sample_size_mismatch_names_the_mask_file(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (30, 20)).save(path)
    with pytest.raises(SampleError, match=r"mask.png: semantic mask is 31x20 but the image a.png is 30x20"):
        Squares(tmp_path, "train").sample("a", read_image(path), path, sem=np.zeros((20, 31), np.int32),
                                          label_file=tmp_path / "mask.png")


def test_encode_decode_keeps_16_bit_labels(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 3)).save(path)
    sem = np.array([[0, 1, 300, SEM_VOID]] * 3)
    sample = Squares(tmp_path, "train").sample("a", read_image(path), path, sem=sem)
    raw = {k: v if isinstance(v, bytes) else v for k, v in encode_sample(sample).items()}
    back = decode_sample(raw)
    assert np.array_equal(back.sem, sem) and back.ins is None
    assert Image.open(io.BytesIO(raw["sem.png"])).mode.startswith("I;16")


def test_inspect_prints_counts_and_writes_a_sheet(tmp_path, capsys):
    convert(Squares(tmp_path, "train"), tmp_path / "out", shard_size=3, progress=False)
    written = inspect(tmp_path / "out" / "squares", num=4)
    out = capsys.readouterr().out
    assert "squares / train: 7 samples in 3 shards" in out
    assert "red" in out and "green" in out and "blue" in out
    sheet = Image.open(written[0])
    assert sheet.size == (2 * round(30 * 256 / 20), 2 * 256)


def test_convert_killed_mid_shard_and_rerun_gives_the_uninterrupted_shards(tmp_path):
    """`seggpt-lab-data convert` killed with SIGKILL while it writes a shard (no cleanup runs), then run again:
    the same files, byte for byte, as a run that was never interrupted, and no temporary file left."""
    args = ["convert", "synthetic", "--split", "train", "--shard-size", "10", "--workers", "1", "--limit", "200"]
    out = tmp_path / "killed"
    run = subprocess.Popen([sys.executable, "-c", "from datamodules.cli import entry; entry()", *args,
                            "--out", str(out)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / "synthetic" / "train-000003.tar.tmp"  # shards 0-2 are done, shard 3 is being written
    deadline = time.monotonic() + 300
    while not (partial.exists() and partial.stat().st_size > 0) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL, "the conversion ended before it could be killed mid-shard"
    assert not (out / "synthetic" / "train-index.json").exists()
    assert data_main([*args, "--out", str(out)]) == 0
    assert data_main([*args, "--out", str(tmp_path / "straight")]) == 0
    assert tree_digest(out / "synthetic") == tree_digest(tmp_path / "straight" / "synthetic")
    index = json.loads((out / "synthetic" / "train-index.json").read_text())
    assert [s["samples"] for s in index["shards"]] == [10] * 20

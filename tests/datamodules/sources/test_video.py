"""Video converters: DAVIS on the real DAVIS-2016 frames and on real DAVIS-2017 palette annotations;
YouTube-VOS and MOSE on minimal trees written in their official layouts."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.schema import SEM_VOID, SampleError
from datamodules.sources import get_source
from datamodules.sources.video import DAVIS, MOSE, YouTubeVOS
from tests.datamodules.sources.native_files import native, roundtrip, write_jpeg

OSVOS = Path("davis2017_osvos/results/semi-supervised/osvos")
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [255] * (768 - 15)








def write_palette(path: Path, ids: np.ndarray) -> None:
    """A palette PNG whose indices are `ids`, as DAVIS-2017, YouTube-VOS and MOSE store object ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    im.putpalette(PALETTE)
    im.save(path)


def test_registry_names_the_video_classes() -> None:
    assert get_source("davis") is DAVIS and get_source("youtube-vos") is YouTubeVOS and get_source("mose") is MOSE


# --- DAVIS-2016: the real val sequences (L masks {0, 255}, no ImageSets folder) -----------------------------


def test_davis2016_real_frames(shared_data: Path) -> None:
    root = shared_data / "davis2016" / "DAVIS"
    source = DAVIS(root, "2016-val")
    items = source.items()
    sequences = sorted(p.name for p in (root / "JPEGImages" / "480p").iterdir())
    assert len(sequences) == 6
    # without ImageSets/2016/val.txt every sequence is listed, one item per native frame and annotation
    for seq in sequences:
        frames = sorted(p.stem for p in (root / "JPEGImages" / "480p" / seq).glob("*.jpg"))
        assert frames == sorted(p.stem for p in (root / "Annotations" / "480p" / seq).glob("*.png"))
        assert [f for s, f in items if s == seq] == frames
        assert frames == [f"{i:05d}" for i in range(len(frames))]
    assert len(items) == 290 and items == sorted(items)

    for seq, frame in items[::4]:  # a quarter of the frames, from every sequence, keeps the test fast
        sample = roundtrip(source.load((seq, frame)))
        mask = native(root / "Annotations" / "480p" / seq / f"{frame}.png")
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(sample.ins, (mask == 255).astype(np.int64))
        assert np.array_equal(sample.sem, (mask == 255).astype(np.int64))
        assert sample.key == f"davis__{seq}-{frame}" and sample.image_ext == "jpg"
        assert sample.image == (root / "JPEGImages" / "480p" / seq / f"{frame}.jpg").read_bytes()
        meta = sample.meta
        assert meta["video"] == {"id": seq, "frame": int(frame)}
        assert meta["size"] == [480, 854] and meta["task"] == "instance" and meta["split"] == "2016-val"
        assert meta["file"] == f"JPEGImages/480p/{seq}/{frame}.jpg"
        has_object = bool((mask == 255).any())
        assert meta["instances"] == ({"1": {"category": 1, "iscrowd": False}} if has_object else {})
        assert meta["classes"] == ({"1": "object"} if has_object else {})


# --- DAVIS-2017: real OSVOS palette PNGs in a DAVIS-2017 tree ------------------------------------------------


@pytest.fixture
def davis2017(shared_data: Path, tmp_path: Path) -> Path:
    """A DAVIS-2017 tree in tmp_path: three real palette annotations of gold-fish and judo (frame 00001 of
    judo gets a void block of 255, as the 2017 toolkit marks void), generated JPEGs of the same size, the
    val list naming those two, and an unlisted sequence `pigs`."""
    root = tmp_path / "DAVIS"
    for seq, frames in (("gold-fish", 3), ("judo", 3), ("pigs", 1)):
        for i in range(frames):
            src = shared_data / OSVOS / seq / f"{i:05d}.png"
            dst = root / "Annotations" / "480p" / seq / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            write_jpeg(root / "JPEGImages" / "480p" / seq / f"{i:05d}.jpg", (480, 854), seed=i)
    judo = root / "Annotations" / "480p" / "judo" / "00001.png"
    with Image.open(judo) as im:
        ids = np.asarray(im).copy()
        palette = im.getpalette()
    ids[100:140, 300:380] = 255
    void = Image.fromarray(ids, mode="P")
    void.putpalette(palette)
    void.save(judo)
    for year in ("2016", "2017"):
        (root / "ImageSets" / year).mkdir(parents=True)
        (root / "ImageSets" / year / "val.txt").write_text("judo\ngold-fish\n")
    return root


def test_davis2017_palette_ids_and_void(davis2017: Path) -> None:
    source = DAVIS(davis2017, "2017-val")
    items = source.items()
    assert items == [("gold-fish", f"{i:05d}") for i in range(3)] + [("judo", f"{i:05d}") for i in range(3)]
    void_pixels = 0
    for seq, frame in items:
        sample = roundtrip(source.load((seq, frame)))
        ids = native(davis2017 / "Annotations" / "480p" / seq / f"{frame}.png")
        objects = (ids > 0) & (ids != 255)
        assert np.array_equal(sample.ins, np.where(ids == 255, 0, ids))
        assert np.array_equal(sample.sem, np.where(ids == 255, SEM_VOID, objects.astype(np.int64)))
        present = sorted(int(i) for i in np.unique(ids) if 0 < i < 255)
        assert sorted(int(i) for i in sample.meta["instances"]) == present
        assert all(v == {"category": 1, "iscrowd": False} for v in sample.meta["instances"].values())
        assert sample.meta["video"] == {"id": seq, "frame": int(frame)} and sample.meta["classes"] == {"1": "object"}
        void_pixels += int((sample.sem == SEM_VOID).sum())
    assert void_pixels == 40 * 80
    gold_fish = roundtrip(pickle.loads(pickle.dumps(source)).load(("gold-fish", "00000")))  # workers get a pickled copy
    assert len(gold_fish.meta["instances"]) == 5  # gold-fish is a five-object sequence


def test_davis_2016_split_merges_objects(davis2017: Path) -> None:
    sample = roundtrip(DAVIS(davis2017, "2016-val").load(("judo", "00001")))
    ids = native(davis2017 / "Annotations" / "480p" / "judo" / "00001.png")
    assert np.array_equal(sample.ins, ((ids > 0) & (ids != 255)).astype(np.int64))
    assert int((sample.sem == SEM_VOID).sum()) == 40 * 80
    assert sample.meta["instances"] == {"1": {"category": 1, "iscrowd": False}}


def test_davis_lists_every_sequence_without_imagesets(davis2017: Path) -> None:
    shutil.rmtree(davis2017 / "ImageSets")
    assert sorted({seq for seq, _ in DAVIS(davis2017, "2017-val").items()}) == ["gold-fish", "judo", "pigs"]


def test_davis_bad_inputs(davis2017: Path) -> None:
    source = DAVIS(davis2017, "2017-val")
    (davis2017 / "Annotations" / "480p" / "judo" / "00002.png").unlink()
    with pytest.raises(SampleError, match=r"judo/00002\.png: annotation file is missing"):
        source.load(("judo", "00002"))
    (davis2017 / "JPEGImages" / "480p" / "judo" / "00000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SampleError, match=r"judo/00000\.jpg: unreadable image"):
        source.load(("judo", "00000"))
    write_jpeg(davis2017 / "JPEGImages" / "480p" / "gold-fish" / "00001.jpg", (240, 427))
    with pytest.raises(SampleError, match=r"gold-fish/00001\.png: semantic mask is 854x480 but the image .*427x240"):
        source.load(("gold-fish", "00001"))
    (davis2017 / "ImageSets" / "2017" / "val.txt").write_text("judo\nbreakdance\n")
    with pytest.raises(SampleError, match=r"480p/breakdance: no such directory"):
        source.items()
    Image.new("RGB", (854, 480), (128, 0, 0)).save(davis2017 / "Annotations" / "480p" / "gold-fish" / "00002.png")
    with pytest.raises(SampleError, match=r"gold-fish/00002\.png: expected a palette or greyscale PNG"):
        source.load(("gold-fish", "00002"))


# --- YouTube-VOS: a minimal tree in the 2018/2019 layout --------------------------------------------------------
# youtube-vos.org/dataset/vos and the meta.json shipped with each split: <split>/JPEGImages/<video>/<frame>.jpg
# (every fifth frame), <split>/Annotations/<video>/<frame>.png (palette, index = object id), <split>/meta.json
# {"videos": {video: {"objects": {id: {"category": name, "frames": [...]}}}}}; valid annotates only the first
# frame of each object.


def ytvos_ids(frame: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """Object 1 on the left, object 2 on the right from frame 5 on."""
    ids = np.zeros(size, dtype=np.uint8)
    ids[4:12, 2:10] = 1
    if frame >= 5:
        ids[10:20, 20:30] = 2
    return ids


@pytest.fixture
def ytvos(tmp_path: Path) -> Path:
    meta = {"train": {"a1b2c3d4e5": {"1": "zebra", "2": "person"}, "f6g7h8i9j0": {"1": "person"}},
            "valid": {"k1l2m3n4o5": {"1": "dog", "2": "ape"}}}
    for split, videos in meta.items():
        doc = {"videos": {v: {"objects": {i: {"category": c, "frames": ["00000", "00005", "00010"]}
                                          for i, c in objs.items()}} for v, objs in videos.items()}}
        (tmp_path / split).mkdir()
        (tmp_path / split / "meta.json").write_text(json.dumps(doc))
        for video in videos:
            for frame in (0, 5, 10):
                write_jpeg(tmp_path / split / "JPEGImages" / video / f"{frame:05d}.jpg", (24, 32), seed=frame)
                labelled = split == "train" or frame in (0, 5)
                if labelled:
                    ids = ytvos_ids(frame) if video != "f6g7h8i9j0" else (ytvos_ids(0) > 0).astype(np.uint8)
                    if split == "valid" and frame == 5:
                        ids[ids == 1] = 0  # valid: the PNG holds only the objects that appear first there
                    write_palette(tmp_path / split / "Annotations" / video / f"{frame:05d}.png", ids)
    return tmp_path


def test_youtube_vos_train(ytvos: Path) -> None:
    source = YouTubeVOS(ytvos, "train")
    assert source.classes == {1: "person", 2: "zebra"}  # the split's category names, sorted
    items = source.items()
    assert items == [(v, f"{f:05d}") for v in ("a1b2c3d4e5", "f6g7h8i9j0") for f in (0, 5, 10)]
    sample = roundtrip(source.load(("a1b2c3d4e5", "00005")))
    ids = native(ytvos / "train" / "Annotations" / "a1b2c3d4e5" / "00005.png")
    assert np.array_equal(sample.ins, ids)
    assert np.array_equal(sample.sem, np.select([ids == 1, ids == 2], [2, 1], 0))  # 1 zebra -> 2, 2 person -> 1
    assert sample.meta["instances"] == {"1": {"category": 2, "iscrowd": False}, "2": {"category": 1, "iscrowd": False}}
    assert sample.meta["classes"] == {"1": "person", "2": "zebra"}
    assert sample.meta["video"] == {"id": "a1b2c3d4e5", "frame": 5} and sample.meta["size"] == [24, 32]
    assert sample.key == "youtube-vos__a1b2c3d4e5-00005"
    first = roundtrip(source.load(("a1b2c3d4e5", "00000")))
    assert sorted(first.meta["instances"]) == ["1"] and int(first.sem.max()) == 2


def test_youtube_vos_valid_keeps_unlabelled_frames(ytvos: Path) -> None:
    source = YouTubeVOS(ytvos, "valid")
    assert source.classes == {1: "ape", 2: "dog"}
    samples = [roundtrip(source.load(item)) for item in source.items()]
    assert [s.meta["video"]["frame"] for s in samples] == [0, 5, 10]
    assert samples[0].meta["instances"] == {"1": {"category": 2, "iscrowd": False}}
    assert samples[1].meta["instances"] == {"2": {"category": 1, "iscrowd": False}}
    assert np.array_equal(samples[1].sem, (ytvos_ids(5) == 2).astype(np.int64))
    last = samples[2]
    assert last.sem is None and last.ins is None and "instances" not in last.meta and "classes" not in last.meta


def test_youtube_vos_bad_inputs(ytvos: Path) -> None:
    write_palette(ytvos / "train" / "Annotations" / "f6g7h8i9j0" / "00005.png", ytvos_ids(5))  # id 2 not in meta
    with pytest.raises(SampleError, match=r"f6g7h8i9j0/00005\.png: instance ids \[2\] have no category"):
        YouTubeVOS(ytvos, "train").load(("f6g7h8i9j0", "00005"))
    (ytvos / "train" / "Annotations" / "f6g7h8i9j0" / "00010.png").unlink()
    with pytest.raises(SampleError, match=r"f6g7h8i9j0/00010\.png: annotation file is missing"):
        YouTubeVOS(ytvos, "train").load(("f6g7h8i9j0", "00010"))
    (ytvos / "valid" / "meta.json").write_text('{"videos": ')
    with pytest.raises(SampleError, match=r"valid/meta\.json: not valid JSON"):
        YouTubeVOS(ytvos, "valid")
    (ytvos / "valid" / "meta.json").write_text('{"videos": {"k1l2m3n4o5": {"objcts": {}}}}')
    with pytest.raises(SampleError, match=r"valid/meta\.json: not the YouTube-VOS meta\.json layout"):
        YouTubeVOS(ytvos, "valid")


# --- MOSE: a minimal tree in the layout of the henghuiding/MOSE-api README ---------------------------------------
# <split>/JPEGImages/<video>/%05d.jpg, <split>/Annotations/<video>/%05d.png ("color-palette mode PNGs like
# DAVIS"); every train frame is annotated, valid only the first frame.


@pytest.fixture
def mose(tmp_path: Path) -> Path:
    for split, labelled in (("train", (0, 1, 2)), ("valid", (0,))):
        for video in ("0a1b2c3d", "9z8y7x6w"):
            for frame in range(3):
                write_jpeg(tmp_path / split / "JPEGImages" / video / f"{frame:05d}.jpg", (16, 20), seed=frame)
                if frame in labelled:
                    ids = np.zeros((16, 20), dtype=np.uint8)
                    ids[2:6, 2 + frame:8 + frame] = 1
                    ids[9:15, 10:18] = 3
                    write_palette(tmp_path / split / "Annotations" / video / f"{frame:05d}.png", ids)
    return tmp_path


def test_mose(mose: Path) -> None:
    train = MOSE(mose, "train")
    assert train.items() == [(v, f"{f:05d}") for v in ("0a1b2c3d", "9z8y7x6w") for f in range(3)]
    sample = roundtrip(train.load(("9z8y7x6w", "00002")))
    ids = native(mose / "train" / "Annotations" / "9z8y7x6w" / "00002.png")
    assert np.array_equal(sample.ins, ids) and np.array_equal(sample.sem, (ids > 0).astype(np.int64))
    assert sample.meta["instances"] == {"1": {"category": 1, "iscrowd": False}, "3": {"category": 1, "iscrowd": False}}
    assert sample.meta["video"] == {"id": "9z8y7x6w", "frame": 2} and sample.key == "mose__9z8y7x6w-00002"
    valid = MOSE(mose, "valid")
    samples = [roundtrip(valid.load(item)) for item in valid.items()]
    assert len(samples) == 6 and [s.ins is not None for s in samples] == [True, False, False] * 2


def test_mose_bad_inputs(mose: Path) -> None:
    (mose / "train" / "Annotations" / "0a1b2c3d" / "00001.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(SampleError, match=r"0a1b2c3d/00001\.png: unreadable annotation image"):
        MOSE(mose, "train").load(("0a1b2c3d", "00001"))
    shutil.rmtree(mose / "valid" / "JPEGImages")
    with pytest.raises(SampleError, match=r"valid/JPEGImages: no such directory"):
        MOSE(mose, "valid").items()

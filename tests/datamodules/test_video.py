"""VideoDataModule on real DAVIS-2016 shards (two videos) and on small DAVIS-2017 / MOSE trees built from real
palette annotations: frame order, labels against the native masks, void, unannotated frames, selection."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.convert import convert
from datamodules.sources.video import DAVIS, MOSE
from datamodules.video import VideoDataModule
from seggpt_lab.canvas import IGNORE_LABEL
from tests.datamodules.sources.native_files import native, write_jpeg

OSVOS = Path("davis2017_osvos/results/semi-supervised/osvos")


@pytest.fixture(scope="module")
def davis2016(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(index of DAVIS-2016 val limited to its first two videos, blackswan (50 frames) and car-shadow (40),
    the DAVIS root)."""
    root = shared_data / "davis2016" / "DAVIS"
    out = tmp_path_factory.mktemp("davis2016")
    convert(DAVIS(root, "2016-val"), out, shard_size=32, limit=90, progress=False)
    return str(out / "davis" / "2016-val-index.json"), root


def sequences(dm: VideoDataModule) -> list[dict]:
    return list(dm.test_dataloader())


def test_davis2016_videos_against_native_files(davis2016: tuple[str, Path]) -> None:
    index, root = davis2016
    got = sequences(VideoDataModule(index))
    assert [v["key"] for v in got] == ["blackswan", "car-shadow"]
    for video, length in zip(got, (50, 40), strict=True):
        assert video["frames"] == list(range(length)) and len(video["images"]) == length
        assert video["labels"].shape == (length, 480, 854) and video["labels"].dtype == torch.long
        for t in range(0, length, 7):
            stem = f"{t:05d}"
            mask = native(root / "Annotations" / "480p" / video["key"] / f"{stem}.png")
            assert set(np.unique(mask)) <= {0, 255}
            assert np.array_equal(video["labels"][t].numpy(), (mask == 255).astype(np.int64))
            image = np.asarray(Image.open(root / "JPEGImages" / "480p" / video["key"] / f"{stem}.jpg").convert("RGB"))
            assert video["images"][t].dtype == torch.uint8
            assert np.array_equal(video["images"][t].permute(1, 2, 0).numpy(), image)


def test_davis2016_selection(davis2016: tuple[str, Path]) -> None:
    index, _ = davis2016
    short = sequences(VideoDataModule(index, max_frames=5))
    assert [v["frames"] for v in short] == [[0, 1, 2, 3, 4]] * 2
    assert [v["labels"].shape for v in short] == [(5, 480, 854)] * 2
    full = sequences(VideoDataModule(index, videos=["car-shadow"]))
    assert [v["key"] for v in full] == ["car-shadow"]
    assert torch.equal(full[0]["labels"][:5], short[1]["labels"])
    both = sequences(VideoDataModule(index, videos=["car-shadow", "blackswan"], max_frames=2, num_workers=2))
    assert [v["key"] for v in both] == ["blackswan", "car-shadow"]  # the split's order
    with pytest.raises(ValueError, match=r"no video 'dog' \(1 of the 2 videos asked for are missing\)"):
        VideoDataModule(index, videos=["blackswan", "dog"]).setup()
    with pytest.raises(ValueError, match=r"max_frames must be >= 1"):
        VideoDataModule(index, max_frames=0)


def copy_annotation(shared_data: Path, seq: str, frame: int, dst: Path) -> np.ndarray:
    """Copy a real OSVOS palette PNG (854 x 480 object ids) to `dst` and return its ids."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shared_data / OSVOS / seq / f"{frame:05d}.png", dst)
    return native(dst)


class FramesBackwards(DAVIS):
    """DAVIS with the frames of each video written last to first, so the loader must sort them."""

    def items(self) -> list[tuple[str, str]]:
        return super().items()[::-1]


def test_multi_object_void_and_unannotated_frames(shared_data: Path, tmp_path: Path) -> None:
    # DAVIS-2017: palette ids 1..N are objects, 255 void; frame 1 gets a void block; shards hold frames 2, 1, 0
    davis = tmp_path / "DAVIS"
    masks = []
    for t in range(3):
        write_jpeg(davis / "JPEGImages" / "480p" / "gold-fish" / f"{t:05d}.jpg", (480, 854), seed=t)
        png = davis / "Annotations" / "480p" / "gold-fish" / f"{t:05d}.png"
        ids = copy_annotation(shared_data, "gold-fish", t, png)
        if t == 1:
            ids[:40, :60] = 255
            im = Image.open(png)
            void = Image.fromarray(ids.astype(np.uint8), mode="P")
            void.putpalette(im.getpalette())
            void.save(png)
        masks.append(ids)
    convert(FramesBackwards(davis, "2017-val"), tmp_path / "shards", progress=False)
    [video] = sequences(VideoDataModule(str(tmp_path / "shards" / "davis" / "2017-val-index.json")))
    assert video["key"] == "gold-fish" and video["frames"] == [0, 1, 2]
    expected = np.stack([np.where(ids == 255, IGNORE_LABEL, ids) for ids in masks])
    assert np.array_equal(video["labels"].numpy(), expected) and video["labels"][0].max() == 5
    assert (video["labels"][1, :40, :60] == IGNORE_LABEL).all()

    # MOSE valid: only the first frame is annotated; the others become all IGNORE_LABEL
    mose = tmp_path / "MOSE"
    for t in (0, 5, 10):
        write_jpeg(mose / "valid" / "JPEGImages" / "judo" / f"{t:05d}.jpg", (480, 854), seed=t)
    first = copy_annotation(shared_data, "judo", 0, mose / "valid" / "Annotations" / "judo" / "00000.png")
    convert(MOSE(mose, "valid"), tmp_path / "shards", progress=False)
    [video] = sequences(VideoDataModule(str(tmp_path / "shards" / "mose" / "valid-index.json")))
    assert video["frames"] == [0, 5, 10]
    assert np.array_equal(video["labels"][0].numpy(), first)
    assert (video["labels"][1:] == IGNORE_LABEL).all() and len(video["images"]) == 3

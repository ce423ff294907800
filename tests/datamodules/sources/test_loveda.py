"""LoveDA converter on the real tiles of mmsegmentation's fixture, in its flat layout, in mmsegmentation's split
layout and in the official release's layout ({Train,Val}/{Urban,Rural}/{images_png,masks_png}, as in the LoveDA
README and data loaders, github.com/Junjue-Wang/LoveDA)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.schema import SEM_VOID, SampleError, decode_sample, encode_sample
from datamodules.sources.loveda import LoveDA

NAMES = {1: "building", 2: "road", 3: "water", 4: "barren", 5: "forest", 6: "agriculture"}


@pytest.fixture(scope="module")
def fixture_root(shared_data: Path) -> Path:
    return shared_data / "mmseg_fixtures" / "tests" / "data" / "pseudo_loveda_dataset"


def expected_sem(mask: Path) -> np.ndarray:
    """The README's values 0 no-data, 1 background, 2..7 classes -> SEM_VOID, 0, 1..6."""
    raw = np.asarray(Image.open(mask)).astype(np.int32)
    return np.where(raw == 0, SEM_VOID, raw - 1)


def test_flat_fixture_roundtrips_pixel_for_pixel(fixture_root: Path) -> None:
    source = LoveDA(fixture_root, "train")
    items = source.items()
    assert items == [(f"img_dir/{n}.png", f"ann_dir/{n}.png") for n in ("0", "1", "2")]
    assert len(items) == len(list((fixture_root / "img_dir").glob("*.png")))
    seen: set[int] = set()
    for image, mask in items:
        sample = decode_sample(encode_sample(source.load((image, mask))))  # type: ignore[arg-type]
        sem = expected_sem(fixture_root / mask)
        np.testing.assert_array_equal(sample.sem, sem)
        present = sorted(int(c) for c in np.unique(sem) if 0 < c < SEM_VOID)
        seen.update(present)
        assert sample.meta["classes"] == {str(c): NAMES[c] for c in present}
        assert sample.meta["size"] == [1024, 1024] and sample.meta["file"] == image
        assert sample.key == f"loveda__{Path(image).stem}"
        assert sample.image == (fixture_root / image).read_bytes() and sample.image_ext == "png"
    # raw 1 (background) is in every fixture tile and becomes 0; raw 5 (barren) is in none
    assert seen == {1, 2, 3, 5, 6}
    assert (source.load(items[0]).sem == 0).sum() == (np.asarray(Image.open(fixture_root / items[0][1])) == 1).sum()


def test_official_and_mmseg_split_layouts(fixture_root: Path, tmp_path: Path) -> None:
    official, mmseg = tmp_path / "LoveDA", tmp_path / "loveDA"
    # (official split folder, domain, tile number as in the release, fixture tile providing the pixels)
    placement = [("Train", "Urban", "1366", "0"), ("Train", "Rural", "0", "1"), ("Val", "Rural", "2522", "2")]
    for split, domain, number, source_tile in placement:
        for kind, dst in (("img_dir", "images_png"), ("ann_dir", "masks_png")):
            for root, folder in ((official / split / domain, dst), (mmseg / kind, split.lower())):
                (root / folder).mkdir(parents=True, exist_ok=True)
                shutil.copy(fixture_root / kind / f"{source_tile}.png", root / folder / f"{number}.png")
    for split in ("Train", "Val"):  # the official release always has both domains
        for domain in ("Urban", "Rural"):
            for folder in ("images_png", "masks_png"):
                (official / split / domain / folder).mkdir(parents=True, exist_ok=True)

    assert LoveDA(official, "train").items() == [("Train/Rural/images_png/0.png", "Train/Rural/masks_png/0.png"),
                                                 ("Train/Urban/images_png/1366.png", "Train/Urban/masks_png/1366.png")]
    assert LoveDA(official, "val").items() == [("Val/Rural/images_png/2522.png", "Val/Rural/masks_png/2522.png")]
    assert LoveDA(mmseg, "train").items() == [("img_dir/train/0.png", "ann_dir/train/0.png"),
                                              ("img_dir/train/1366.png", "ann_dir/train/1366.png")]
    # both layouts give the same samples under the same keys
    for split in ("train", "val"):
        a, b = LoveDA(official, split), LoveDA(mmseg, split)
        for item_a, item_b in zip(a.items(), b.items(), strict=True):
            sa, sb = a.load(item_a), b.load(item_b)
            assert sa.key == sb.key and sa.image == sb.image
            np.testing.assert_array_equal(sa.sem, sb.sem)
            np.testing.assert_array_equal(sa.sem, expected_sem(official / item_a[1]))
    assert LoveDA(official, "train").load(LoveDA(official, "train").items()[1]).key == "loveda__1366"


def test_official_layout_needs_both_domains(tmp_path: Path) -> None:
    (tmp_path / "Train" / "Urban" / "images_png").mkdir(parents=True)
    with pytest.raises(SampleError, match=r"Train/Rural/images_png: no such directory"):
        LoveDA(tmp_path, "train").items()


def test_test_split_is_not_offered(fixture_root: Path) -> None:
    with pytest.raises(ValueError, match="splits"):
        LoveDA(fixture_root, "test")


@pytest.fixture
def tile(fixture_root: Path, tmp_path: Path) -> Path:
    for kind in ("img_dir", "ann_dir"):
        (tmp_path / kind).mkdir()
        shutil.copy(fixture_root / kind / "0.png", tmp_path / kind / "0.png")
    return tmp_path


def test_unknown_label_value_names_the_mask(tile: Path) -> None:
    raw = np.asarray(Image.open(tile / "ann_dir" / "0.png")).copy()
    raw[0, 0] = 8
    Image.fromarray(raw).save(tile / "ann_dir" / "0.png")
    with pytest.raises(SampleError, match=r"ann_dir/0\.png: expected a one-channel mask with values 0\.\.7"):
        LoveDA(tile, "train").load(("img_dir/0.png", "ann_dir/0.png"))


def test_missing_mask_names_the_file(tile: Path) -> None:
    (tile / "ann_dir" / "0.png").unlink()
    with pytest.raises(SampleError, match=r"ann_dir/0\.png: annotation file is missing"):
        LoveDA(tile, "train").load(LoveDA(tile, "train").items()[0])


def test_mask_of_wrong_size_names_the_mask(tile: Path) -> None:
    Image.fromarray(np.ones((512, 512), np.uint8)).save(tile / "ann_dir" / "0.png")
    with pytest.raises(SampleError, match=r"ann_dir/0\.png: semantic mask is 512x512 but the image img_dir/0\.png "
                                          r"is 1024x1024"):
        LoveDA(tile, "train").load(("img_dir/0.png", "ann_dir/0.png"))

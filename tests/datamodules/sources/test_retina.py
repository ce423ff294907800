"""Retinal vessel converters: DRIVE on the real files in ../shared/data, CHASE_DB1, HRF and STARE on fabricated
trees that follow each dataset's published layout (cited per test)."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.schema import SEM_VOID, SampleError
from datamodules.sources.retina import CHASE, DRIVE, HRF, STARE
from tests.datamodules.sources.native_files import roundtrip


def vessel_map(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """(H, W) {0, 255} uint8: a few random lines standing in for vessels."""
    label = np.zeros(size, np.uint8)
    for _ in range(4):
        label[rng.integers(size[0]), :] = 255
        label[:, rng.integers(size[1])] = 255
    return label


def write_rgb(path: Path, rng: np.random.Generator, size: tuple[int, int], fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, format=fmt)


def save(path: Path, array: np.ndarray, mode: str | None = None, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path, format=fmt)


# --- DRIVE: real files -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def drive_root(shared_data: Path) -> Path:
    return shared_data / "drive" / "DRIVE"


@pytest.mark.parametrize(("split", "folder"), [("train", "training"), ("test", "test")])
def test_drive_real_masks_roundtrip_with_fov_as_ignore(drive_root: Path, split: str, folder: str) -> None:
    source = pickle.loads(pickle.dumps(DRIVE(drive_root, split)))  # sources travel to worker processes
    items = source.items()
    native = sorted(p.name for p in (drive_root / folder / "images").glob("*.tif"))
    assert items == native and len(items) == 4
    for item in items:
        stem = item[:-4]
        number = stem.split("_")[0]
        sample = roundtrip(source.load(item))
        manual = np.asarray(Image.open(drive_root / folder / "1st_manual" / f"{number}_manual1.gif"))
        fov = np.asarray(Image.open(drive_root / folder / "mask" / f"{stem}_mask.gif"))
        assert set(np.unique(manual)) == {0, 255} and set(np.unique(fov)) == {0, 255}
        expected = np.where(fov == 0, SEM_VOID, manual.astype(np.int32) // 255)
        np.testing.assert_array_equal(sample.sem, expected)
        assert sample.ins is None
        assert sample.key == f"drive__{stem}"
        assert sample.meta == {"source": "drive", "split": split, "task": "semantic", "size": [584, 565],
                               "file": f"{folder}/images/{item}", "classes": {"1": "vessel"}}
        # the TIFF becomes a lossless PNG: same pixels
        assert sample.image_ext == "png"
        np.testing.assert_array_equal(sample.rgb(), np.asarray(Image.open(drive_root / folder / "images" / item)))


def test_drive_vessels_outside_fov_become_ignore(drive_root: Path) -> None:
    # the first annotator marks a few vessel pixels just outside the FOV mask: the protocol never scores them
    source = DRIVE(drive_root, "train")
    manual = np.asarray(Image.open(drive_root / "training" / "1st_manual" / "21_manual1.gif")) > 0
    fov = np.asarray(Image.open(drive_root / "training" / "mask" / "21_training_mask.gif")) > 0
    outside = manual & ~fov
    assert outside.sum() == 8
    sem = source.load("21_training.tif").sem
    assert (sem[outside] == SEM_VOID).all()
    assert (sem == 1).sum() == (manual & fov).sum()


@pytest.fixture
def drive_copy(drive_root: Path, tmp_path: Path) -> Path:
    """A writable DRIVE tree holding training image 21 only."""
    for sub, name in (("images", "21_training.tif"), ("1st_manual", "21_manual1.gif"),
                      ("mask", "21_training_mask.gif")):
        (tmp_path / "DRIVE" / "training" / sub).mkdir(parents=True)
        shutil.copy(drive_root / "training" / sub / name, tmp_path / "DRIVE" / "training" / sub / name)
    return tmp_path / "DRIVE"


def test_drive_missing_annotation_names_the_file(drive_copy: Path) -> None:
    (drive_copy / "training" / "1st_manual" / "21_manual1.gif").unlink()
    with pytest.raises(SampleError, match=r"21_manual1\.gif: annotation file is missing"):
        DRIVE(drive_copy, "train").load("21_training.tif")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # PIL's own complaint about the truncated TIFF header
def test_drive_corrupt_image_names_the_file(drive_copy: Path) -> None:
    image = drive_copy / "training" / "images" / "21_training.tif"
    image.write_bytes(image.read_bytes()[:5000])
    with pytest.raises(SampleError, match=r"21_training\.tif: unreadable image") as err:
        DRIVE(drive_copy, "train").load("21_training.tif")
    assert "\n" not in str(err.value)


def test_drive_fov_mask_of_wrong_size_names_the_mask(drive_copy: Path) -> None:
    save(drive_copy / "training" / "mask" / "21_training_mask.gif", np.full((100, 80), 255, np.uint8), fmt="GIF")
    with pytest.raises(SampleError, match=r"21_training_mask\.gif: field-of-view mask is 80x100 but the image "
                                          r"training/images/21_training\.tif is 565x584"):
        DRIVE(drive_copy, "train").load("21_training.tif")


def test_drive_label_of_wrong_size_names_the_label(drive_copy: Path) -> None:
    save(drive_copy / "training" / "1st_manual" / "21_manual1.gif", np.zeros((584, 500), np.uint8), fmt="GIF")
    with pytest.raises(SampleError, match=r"21_manual1\.gif: semantic mask is 500x584"):
        DRIVE(drive_copy, "train").load("21_training.tif")


def test_drive_wrong_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SampleError, match=r"training/images: no such directory"):
        DRIVE(tmp_path, "train").items()


# --- CHASE_DB1: fabricated -----------------------------------------------------------------------------------------
# Layout of CHASEDB1.zip (Kingston University, researchdata.kingston.ac.uk/96; as listed by mmsegmentation's
# tools/dataset_converters/chase_db1.py): Image_NN{L,R}.jpg with Image_NN{L,R}_1stHO.png / _2ndHO.png beside it.

def test_chase_split_convention_and_masks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    size = (30, 40)
    labels = {}
    for stem in ("Image_01L", "Image_10R", "Image_11L", "Image_14R"):
        write_rgb(tmp_path / f"{stem}.jpg", rng, size, "JPEG")
        labels[stem] = vessel_map(rng, size)
        # the Kingston page describes 1/0 labels: write one file as a 1-bit PNG, the others as 8-bit 0/255
        save(tmp_path / f"{stem}_1stHO.png", labels[stem], mode="1" if stem == "Image_10R" else None)
        save(tmp_path / f"{stem}_2ndHO.png", 255 - labels[stem])  # a different observer: must not be read
    assert Image.open(tmp_path / "Image_10R_1stHO.png").mode == "1"

    assert CHASE(tmp_path, "train").items() == ["Image_01L.jpg", "Image_10R.jpg"]
    assert CHASE(tmp_path, "test").items() == ["Image_11L.jpg", "Image_14R.jpg"]
    for split in ("train", "test"):
        source = CHASE(tmp_path, split)
        for item in source.items():
            stem = item[:-4]
            sample = roundtrip(source.load(item))
            np.testing.assert_array_equal(sample.sem, labels[stem] // 255)  # no FOV: no SEM_VOID
            assert sample.image == (tmp_path / item).read_bytes() and sample.image_ext == "jpg"
            assert sample.meta["size"] == [30, 40] and sample.meta["classes"] == {"1": "vessel"}
            assert sample.key == f"chase__{stem}" and sample.meta["split"] == split


def test_chase_missing_annotation_names_the_file(tmp_path: Path) -> None:
    write_rgb(tmp_path / "Image_03L.jpg", np.random.default_rng(1), (20, 20), "JPEG")
    with pytest.raises(SampleError, match=r"Image_03L_1stHO\.png: annotation file is missing"):
        CHASE(tmp_path, "train").load("Image_03L.jpg")


# --- HRF: fabricated -----------------------------------------------------------------------------------------------
# Layout of HRF's all.zip (www5.cs.fau.de/research/data/fundus-images; Budai et al. 2013): images/NN_{h,g,dr}.jpg
# (dr files upper-case .JPG), manual1/NN_x.tif, mask/NN_x_mask.tif (RGB FOV masks).

def test_hrf_split_convention_fov_and_masks(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    size = (36, 54)
    yy, xx = np.mgrid[: size[0], : size[1]]
    fov = ((yy - 18) ** 2 + (xx - 27) ** 2 < 17**2).astype(np.uint8) * 255
    labels = {}
    for stem, ext in (("01_h", "jpg"), ("05_dr", "JPG"), ("06_g", "jpg"), ("15_dr", "JPG")):
        write_rgb(tmp_path / "images" / f"{stem}.{ext}", rng, size, "JPEG")
        labels[stem] = vessel_map(rng, size)
        save(tmp_path / "manual1" / f"{stem}.tif", labels[stem], fmt="TIFF")
        save(tmp_path / "mask" / f"{stem}_mask.tif", np.stack([fov] * 3, axis=-1), fmt="TIFF")

    assert HRF(tmp_path, "train").items() == ["01_h.jpg", "05_dr.JPG"]
    assert HRF(tmp_path, "test").items() == ["06_g.jpg", "15_dr.JPG"]
    for split in ("train", "test"):
        source = HRF(tmp_path, split)
        for item in source.items():
            stem = item[:-4]
            sample = roundtrip(source.load(item))
            expected = np.where(fov == 0, SEM_VOID, labels[stem].astype(np.int32) // 255)
            np.testing.assert_array_equal(sample.sem, expected)
            assert sample.meta["file"] == f"images/{item}" and sample.meta["size"] == [36, 54]
            assert sample.key == f"hrf__{stem}"


# --- STARE: fabricated ---------------------------------------------------------------------------------------------
# Layout of stare-images.tar / labels-ah.tar / labels-vk.tar (cecas.clemson.edu/~ahoover/stare/probing; Hoover et al.
# 2000), gunzipped: stare-images/imNNNN.ppm, labels-ah/imNNNN.ah.ppm, labels-vk/imNNNN.vk.ppm.

def test_stare_labelled_images_only_and_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    size = (32, 28)
    labels = {}
    for stem in ("im0001", "im0139", "im0162", "im0324", "im0010"):  # im0010 has no vessel labels
        write_rgb(tmp_path / "stare-images" / f"{stem}.ppm", rng, size, "PPM")
        if stem != "im0010":
            labels[stem] = vessel_map(rng, size)
            save(tmp_path / "labels-ah" / f"{stem}.ah.ppm", np.stack([labels[stem]] * 3, axis=-1), fmt="PPM")
            save(tmp_path / "labels-vk" / f"{stem}.vk.ppm", np.zeros((*size, 3), np.uint8), fmt="PPM")

    assert STARE(tmp_path, "train").items() == ["im0001", "im0139"]
    assert STARE(tmp_path, "test").items() == ["im0162", "im0324"]
    source = STARE(tmp_path, "test")
    for item in source.items():
        sample = roundtrip(source.load(item))
        np.testing.assert_array_equal(sample.sem, labels[item] // 255)  # Hoover's labels, not the all-zero vk ones
        np.testing.assert_array_equal(sample.rgb(), np.asarray(Image.open(tmp_path / "stare-images" / f"{item}.ppm")))
        assert sample.image_ext == "png" and sample.meta["file"] == f"stare-images/{item}.ppm"


def test_stare_gzipped_labels_ask_for_gunzip(tmp_path: Path) -> None:
    (tmp_path / "labels-ah").mkdir()
    (tmp_path / "labels-ah" / "im0001.ah.ppm.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(SampleError, match=r"labels-ah: holds \.ppm\.gz files: gunzip"):
        STARE(tmp_path, "train").items()

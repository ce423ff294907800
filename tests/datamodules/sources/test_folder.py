"""Folder converter (a user's own data) on real images and masks from ../shared/data laid out as a Folder tree:
PerSAM objects (palette PNG masks {0, 1}), LIP person parts (L masks 0..19) with split lists, and ISPRS
Potsdam/Vaihingen tiles re-coloured into colour masks with a palette.txt."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.schema import SEM_VOID, SampleError
from datamodules.sources.folder import Folder
from tests.datamodules.sources.native_files import native, roundtrip


@pytest.fixture(scope="module")
def perseg(shared_data: Path) -> Path:
    return shared_data / "perseg" / "examples"


@pytest.fixture(scope="module")
def fixtures(shared_data: Path) -> Path:
    return shared_data / "mmseg_fixtures" / "tests" / "data"


def perseg_tree(perseg: Path, root: Path, stems: list[str], mask_folder: str = "masks") -> Path:
    (root / "images").mkdir(parents=True)
    (root / mask_folder).mkdir()
    for stem in stems:
        shutil.copy(perseg / f"{stem}.jpg", root / "images" / f"{stem}.jpg")
        shutil.copy(perseg / f"{stem}.png", root / mask_folder / f"{stem}.png")
    return root


# --- mode "index" ----------------------------------------------------------------------------------------------------

def test_index_mode_on_all_perseg_objects(perseg: Path, tmp_path: Path) -> None:
    stems = sorted(p.stem for p in perseg.glob("*.jpg"))
    root = perseg_tree(perseg, tmp_path, stems)
    (root / "classes.txt").write_text("object\n")
    source = Folder(root, "train")  # no splits/: train is every image
    assert source.mode == "index" and source.task == "semantic" and source.classes == {1: "object"}
    items = source.items()
    assert items == [f"{s}.jpg" for s in stems] and len(items) == 9
    samples = {}
    for item in items:
        stem = item[:-4]
        sample = samples[stem] = roundtrip(source.load(item))
        mask = native(perseg / f"{stem}.png")
        assert Image.open(perseg / f"{stem}.png").mode == "P" and set(np.unique(mask)) == {0, 1}
        np.testing.assert_array_equal(sample.sem, mask)  # palette indices are the class ids
        assert sample.ins is None
        assert sample.meta == {"source": "folder", "split": "train", "task": "semantic", "size": list(mask.shape),
                               "file": f"images/{item}", "classes": {"1": "object"}}
        assert sample.key == f"folder__{stem}"
    # the sneaker photos are MPO files (a JPEG with extra frames): their bytes are kept, decoders read frame 0
    sneaker = samples["colorful_sneaker_00"]
    assert sneaker.image_ext == "jpg" and sneaker.meta["size"] == [2048, 2048]
    assert sneaker.image == (perseg / "colorful_sneaker_00.jpg").read_bytes()
    assert Image.open(perseg / "colorful_sneaker_00.jpg").format == "MPO"
    np.testing.assert_array_equal(sneaker.rgb(), np.asarray(Image.open(perseg / "colorful_sneaker_00.jpg")))
    assert samples["cat_00"].image == (perseg / "cat_00.jpg").read_bytes() and samples["cat_00"].image_ext == "jpg"


def test_index_mode_with_split_lists_and_class_names_on_lip(fixtures: Path, tmp_path: Path) -> None:
    lip = fixtures / "pseudo_lip_dataset"
    for split in ("train", "val"):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        (tmp_path / "splits").mkdir(exist_ok=True)
        image = next((lip / f"{split}_images").glob("*.jpg"))
        shutil.copy(image, tmp_path / "images" / image.name)
        shutil.copy(lip / f"{split}_segmentations" / f"{image.stem}.png", tmp_path / "masks" / f"{image.stem}.png")
        (tmp_path / "splits" / f"{split}.txt").write_text(image.stem + "\n")
    # LIP's 19 part names (LIP dataset page, sysu-hcp.net/lip), background 0 not listed
    parts = ["Hat", "Hair", "Glove", "Sunglasses", "UpperClothes", "Dress", "Coat", "Socks", "Pants", "Jumpsuits",
             "Scarf", "Skirt", "Face", "Left-arm", "Right-arm", "Left-leg", "Right-leg", "Left-shoe", "Right-shoe"]
    (tmp_path / "classes.txt").write_text("\n".join(parts) + "\n")

    assert Folder(tmp_path, "train").items() == ["684_2150041.jpg"]
    assert Folder(tmp_path, "val").items() == ["86_185913.jpg"]
    with pytest.raises(SampleError, match=r"splits/test\.txt: list file is missing"):
        Folder(tmp_path, "test").items()
    for split, stem in (("train", "684_2150041"), ("val", "86_185913")):
        sample = roundtrip(Folder(tmp_path, split).load(f"{stem}.jpg"))
        mask = native(lip / f"{split}_segmentations" / f"{stem}.png")
        np.testing.assert_array_equal(sample.sem, mask)
        assert sample.meta["classes"] == {str(c): parts[c - 1] for c in np.unique(mask) if c > 0}
        assert sample.meta["split"] == split
    # the val photo is a greyscale JPEG: its bytes are kept
    assert Image.open(lip / "val_images" / "86_185913.jpg").mode == "L"
    assert Folder(tmp_path, "val").load("86_185913.jpg").image == (lip / "val_images" / "86_185913.jpg").read_bytes()


def test_index_mode_void_and_explicit_class_ids(fixtures: Path, tmp_path: Path) -> None:
    # Vaihingen tile, labels 0..5; mark a block void (255) as a user's VOC-style mask would
    tile = fixtures / "pseudo_vaihingen_dataset"
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    shutil.copy(tile / "img_dir" / "area1_0_0_512_512.png", tmp_path / "images" / "area1.png")
    raw = native(tile / "ann_dir" / "area1_0_0_512_512.png")
    raw[:50, :60] = 255
    Image.fromarray(raw.astype(np.uint8)).save(tmp_path / "masks" / "area1.png")
    (tmp_path / "classes.txt").write_text("0 ignored-background-line\n2 building\n5 car\n")
    source = Folder(tmp_path, "train")
    assert source.classes == {2: "building", 5: "car"}
    sample = roundtrip(source.load("area1.png"))
    np.testing.assert_array_equal(sample.sem, np.where(raw == 255, SEM_VOID, raw))
    assert sample.meta["classes"] == {"1": "1", "2": "building", "3": "3", "4": "4", "5": "car"}


# --- mode "colour" ---------------------------------------------------------------------------------------------------

# ISPRS 2D labelling colour legend; the palette's second line is a void colour, which takes no class id
PALETTE = """255 0 0 clutter
0 0 0 ignore
255 255 255 impervious surfaces
0 0 255 building
0 255 255 low vegetation
0 255 0 tree
255 255 0 car
"""
COLOURS = {0: (0, 0, 0), 1: (255, 255, 255), 2: (0, 0, 255), 3: (0, 255, 255), 4: (0, 255, 0), 5: (255, 255, 0)}


def colour_tree(fixtures: Path, root: Path) -> dict[str, np.ndarray]:
    """Potsdam and Vaihingen tiles with their L labels (0..5) painted as RGB masks: 0 in the void colour."""
    (root / "images").mkdir()
    (root / "masks").mkdir()
    (root / "palette.txt").write_text(PALETTE)
    labels = {}
    for name, stem in (("potsdam", "2_10_0_0_512_512"), ("vaihingen", "area1_0_0_512_512")):
        tile = fixtures / f"pseudo_{name}_dataset"
        shutil.copy(tile / "img_dir" / f"{stem}.png", root / "images" / f"{name}.png")
        labels[name] = native(tile / "ann_dir" / f"{stem}.png")
        rgb = np.zeros((*labels[name].shape, 3), np.uint8)
        for value, colour in COLOURS.items():
            rgb[labels[name] == value] = colour
        Image.fromarray(rgb).save(root / "masks" / f"{name}.png")
    return labels


def test_colour_mode_with_palette_on_isprs_tiles(fixtures: Path, tmp_path: Path) -> None:
    labels = colour_tree(fixtures, tmp_path)
    source = Folder(tmp_path, "train")
    assert source.mode == "colour"
    assert source.classes == {1: "impervious surfaces", 2: "building", 3: "low vegetation", 4: "tree", 5: "car"}
    assert source.items() == ["potsdam.png", "vaihingen.png"]
    for name, label in labels.items():
        assert set(np.unique(label)) == {0, 1, 2, 3, 4, 5}
        sample = roundtrip(source.load(f"{name}.png"))
        np.testing.assert_array_equal(sample.sem, np.where(label == 0, SEM_VOID, label))
        assert sample.meta["classes"] == {str(k): v for k, v in source.classes.items()}
        assert sample.meta["size"] == [512, 512]


def test_colour_mode_unknown_colour_names_the_mask(fixtures: Path, tmp_path: Path) -> None:
    colour_tree(fixtures, tmp_path)
    rgb = np.asarray(Image.open(tmp_path / "masks" / "potsdam.png")).copy()
    rgb[3, 3] = (12, 34, 56)
    Image.fromarray(rgb).save(tmp_path / "masks" / "potsdam.png")
    with pytest.raises(SampleError, match=r"masks/potsdam\.png: colours \['12 34 56'\] are not in palette\.txt"):
        Folder(tmp_path, "train").load("potsdam.png")


def test_colour_mode_bad_palette_line_and_classes_clash(fixtures: Path, tmp_path: Path) -> None:
    colour_tree(fixtures, tmp_path)
    (tmp_path / "classes.txt").write_text("building\n")
    with pytest.raises(SampleError, match=r"classes\.txt: palette\.txt already names the classes"):
        Folder(tmp_path, "train")
    (tmp_path / "classes.txt").unlink()
    (tmp_path / "palette.txt").write_text("0 0 0 background\n300 0 0 road\n")
    with pytest.raises(SampleError, match=r"palette\.txt: line '300 0 0 road' is not `R G B NAME`"):
        Folder(tmp_path, "train")


def test_rgb_mask_in_index_mode_asks_for_a_palette(fixtures: Path, tmp_path: Path) -> None:
    colour_tree(fixtures, tmp_path)
    (tmp_path / "palette.txt").unlink()
    with pytest.raises(SampleError, match=r"masks/potsdam\.png: is not a one-channel .*add palette\.txt"):
        Folder(tmp_path, "train").load("potsdam.png")


# --- mode "instance" -------------------------------------------------------------------------------------------------

def test_instance_mode_with_categories(perseg: Path, tmp_path: Path) -> None:
    stems = ["cat_00", "duck_toy_01"]
    root = perseg_tree(perseg, tmp_path, stems, mask_folder="instances")
    # a second instance in the duck photo: a void band and an id-7 block, as a user's own instance mask would hold
    duck = native(perseg / "duck_toy_01.png")
    ids = duck.copy()
    ids[:40, :] = 255
    ids[-100:, -100:] = 7
    Image.fromarray(ids.astype(np.uint8)).save(root / "instances" / "duck_toy_01.png")
    (root / "classes.txt").write_text("1 cat\n3 duck toy\n4 table\n")
    (root / "categories.json").write_text(json.dumps({"cat_00": {"1": 1}, "duck_toy_01": {"1": 3, "7": 4}}))
    source = pickle.loads(pickle.dumps(Folder(root, "train")))  # sources travel to worker processes
    assert source.mode == "instance" and source.task == "instance"

    cat = roundtrip(source.load("cat_00.jpg"))
    mask = native(perseg / "cat_00.png")
    np.testing.assert_array_equal(cat.ins, mask)
    np.testing.assert_array_equal(cat.sem, mask)
    assert cat.meta["task"] == "instance" and cat.meta["instances"] == {"1": {"category": 1, "iscrowd": False}}

    sample = roundtrip(source.load("duck_toy_01.jpg"))
    np.testing.assert_array_equal(sample.ins, np.where(ids == 255, 0, ids))
    expected_sem = np.select([ids == 255, ids == 1, ids == 7], [SEM_VOID, 3, 4], 0)
    np.testing.assert_array_equal(sample.sem, expected_sem)
    assert sample.meta["instances"] == {"1": {"category": 3, "iscrowd": False},
                                        "7": {"category": 4, "iscrowd": False}}
    assert sample.meta["classes"] == {"3": "duck toy", "4": "table"}


def test_instance_mode_without_categories_is_one_class(perseg: Path, tmp_path: Path) -> None:
    root = perseg_tree(perseg, tmp_path, ["cat_01"], mask_folder="instances")
    source = Folder(root, "train")
    assert source.classes == {1: "object"}
    sample = source.load("cat_01.jpg")
    assert sample.meta["instances"] == {"1": {"category": 1, "iscrowd": False}}
    assert sample.meta["classes"] == {"1": "object"}


def test_instance_without_category_names_the_mask(perseg: Path, tmp_path: Path) -> None:
    root = perseg_tree(perseg, tmp_path, ["cat_01", "cat_02"], mask_folder="instances")
    (root / "categories.json").write_text(json.dumps({"cat_01": {"2": 1}}))
    with pytest.raises(SampleError, match=r"instances/cat_01\.png: instance ids \[1\] have no category"):
        Folder(root, "train").load("cat_01.jpg")
    with pytest.raises(SampleError, match=r"categories\.json: has no entry for image 'cat_02'"):
        Folder(root, "train").load("cat_02.jpg")
    (root / "categories.json").write_text("{not json")
    with pytest.raises(SampleError, match=r"categories\.json: not valid JSON"):
        Folder(root, "train")


# --- bad input -------------------------------------------------------------------------------------------------------

def test_missing_mask_names_the_file(perseg: Path, tmp_path: Path) -> None:
    root = perseg_tree(perseg, tmp_path, ["cat_00", "cat_01"])
    (root / "masks" / "cat_01.png").unlink()
    with pytest.raises(SampleError, match=r"masks/cat_01\.png: annotation file is missing"):
        Folder(root, "train").load("cat_01.jpg")


def test_mask_of_wrong_size_names_the_mask(perseg: Path, tmp_path: Path) -> None:
    root = perseg_tree(perseg, tmp_path, ["cat_00"])
    Image.fromarray(np.zeros((100, 120), np.uint8)).save(root / "masks" / "cat_00.png")
    with pytest.raises(SampleError, match=r"masks/cat_00\.png: semantic mask is 120x100 but the image "
                                          r"images/cat_00\.jpg is 1282x1282"):
        Folder(root, "train").load("cat_00.jpg")


def test_unreadable_image_names_the_file(perseg: Path, tmp_path: Path) -> None:
    root = perseg_tree(perseg, tmp_path, ["cat_00"])
    (root / "images" / "cat_00.jpg").write_bytes(b"not an image at all")
    with pytest.raises(SampleError, match=r"images/cat_00\.jpg: unreadable image") as err:
        Folder(root, "train").load("cat_00.jpg")
    assert "\n" not in str(err.value)


def test_layout_errors(perseg: Path, tmp_path: Path) -> None:
    root = perseg_tree(perseg, tmp_path, ["cat_00"])
    shutil.copy(perseg / "cat_00.png", root / "images" / "cat_00.png")  # two images with one stem
    with pytest.raises(SampleError, match=r"images/cat_00\.png: has the same stem as cat_00\.jpg"):
        Folder(root, "train").items()
    (root / "images" / "cat_00.png").unlink()
    (root / "splits").mkdir()
    (root / "splits" / "val.txt").write_text("cat_00\ncat_99\n")
    with pytest.raises(SampleError, match=r"splits/val\.txt: lists \['cat_99'\] with no image"):
        Folder(root, "val").items()
    with pytest.raises(SampleError, match=r"splits/train\.txt: list file is missing"):
        Folder(root, "train").items()  # with splits/, train needs its own list
    (root / "instances").mkdir()
    with pytest.raises(SampleError, match="holds both masks/ and instances/"):
        Folder(root, "train")

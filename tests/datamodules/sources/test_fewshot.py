"""Few-shot converters: FSS-1000 on the real example of its repository and on a tree in the dataset's layout;
PASCAL-5i and COCO-20i on minimal trees in HSNet's layout (github.com/juhongm999/hsnet README and
data/{fss,pascal,coco}.py)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.schema import SEM_VOID, SampleError
from datamodules.sources import get_source
from datamodules.sources.fewshot import FSS1000, Coco20i, Pascal5i
from tests.datamodules.sources.native_files import native, roundtrip, write_jpeg


def write_mask(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8)).save(path)


def test_registry_names_the_fewshot_classes() -> None:
    assert get_source("fss1000") is FSS1000 and get_source("pascal5i") is Pascal5i and get_source("coco20i") is Coco20i


# --- FSS-1000: the real example of github.com/HKUSTCV/FSS-1000 (imgs/example/support/{image,label}) -------------


def test_fss1000_real_example(shared_data: Path) -> None:
    root = shared_data / "fss1000_example"
    support = root / "imgs" / "example" / "support"
    source = FSS1000(root, "train")
    assert source.classes == {1: "example"}
    items = source.items()
    assert items == [("example", str(n)) for n in range(1, 6)]
    assert len(items) == len(list((support / "image").glob("*.jpg"))) == len(list((support / "label").glob("*.png")))
    foreground = {}
    for _, stem in items:
        sample = roundtrip(source.load(("example", stem)))
        label = native(support / "label" / f"{stem}.png")
        assert label.shape == (224, 224, 3) and set(np.unique(label)) == {0, 1}  # 0/1 masks, not 0/255
        assert np.array_equal(sample.sem, (label[..., 2] > 0).astype(np.int64))  # autolabel.py reads blue
        assert sample.ins is None and sample.key == f"fss1000__example-{stem}"
        assert sample.image == (support / "image" / f"{stem}.jpg").read_bytes()
        assert sample.meta["size"] == [224, 224] and sample.meta["classes"] == {"1": "example"}
        assert sample.meta["task"] == "semantic" and sample.meta["file"] == f"imgs/example/support/image/{stem}.jpg"
        foreground[stem] = int(sample.sem.sum())
    # label 1 has 899 white pixels and one (0, 1, 1); label 4 has 2936 white and one (1, 1, 0)
    assert foreground["1"] == 900 and foreground["4"] == 2936


def test_fss1000_real_test_list(shared_data: Path) -> None:
    root = shared_data / "fss1000_example"
    test_classes = (root / "fss_test_set.txt").read_text().split()
    assert len(test_classes) == 240 and "example" not in test_classes
    with pytest.raises(SampleError, match=r"fss1000_example: no class folder of split 'test' found"):
        FSS1000(root, "test").items()
    with pytest.raises(SampleError, match=r"splits/fss/val\.txt: list file is missing"):
        FSS1000(root, "val").items()


# --- FSS-1000: the dataset's own layout, <class>/{1..10}.{jpg,png} with black/white masks ---------------------------


@pytest.fixture
def fss(tmp_path: Path) -> Path:
    """Three classes with images 1, 2 and 10; masks 0/255 with a strip of 127 and of 128 to check the threshold."""
    for k, name in enumerate(("zucchini", "abacus", "bus")):
        for n in (1, 2, 10):
            write_jpeg(tmp_path / name / f"{n}.jpg", (12, 16), seed=n)
            mask = np.zeros((12, 16), dtype=np.uint8)
            mask[2:8, 3 + k:9 + n] = 255
            mask[10, :] = 127
            mask[11, :] = 128
            write_mask(tmp_path / name / f"{n}.png", mask if n != 2 else np.stack([mask] * 3, axis=-1))
    (tmp_path / "splits" / "fss").mkdir(parents=True)
    for subset, names in (("trn", "abacus\n"), ("val", "zucchini\n"), ("test", "bus\n")):
        (tmp_path / "splits" / "fss" / f"{subset}.txt").write_text(names)
    return tmp_path


def test_fss1000_dataset_layout(fss: Path) -> None:
    source = pickle.loads(pickle.dumps(FSS1000(fss, "test")))  # workers get a pickled copy
    assert source.classes == {1: "abacus", 2: "bus", 3: "zucchini"}  # sorted folder names; `splits` is no class
    assert source.items() == [("bus", "1"), ("bus", "2"), ("bus", "10")]
    for n in ("1", "2", "10"):
        sample = roundtrip(source.load(("bus", n)))
        mask = native(fss / "bus" / f"{n}.png")
        grey = mask if mask.ndim == 2 else mask[..., 0]
        assert np.array_equal(sample.sem, np.where(grey >= 128, 2, 0))
        assert int((sample.sem[11] == 2).sum()) == 16 and int(sample.sem[10].sum()) == 0
        assert sample.meta["classes"] == {"2": "bus"} and sample.meta["file"] == f"bus/{n}.jpg"
    assert FSS1000(fss, "train").items() == [("abacus", n) for n in ("1", "2", "10")]
    assert [c for c, _ in FSS1000(fss, "val").items()] == ["zucchini"] * 3


def test_fss1000_split_fallbacks(fss: Path) -> None:
    for subset in ("trn", "val", "test"):
        (fss / "splits" / "fss" / f"{subset}.txt").unlink()
    (fss / "fss_test_set.txt").write_text("bus\r\nhotel_slipper\r\n")  # the repository's list has CRLF endings
    assert [c for c, _ in FSS1000(fss, "test").items()] == ["bus"] * 3
    assert [c for c, _ in FSS1000(fss, "train").items()] == ["abacus"] * 3 + ["zucchini"] * 3
    (fss / "fss_test_set.txt").unlink()
    assert len(FSS1000(fss, "val").items()) == 9


def test_fss1000_bad_inputs(fss: Path) -> None:
    (fss / "splits" / "fss" / "test.txt").write_text("bus\nwaffle_iron\n")
    with pytest.raises(SampleError, match=r"waffle_iron: no such class folder \(1 of the 2 classes"):
        FSS1000(fss, "test").items()
    source = FSS1000(fss, "train")
    (fss / "abacus" / "2.png").unlink()
    with pytest.raises(SampleError, match=r"abacus/2\.png: annotation file is missing"):
        source.load(("abacus", "2"))
    write_jpeg(fss / "abacus" / "10.jpg", (13, 16))
    with pytest.raises(SampleError, match=r"abacus/10\.png: semantic mask is 16x12 but the image abacus/10\.jpg"):
        source.load(("abacus", "10"))


# --- PASCAL-5i: HSNet's layout, VOC2012/{JPEGImages,SegmentationClassAug} + splits/pascal/{trn,val}/fold*.txt -------


def voc_mask(name: str) -> np.ndarray:
    """Aeroplane (1, fold 0) and person (15, fold 2) everywhere; car (7, fold 1) only in 2008_000002; 255 borders."""
    mask = np.zeros((10, 14), dtype=np.uint8)
    mask[1:4, 1:5] = 1
    mask[5:9, 8:12] = 15
    mask[4, :] = 255
    if name == "2008_000002":
        mask[6:9, 1:4] = 7
    return mask


@pytest.fixture
def pascal(tmp_path: Path) -> Path:
    names = ("2007_000001", "2008_000002", "2009_000003")
    for k, name in enumerate(names):
        write_jpeg(tmp_path / "VOC2012" / "JPEGImages" / f"{name}.jpg", (10, 14), seed=k)
        write_mask(tmp_path / "VOC2012" / "SegmentationClassAug" / f"{name}.png", voc_mask(name))
    lists = {"val/fold0.txt": "2007_000001__1\n2008_000002__1\n", "val/fold1.txt": "2008_000002__7\n",
             "trn/fold0.txt": "2009_000003__1\n", "trn/fold1.txt": "2008_000002__7\n",
             "trn/fold2.txt": "2008_000002__15\n2009_000003__15\n", "trn/fold3.txt": ""}
    for path, text in lists.items():
        (tmp_path / "splits" / "pascal" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "splits" / "pascal" / path).write_text(text)
    return tmp_path


def test_pascal5i_folds(pascal: Path) -> None:
    val = Pascal5i(pascal, "fold0-val")
    assert val.classes == {1: "aeroplane", 2: "bicycle", 3: "bird", 4: "boat", 5: "bottle"}
    assert val.items() == ["2007_000001", "2008_000002"]
    sample = roundtrip(val.load("2008_000002"))
    raw = native(pascal / "VOC2012" / "SegmentationClassAug" / "2008_000002.png")
    assert np.array_equal(sample.sem, np.select([raw == 1, raw == 255], [1, SEM_VOID], 0))
    assert sample.meta["classes"] == {"1": "aeroplane"} and sample.key == "pascal5i__2008_000002"
    assert sample.meta["size"] == [10, 14] and sample.meta["file"] == "VOC2012/JPEGImages/2008_000002.jpg"

    train = Pascal5i(pascal, "fold0-train")
    assert sorted(train.classes) == list(range(6, 21))
    assert train.items() == ["2008_000002", "2009_000003"]  # the lists of folds 1, 2, 3, each image once
    sample = roundtrip(train.load("2008_000002"))
    assert np.array_equal(sample.sem, np.select([raw == 7, raw == 15, raw == 255], [7, 15, SEM_VOID], 0))
    assert sample.meta["classes"] == {"7": "car", "15": "person"}
    assert Pascal5i(pascal, "fold3-val").classes == {16: "pottedplant", 17: "sheep", 18: "sofa", 19: "train",
                                                      20: "tvmonitor"}


def test_pascal5i_without_split_lists_takes_every_mask(pascal: Path) -> None:
    (pascal / "splits").rename(pascal / "hsnet_splits")
    assert Pascal5i(pascal, "fold2-val").items() == ["2007_000001", "2008_000002", "2009_000003"]


def test_pascal5i_bad_inputs(pascal: Path) -> None:
    write_mask(pascal / "VOC2012" / "SegmentationClassAug" / "2007_000001.png", np.full((10, 14), 21))
    with pytest.raises(SampleError, match=r"2007_000001\.png: values \[21\] are neither class ids 0\.\.20 nor 255"):
        Pascal5i(pascal, "fold0-val").load("2007_000001")
    (pascal / "VOC2012" / "JPEGImages" / "2008_000002.jpg").unlink()
    with pytest.raises(SampleError, match=r"JPEGImages/2008_000002\.jpg: image file is missing"):
        Pascal5i(pascal, "fold0-val").load("2008_000002")
    (pascal / "splits" / "pascal" / "trn" / "fold3.txt").unlink()
    with pytest.raises(SampleError, match=r"trn/fold3\.txt: list file is missing"):
        Pascal5i(pascal, "fold0-train").items()


# --- COCO-20i: HSNet's layout, COCO2014/{train2014,val2014}, annotations/<set>/*.png, splits/coco/*/fold*.pkl ------


def coco_mask() -> np.ndarray:
    """person (id 1: fold 0), bicycle (id 2: fold 1) and airplane (id 5: fold 0), 255 on one row."""
    mask = np.zeros((8, 9), dtype=np.uint8)
    mask[0:3, 0:3], mask[4:7, 0:3], mask[4:7, 5:8], mask[7, :] = 1, 2, 5, 255
    return mask


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    base = tmp_path / "COCO2014"
    files = {"train2014": ["COCO_train2014_000000000009", "COCO_train2014_000000000025"],
             "val2014": ["COCO_val2014_000000000042"]}
    for image_set, stems in files.items():
        for k, stem in enumerate(stems):
            write_jpeg(base / image_set / f"{stem}.jpg", (8, 9), seed=k)
            write_mask(base / "annotations" / image_set / f"{stem}.png", coco_mask())
    # HSNet's pickles map 0-based class indices to image files relative to COCO2014
    # (index 4, airplane, is a test class of fold 0, so the fold0-train split must not take its image)
    lists = {"trn": {1: [f"train2014/{s}.jpg" for s in files["train2014"]], 4: ["train2014/COCO_train2014_x.jpg"]},
             "val": {0: ["val2014/COCO_val2014_000000000042.jpg"], 4: ["val2014/COCO_val2014_000000000042.jpg"]}}
    for subset, by_class in lists.items():
        (tmp_path / "splits" / "coco" / subset).mkdir(parents=True)
        with (tmp_path / "splits" / "coco" / subset / "fold0.pkl").open("wb") as f:
            pickle.dump(by_class, f)
    return tmp_path


def test_coco20i_interleaved_folds(coco: Path) -> None:
    val = Coco20i(coco, "fold0-val")
    names = list(val.classes.values())
    assert len(val.classes) == 20 and names[:6] == ["person", "airplane", "boat", "parking meter", "dog", "elephant"]
    assert list(val.classes)[:3] == [1, 5, 9] and list(val.classes)[-1] == 77
    assert val.items() == ["val2014/COCO_val2014_000000000042"]  # listed under two classes, converted once
    sample = roundtrip(val.load("val2014/COCO_val2014_000000000042"))
    raw = native(coco / "COCO2014" / "annotations" / "val2014" / "COCO_val2014_000000000042.png")
    assert np.array_equal(sample.sem, np.select([raw == 1, raw == 5, raw == 255], [1, 5, SEM_VOID], 0))
    assert sample.meta["classes"] == {"1": "person", "5": "airplane"}
    assert sample.key == "coco20i__COCO_val2014_000000000042"

    train = Coco20i(coco, "fold0-train")
    assert len(train.classes) == 60 and 1 not in train.classes and train.classes[2] == "bicycle"
    items = train.items()
    assert items == ["train2014/COCO_train2014_000000000009", "train2014/COCO_train2014_000000000025"]
    sample = roundtrip(train.load(items[1]))
    assert np.array_equal(sample.sem, np.select([raw == 2, raw == 255], [2, SEM_VOID], 0))
    assert sample.meta["file"] == "COCO2014/train2014/COCO_train2014_000000000025.jpg"


def test_coco20i_without_pickle_takes_every_mask(coco: Path) -> None:
    assert Coco20i(coco, "fold1-train").items() == ["train2014/COCO_train2014_000000000009",
                                                     "train2014/COCO_train2014_000000000025"]


def test_coco20i_bad_inputs(coco: Path) -> None:
    (coco / "splits" / "coco" / "val" / "fold0.pkl").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(SampleError, match=r"val/fold0\.pkl: not HSNet's"):
        Coco20i(coco, "fold0-val").items()
    write_mask(coco / "COCO2014" / "annotations" / "val2014" / "COCO_val2014_000000000042.png", np.full((8, 9), 81))
    with pytest.raises(SampleError, match=r"COCO_val2014_000000000042\.png: values \[81\] are neither class ids"):
        Coco20i(coco, "fold0-val").load("val2014/COCO_val2014_000000000042")


class _Exploit:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


def test_coco20i_split_lists_cannot_run_code(coco: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (coco / "splits" / "coco" / "val" / "fold0.pkl").write_bytes(pickle.dumps({0: _Exploit()}))
    with pytest.raises(SampleError, match=r"val/fold0\.pkl: not HSNet's .*refusing to import builtins.print"):
        Coco20i(coco, "fold0-val").items()
    assert "ran code" not in capsys.readouterr().out

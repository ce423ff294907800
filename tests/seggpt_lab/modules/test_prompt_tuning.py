"""In-context tuning: the data module's held-out split, the frozen model, the prompt's bounds, and the CI recipe
on the real LoveDA tiles (the tuned prompt beats the one-shot example it starts from on the held-out tile)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from datamodules.convert import convert
from datamodules.prompt_tuning import PromptTuningDataModule
from datamodules.shards import read_index
from datamodules.sources.loveda import LoveDA
from seggpt_lab.checkpoint import load_pretrained, save_checkpoint
from seggpt_lab.cli import main
from seggpt_lab.metrics import SemanticIoU
from seggpt_lab.model import SegGPT
from seggpt_lab.modules.prompt_tuning import class_balanced
from seggpt_lab.prediction import predict_with_prompt
from seggpt_lab.prompts import load_prompt
from tests.conftest import REPO

RECIPE = REPO / "recipes" / "prompt_tune_loveda.yaml"


@pytest.fixture(scope="module")
def loveda(shared_data: Path, tmp_path_factory) -> Path:
    """The three real LoveDA tiles as shards: <tmp>/loveda/train-index.json."""
    out = tmp_path_factory.mktemp("shards")
    convert(LoveDA(shared_data / "mmseg_fixtures" / "tests" / "data" / "pseudo_loveda_dataset", "train"), out,
            workers=1)
    return out / "loveda" / "train-index.json"


@pytest.fixture(scope="module")
def frozen(tmp_path_factory) -> Path:
    """A quickstart-shaped model (random weights, fixed seed) as a checkpoint file."""
    config = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text())
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "frozen.pth"
    save_checkpoint(SegGPT(**config["model"]["init_args"]["model"]["init_args"]), path)
    return path


def test_data_holds_validation_keys_out_of_training_and_tiles_them(loveda: Path) -> None:
    data = PromptTuningDataModule(str(loveda), str(loveda), size=(32, 32), val_keys=["loveda__2"], val_tile=256)
    data.setup()
    assert data.train_set.keys == ["loveda__0", "loveda__1"]
    assert len(data.val_set) == 16  # 1024 / 256 squared
    item = data.val_set[5]
    assert item["key"] == "loveda__2-256-256" and item["image"].shape == (3, 256, 256)
    assert data.class_ids == sorted(int(c) for c in read_index(loveda)["class_images"] if c != "0")
    assert data.class_names[data.class_ids.index(1)] == "building"
    crop = data.train_set[0]
    assert crop["image"].shape == (3, 32, 32) and crop["image"].dtype == torch.uint8
    assert crop["label"].shape == (32, 32)
    assert set(np.unique(crop["label"].numpy())) <= {0, *data.class_ids, 255}
    image, label = data.example()
    assert image.shape == (3, 1024, 1024) and label.shape == (1024, 1024)
    with pytest.raises(ValueError, match=r"val_keys.*loveda__9"):
        PromptTuningDataModule(str(loveda), str(loveda), val_keys=["loveda__9"]).setup()


def test_class_balanced_weights_give_every_present_class_one_share() -> None:
    rows = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 2, 2, 2, 9]])
    weight = torch.ones(rows.shape)
    weight[1, 3] = 0  # void
    balanced = class_balanced(weight, rows)
    shares = [float(balanced[rows == k].sum()) for k in (0, 1, 2, 9)]
    assert shares == pytest.approx([15 / 4] * 4) and float(balanced[1, 3]) == 0
    assert float(balanced.sum()) == pytest.approx(float(weight.sum()))


def _fit(loveda: Path, frozen: Path, out: Path, *extra: str) -> dict:
    """Run the recipe with the test's model and shards; results.json, with the module under "module"."""
    cli = main(["fit", "--config", str(RECIPE), "--model.init_args.checkpoint", str(frozen),
          "--model.init_args.output", str(out / "prompt.pt"), "--data.init_args.index", str(loveda),
          "--data.init_args.val_index", str(loveda), "--trainer.default_root_dir", str(out),
          "--trainer.logger.init_args.save_dir", str(out), *extra])
    return {**json.loads((out / "results.json").read_text()), "module": cli.model}


def test_recipe_tunes_a_prompt_that_beats_the_example_on_the_held_out_tile(loveda: Path, frozen: Path,
                                                                          tmp_path: Path) -> None:
    results = _fit(loveda, frozen, tmp_path, "--trainer.max_steps", "150")
    print(f"\nLoveDA held-out tile, mIoU: example prompt {results['example_prompt_miou']:.2f}, "
          f"tuned prompt {results['tuned_prompt_miou']:.2f} (step {results['step']})")
    assert results["tuned_prompt_miou"] > results["example_prompt_miou"]
    prompt = load_prompt(tmp_path / "prompt.pt")
    assert prompt["image"].shape == prompt["target"].shape == (3, 64, 64)
    assert 0 <= float(prompt["image"].min()) and float(prompt["image"].max()) <= 1
    assert 0 <= float(prompt["target"].min()) and float(prompt["target"].max()) <= 1
    assert prompt["class_names"][prompt["class_ids"].index(1)] == "building"
    assert len(prompt["palette"]) == len(prompt["class_ids"]) + 1
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir())  # validation pictures were drawn
    model = load_pretrained(frozen).eval()
    tuned = results["module"].model.state_dict()
    assert all(torch.equal(v, tuned[k]) for k, v in model.state_dict().items())  # the model never moved
    # the saved file scores what validation scored, through a fresh model
    data = PromptTuningDataModule(str(loveda), str(loveda), size=(64, 64), val_keys=["loveda__2"], val_tile=256)
    data.setup()
    metric = SemanticIoU(num_classes=max(prompt["class_ids"]) + 1)
    for i in range(len(data.val_set)):
        item = data.val_set[i]
        truth = torch.where(item["label"] >= metric.num_classes, 255, item["label"])
        metric.update(predict_with_prompt(model, prompt, item["image"])[None], truth[None])
    assert float(metric.compute()["mIoU"]) == pytest.approx(results["tuned_prompt_miou"], abs=1e-4)


def test_tuning_continues_from_a_prompt_file_and_refuses_another_class_set(loveda: Path, frozen: Path,
                                                                          tmp_path: Path) -> None:
    first = _fit(loveda, frozen, tmp_path / "a", "--trainer.max_steps", "2", "--trainer.val_check_interval", "2")
    second = _fit(loveda, frozen, tmp_path / "b", "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
                  "--model.init_args.init", str(tmp_path / "a" / "prompt.pt"))
    assert second["example_prompt_miou"] == pytest.approx(first["example_prompt_miou"])
    assert first["selected_on"] == {"index": str(loveda), "images": 1, "held_out_of_training": True}  # loveda__2
    with pytest.raises(ValueError, match="paints classes"):
        _fit(loveda, frozen, tmp_path / "c", "--trainer.max_steps", "1", "--data.init_args.classes", "[1, 2]",
             "--model.init_args.init", str(tmp_path / "a" / "prompt.pt"))
    with pytest.raises(ValueError, match="neither 'examples', 'noise' nor an existing prompt file"):
        _fit(loveda, frozen, tmp_path / "d", "--model.init_args.init", str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("recipe", ["prompt_tune_ade20k.yaml", "prompt_tune_coco_panoptic.yaml",
                                    "prompt_tune_loveda.yaml"])
def test_tuning_recipes_parse(recipe: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(REPO / "recipes" / recipe), "--print_config"])
    assert exit_.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == "seggpt_lab.modules.prompt_tuning.PromptTuningModule"
    assert config["data"]["class_path"] == "datamodules.prompt_tuning.PromptTuningDataModule"

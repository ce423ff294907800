"""Every evaluation recipe end to end on real pixels: converted shards, the CLI, the oracle, the empty
prediction and a tiny random model."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.convert import convert
from datamodules.sources.fewshot import FSS1000
from datamodules.sources.folder import Folder
from datamodules.sources.video import DAVIS
from seggpt_lab.cli import main
from seggpt_lab.modules.evaluate import PanopticEvaluation, SemanticEvaluation
from tests.conftest import REPO
from tests.seggpt_lab.modules.recipe_runs import prompt_file, run


@pytest.fixture(scope="module")
def fss_index(shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    convert(FSS1000(shared_data / "fss1000_example", "train"), out, progress=False)
    return out / "fss1000" / "train-index.json"


def fss_background_share(shared_data: Path) -> float:
    """Per-pixel background fraction summed over the 5 example queries, as FB-IoU of an empty prediction sees it."""
    labels = sorted((shared_data / "fss1000_example" / "imgs" / "example" / "support" / "label").glob("*.png"))
    masks = [np.asarray(Image.open(p).convert("RGB"))[..., 2] > 0 for p in labels]
    return sum((~m).sum() for m in masks) / sum(m.size for m in masks)


def test_fss1000_recipe_oracle_empty_and_model(fss_index, shared_data, tmp_path):
    oracle = run("eval_fss1000.yaml", fss_index, tmp_path / "oracle", "oracle")
    assert oracle["mIoU"] == 100 and oracle["FB-IoU"] == 100
    empty = run("eval_fss1000.yaml", fss_index, tmp_path / "empty", "empty")
    assert empty["mIoU"] == 0
    assert empty["FB-IoU"] == pytest.approx(50 * fss_background_share(shared_data), abs=1e-3)
    model = run("eval_fss1000.yaml", fss_index, tmp_path / "model", "model", "--data.init_args.shots", "2",
                "--model.init_args.ensemble", "spatial")
    assert 0 <= model["mIoU"] <= 100
    rows = list(csv.DictReader(open(tmp_path / "model" / "episodes.csv")))
    assert len(rows) == 5 and {r["shots"] for r in rows} == {"2"}
    assert (tmp_path / "model" / "config.yaml").exists()  # the resolved config, kept with the results
    assert len(list((tmp_path / "model" / "pictures").glob("episode-*.png"))) == 5


def test_fewshot_recipes_on_persam_and_loveda(shared_data, tmp_path):
    # PerSAM objects through the folder converter: 9 photos of one "object" class
    persam = tmp_path / "persam"
    for image in sorted((shared_data / "perseg" / "examples").glob("*.jpg")):
        (persam / "images").mkdir(parents=True, exist_ok=True)
        (persam / "masks").mkdir(exist_ok=True)
        Image.open(image).convert("RGB").resize((160, 160)).save(persam / "images" / f"{image.stem}.jpg")
        Image.open(image.with_suffix(".png")).resize((160, 160), Image.Resampling.NEAREST).save(
            persam / "masks" / f"{image.stem}.png")
    convert(Folder(persam, "train"), tmp_path / "shards", progress=False)
    index = tmp_path / "shards" / "folder" / "train-index.json"
    assert run("eval_fss1000.yaml", index, tmp_path / "p-oracle", "oracle")["mIoU"] == 100
    assert run("eval_fss1000.yaml", index, tmp_path / "p-empty", "empty")["mIoU"] == 0
    assert 0 <= run("eval_fss1000.yaml", index, tmp_path / "p-model", "model")["mIoU"] <= 100
    # LoveDA tiles, PASCAL-5i style cycling episodes over the land-cover classes they share
    from datamodules.sources.loveda import LoveDA

    convert(LoveDA(shared_data / "mmseg_fixtures" / "tests" / "data" / "pseudo_loveda_dataset", "train"),
            tmp_path / "shards", progress=False)
    index = tmp_path / "shards" / "loveda" / "train-index.json"
    common = ["--data.init_args.episodes", "6", "--data.init_args.classes", "null", "--model.init_args.class_ids",
              "null"]
    oracle = run("eval_pascal5i_fold0.yaml", index, tmp_path / "l-oracle", "oracle", *common)
    assert oracle["mIoU"] == 100
    assert run("eval_pascal5i_fold0.yaml", index, tmp_path / "l-empty", "empty", *common)["mIoU"] == 0


@pytest.fixture(scope="module")
def davis_index(shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    convert(DAVIS(shared_data / "davis2016" / "DAVIS", "2016-val"), out, progress=False)
    return out / "davis" / "2016-val-index.json"


def test_davis_recipe_oracle_empty_and_model(davis_index, tmp_path):
    oracle = run("eval_davis2016.yaml", davis_index, tmp_path / "oracle", "oracle")
    assert oracle["J&F"] == 100 and oracle["J"] == 100 and oracle["F"] == 100
    empty = run("eval_davis2016.yaml", davis_index, tmp_path / "empty", "empty")
    assert empty["J"] == 0 and empty["F"] == 0 and empty["J&F"] == 0
    rows = list(csv.DictReader(open(tmp_path / "oracle" / "sequences.csv")))
    assert [r["video"] for r in rows] == ["blackswan", "car-shadow", "dog", "horsejump-high", "kite-surf",
                                          "motocross-jump"]
    model = run("eval_davis2016.yaml", davis_index, tmp_path / "model", "model", "--data.init_args.max_frames", "4",
                "--data.init_args.videos", "[blackswan, dog]", "--model.init_args.memory", "1",
                "--model.init_args.submission", "true")
    assert 0 <= model["J&F"] <= 100
    written = sorted(p.name for p in (tmp_path / "model" / "Annotations" / "dog").iterdir())
    assert written == ["00000.png", "00001.png", "00002.png", "00003.png"]
    assert Image.open(tmp_path / "model" / "Annotations" / "dog" / "00001.png").mode == "P"


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "recipes").glob("eval_*.yaml")))
def test_every_eval_recipe_parses(recipe, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["test", "--config", str(REPO / "recipes" / recipe), "--print_config"])
    assert exit_.value.code == 0
    assert re.search(r"class_path: seggpt_lab\.modules\.(evaluate|prompt_following)\.", capsys.readouterr().out)


def test_semantic_recipe_on_loveda_tiles(shared_data, loveda_index, tmp_path):
    root = shared_data / "mmseg_fixtures" / "tests" / "data" / "pseudo_loveda_dataset"
    index = loveda_index
    prompts = ["--data.init_args.prompt_index", str(index)]
    oracle = run("eval_loveda.yaml", index, tmp_path / "oracle", "oracle", *prompts)
    assert oracle["mIoU"] == 100 and oracle["pACC"] == 100
    # all background: IoU of class 0 = its share of the valid pixels, every other class 0
    raw = np.concatenate([np.asarray(Image.open(p)).ravel() for p in sorted((root / "ann_dir").glob("*.png"))])
    share = (raw[raw > 0] == 1).mean()  # LoveDA raw 0 is no-data (void); raw 1 is background
    empty = run("eval_loveda.yaml", index, tmp_path / "empty", "empty", *prompts)
    assert empty["pACC"] == pytest.approx(100 * share, abs=1e-3)
    assert empty["mIoU"] == pytest.approx(loveda_empty_miou(shared_data), abs=1e-3)
    model = run("eval_loveda.yaml", index, tmp_path / "model", "model", *prompts)
    assert 0 <= model["mIoU"] <= 100 and len(list((tmp_path / "model" / "pictures").glob("*.png"))) == 3



def loveda_empty_miou(shared_data: Path) -> float:
    """mIoU x100 of predicting background everywhere on the LoveDA tiles: IoU of class 0 over the classes present."""
    root = shared_data / "mmseg_fixtures" / "tests" / "data" / "pseudo_loveda_dataset"
    raw = np.concatenate([np.asarray(Image.open(p)).ravel() for p in sorted((root / "ann_dir").glob("*.png"))])
    valid = raw[raw > 0]  # LoveDA raw 0 is no-data (void); raw 1 is background -> 0, raw 2..7 -> 1..6
    return 100 * (valid == 1).mean() / len(np.unique(valid))


@pytest.mark.parametrize("predictor", ["oracle", "empty", "model"])
# the prompt-swap recipes need multi-object data: test_prompt_swap_eval.py runs them, and test_prompt_following.py
# the quickstart's evaluation
@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "recipes").glob("eval_*.yaml")
                                          if "prompt_swap" not in p.name and p.name != "eval_quickstart.yaml"))
def test_every_eval_recipe_runs_on_real_shards(recipe, predictor, fss_index, davis_index, loveda_index, shared_data,
                                              tmp_path):
    """Each recipe with its data pointed at a real fixture: the oracle scores 100, the empty prediction its
    documented value (0, or background's share for semantic labels with a background class), the tiny
    model runs; submission-only benchmarks write every frame in the submission layout."""
    out = tmp_path / "out"
    score = {"oracle": 100.0, "empty": 0.0, "model": None}[predictor]
    extra: list[str] = []
    if "prompt" in recipe or "panoptic" in recipe:
        extra = ["--model.init_args.prompt_file", prompt_file(loveda_index, tmp_path / "prompt.pt", [1, 2, 3])]
    if "panoptic" in recipe:  # LoveDA holds no instances to build an instance prompt from
        extra += ["--model.init_args.instances", "components"]
    if "davis" in recipe or "youtube" in recipe or "mose" in recipe:
        results = run(recipe, davis_index, out, predictor, "--data.init_args.videos", "[dog]",
                      "--data.init_args.max_frames", "6")
        key = "J&F"
        if key not in results:
            assert len(list((out / "Annotations" / "dog").glob("*.png"))) == 6
            return
    elif "panoptic" in recipe:  # LoveDA's land-cover classes: all stuff, no instances
        results, key = run(recipe, loveda_index, out, predictor, *extra), "PQ"
    elif "ade20k" in recipe or "loveda" in recipe:
        results = run(recipe, loveda_index, out, predictor, "--data.init_args.prompt_index", str(loveda_index), *extra)
        key = "mIoU"
        if predictor == "empty":  # LoveDA's 0 is a class of its own: all background scores its IoU
            score = loveda_empty_miou(shared_data)
    else:  # few-shot recipes, their fold classes replaced by the example's class
        results, key = run(recipe, fss_index, out, predictor, "--data.init_args.classes", "null",
                           "--model.init_args.class_ids", "null", "--data.init_args.episodes", "3"), "mIoU"
    if score is None:
        assert 0 <= results[key] <= 100
    else:
        assert results[key] == pytest.approx(score, abs=1e-3)


def test_results_and_pictures_reach_an_offline_wandb_run(fss_index, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run("eval_fss1000.yaml", fss_index, tmp_path / "out", "oracle", "--trainer.logger",
        "lightning.pytorch.loggers.WandbLogger", "--trainer.logger.init_args.offline", "true",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "wb"), "--trainer.logger.init_args.project", "test")
    run_dir = next((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    media = run_dir / "files" / "media"
    assert len(list((media / "table" / "test").glob("episodes_*.table.json"))) == 1
    assert len(list((media / "images" / "test").glob("predictions_*.png"))) == 5


def test_image_level_evaluations_refuse_the_colour_predictor():
    with pytest.raises(ValueError, match="SemanticEvaluation has no example prompts for predictor 'colour'"):
        SemanticEvaluation(predictor="colour")
    with pytest.raises(ValueError, match="PanopticEvaluation has no example prompts for predictor 'colour'"):
        PanopticEvaluation(predictor="colour")


def test_video_evaluation_binarises_as_the_official_video_mode_and_few_shot_by_the_nearest_colour(monkeypatch):
    import seggpt_lab.prediction as prediction
    from seggpt_lab.model import seggpt_vit_tiny
    from seggpt_lab.modules.evaluate import FewShotEvaluation, VideoEvaluation
    from seggpt_lab.palette import VIDEO_THRESHOLD

    rgb = torch.full((3, 32, 32), 127.75 / 255)  # mean in (127.5, 128]: white by nearest colour, black for video
    monkeypatch.setattr(prediction, "predict_canvas", lambda *args: rgb)
    model = seggpt_vit_tiny(img_size=(64, 32), patch_size=8, depth=3, feature_indices=(2,))
    image, label = torch.zeros(3, 32, 32, dtype=torch.uint8), torch.ones(32, 32, dtype=torch.long)
    video, fewshot = VideoEvaluation(model=model), FewShotEvaluation(model=model)
    assert video.binary_threshold == VIDEO_THRESHOLD and fewshot.binary_threshold is None
    assert not video.predict_one([image], [label], image, label, 1).any()
    assert fewshot.predict_one([image], [label], image, label, 1).all()

"""The quickstart's evaluation as a `seggpt-lab test` run: the recipe's world, the predictors and results.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

import seggpt_lab.prediction as prediction
from datamodules.synthetic import CATEGORIES, HELD_OUT
from seggpt_lab.callbacks import EvaluateAfterFit
from seggpt_lab.cli import logged_metrics, resolved_config
from seggpt_lab.cli import main as cli_main
from seggpt_lab.palette import fixed_color
from tests.conftest import REPO
from tests.seggpt_lab.modules.pretrain_runs import QUICKSTART, overrides

EVAL = str(REPO / "recipes" / "eval_quickstart.yaml")


def test_the_evaluation_recipe_scores_the_training_recipes_world_and_checkpoint() -> None:
    train, evaluation = (yaml.safe_load(Path(p).read_text()) for p in (QUICKSTART, EVAL))
    world = dict(train["data"]["init_args"]["val"]["convert"])
    sets = {s["name"]: s for s in evaluation["data"]["init_args"]["sets"]}
    assert set(sets) == {"seen", "heldout"}
    for s in sets.values():  # the training world, more scenes
        assert {**s["convert"], "samples": world["samples"]} == world
    assert sets["seen"]["split"] == "val" and sets["heldout"]["split"] == "heldout"
    assert sets["heldout"]["classes"] == sorted(i for i, name in CATEGORIES.items() if name in HELD_OUT)
    checkpoint = next(c for c in train["trainer"]["callbacks"] if c["class_path"].endswith("ModelCheckpoint"))
    assert evaluation["model"]["init_args"]["checkpoint"] == f"{checkpoint['init_args']['dirpath']}/last.ckpt"


def eval_overrides(tmp_path: Path, checkpoint: Path, out: Path, **model) -> Path:
    """The evaluation recipe on 40-scene sets of the tiny test world (32 px scenes), outputs under tmp_path."""
    world = {"source": "synthetic", "samples": 40, "size": 32}
    folder = str(tmp_path / "shards" / "eval" / "40" / "synthetic")
    config = {
        "trainer": {"default_root_dir": str(out), "enable_progress_bar": False},
        "model": {"init_args": {"checkpoint": str(checkpoint), "output_dir": str(out), "num_pictures": 2,
                                "bootstrap": 100, **model}},
        "data": {"init_args": {"episodes": 6, "min_pixels": 1, "sets": [
            {"name": "seen", "path": folder, "split": "val", "convert": world},
            {"name": "heldout", "path": folder, "split": "heldout", "convert": world,
             "classes": [4, 7, 10, 13, 20, 23]}]}},
    }
    path = tmp_path / "eval_overrides.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_make_demos_two_runs_train_then_score_the_model_beside_the_references(tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    config = overrides(run, tmp_path / "shards" / "synthetic", 4)
    fit = yaml.safe_load(config.read_text())
    fit["trainer"]["callbacks"].append({"class_path": "seggpt_lab.callbacks.LossCurve",
                                        "init_args": {"path": str(run / "loss.png")}})
    config.write_text(yaml.safe_dump(fit))
    cli_main(["fit", "--config", QUICKSTART, "--config", str(config)])
    assert Image.open(run / "loss.png").size == (640, 320)  # LossCurve drew the training run's curve

    out = tmp_path / "eval"
    cli_main(["test", "--config", EVAL, "--config", str(eval_overrides(tmp_path, run / "checkpoints" / "last.ckpt",
                                                                         out))])
    results = json.loads((out / "results.json").read_text())
    assert results["references"] == ["copy_prompt", "colour", "empty", "full", "all_objects"]
    assert list(results["sets"]) == ["seen", "heldout"]
    for name, entry in results["sets"].items():
        swaps, one_shot = entry["prompt_following"], entry["one_shot_miou"]
        assert set(swaps) == set(one_shot) == {"model", *results["references"]}
        model = swaps["model"]
        assert model["queries"] > 0 and model["S_low"] <= model["S"] <= model["S_high"]
        assert {"A", "mIoU", "recall", "absent_painted", "S/same_shape", "S/other_shape"} <= set(model)
        # prompt-blind predictors: S and A exactly 0; the blind oracle paints every object of an absent prompt
        for blind in ("all_objects", "empty", "full"):
            assert swaps[blind]["S"] == 0 and swaps[blind]["A"] == 0, (name, blind)
        assert swaps["all_objects"]["absent_painted"] == 100 and swaps["full"]["absent_painted"] == 100
        assert all(swaps[p]["queries"] == model["queries"] for p in swaps)
        assert one_shot["empty"] == 0  # no foreground predicted: IoU 0 for every class
        # every object pixel includes the prompted category's: the blind oracle beats all foreground
        assert one_shot["all_objects"] > one_shot["full"]
        best = max(one_shot[p] for p in ("copy_prompt", "empty", "full"))
        assert entry["miou_over_best_trivial"] == pytest.approx(one_shot["model"] / best)
        assert len(list((out / "pictures").glob(f"swap-{name}-*.png"))) == 2
        assert len(list((out / "pictures").glob(f"{name}-*.png"))) == 2
    assert (tmp_path / "shards" / "eval" / "40" / "synthetic" / "heldout-index.json").is_file()
    with open(out / "one_shot_episodes.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {r["set"] for r in rows} == {"seen", "heldout"}
    # held-out episodes are of held-out classes only
    assert {int(r["class_id"]) for r in rows if r["set"] == "heldout"} <= {4, 7, 10, 13, 20, 23}
    with open(out / "swap_episodes.csv") as f:
        swap_rows = list(csv.DictReader(f))
    queries = sum(e["prompt_following"]["model"]["queries"] for e in results["sets"].values())
    assert len([r for r in swap_rows if r["role"] != "absent"]) == 2 * queries
    absent = [float(r["absent_painted"]) for r in swap_rows if r["role"] == "absent"]
    assert 0 < len(absent) <= queries and all(0 <= a <= 100 for a in absent)

    # the oracle as the predictor: every figure of a perfect prompt-follower
    oracle = tmp_path / "oracle"
    cli_main(["test", "--config", EVAL, "--config", str(eval_overrides(
        tmp_path, run / "checkpoints" / "last.ckpt", oracle, predictor="oracle", references=["all_objects"]))])
    for entry in json.loads((oracle / "results.json").read_text())["sets"].values():
        figures = entry["prompt_following"]["oracle"]
        assert figures["S"] == 100 and figures["A"] == 100 and figures["absent_painted"] == 0
        assert "miou_over_best_trivial" not in entry  # no trivial baseline among the references
    # every episode perfect; a mean also counts a requested class no episode drew as 0 (HSNet's rule)
    with open(oracle / "one_shot_episodes.csv") as f:
        assert {float(r["iou"]) for r in csv.DictReader(f)} == {100.0}

    # prompt_colors "fixed": the model's prompts painted in their category's fixed colour, decoded over black and it
    painted = []

    def echo_prompt(model, prompts, masks, query, seg_type, ensemble):  # predicts the prompt's mask as it was painted
        painted.append({tuple(c) for c in (masks[0] * 255).round().long().flatten(1).T.tolist()} - {(0, 0, 0)})
        return masks[0]

    monkeypatch.setattr(prediction, "predict_canvas", echo_prompt)
    fixed = tmp_path / "fixed"
    cli_main(["test", "--config", EVAL, "--config", str(eval_overrides(
        tmp_path, run / "checkpoints" / "last.ckpt", fixed, references=[], prompt_colors="fixed"))])
    with open(fixed / "one_shot_episodes.csv") as f:
        classes = [int(r["class_id"]) for r in csv.DictReader(f)]
    assert set().union(*painted) <= {fixed_color(c) for c in range(1, 25)}
    assert {fixed_color(c) for c in classes} <= set().union(*painted)
    # a prediction in the prompt's colour decodes as the prompted category: the prompt's mask, as copy_prompt
    copied = json.loads((out / "results.json").read_text())["sets"]
    for name, entry in json.loads((fixed / "results.json").read_text())["sets"].items():
        assert entry["one_shot_miou"]["model"] == pytest.approx(copied[name]["one_shot_miou"]["copy_prompt"], abs=1)


def test_a_missing_checkpoint_or_a_repeated_reference_is_one_line(tmp_path: Path, capsys) -> None:
    from seggpt_lab.modules.prompt_following import PromptFollowingEvaluation

    with pytest.raises(ValueError, match="prompt_colors must be 'white' or 'fixed'"):
        PromptFollowingEvaluation(predictor="oracle", prompt_colors="red")
    with pytest.raises(ValueError, match="list each reference once, apart from the predictor"):
        PromptFollowingEvaluation(predictor="oracle", references=["colour", "oracle"])
    with pytest.raises(ValueError, match="no such checkpoint file"):
        cli_main(["test", "--config", EVAL, "--model.init_args.checkpoint", str(tmp_path / "none.ckpt")])


def test_test_after_fit_scores_the_checkpoint_and_logs_the_evaluation_to_the_training_run(tmp_path: Path) -> None:
    """EvaluateAfterFit: `seggpt-lab test` on the run's last checkpoint, in a process of its own, and results.json's
    metrics in the training run's logger at its last step: what a sweep's trial reports."""
    run = tmp_path / "run"
    config = overrides(run, tmp_path / "shards" / "synthetic", 4)
    fit = yaml.safe_load(config.read_text())
    evaluation = eval_overrides(tmp_path, tmp_path / "unused.ckpt", tmp_path / "unused")
    fit["trainer"]["callbacks"].append({"class_path": "seggpt_lab.callbacks.EvaluateAfterFit", "init_args": {
        "config": EVAL, "args": ["--config", str(evaluation), "--model.init_args.references=[]"]}})
    config.write_text(yaml.safe_dump(fit))
    cli_main(["fit", "--config", QUICKSTART, "--config", str(config)])
    results = json.loads((run / "test" / "results.json").read_text())
    assert results["references"] == [] and results["metrics"]["test/heldout/S"] == \
        results["sets"]["heldout"]["prompt_following"]["model"]["S"]
    # the names a sweep checks its metric against: those this run logged, training's and the evaluation's
    declared = logged_metrics(resolved_config(["fit", "--config", QUICKSTART, "--config", str(config)]))
    assert set(results["metrics"]) == {k for k in declared if k.startswith("test/")}
    with open(run / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("test/heldout/S")]
    assert len(rows) == 1 and int(rows[0]["step"]) == 4
    assert float(rows[0]["test/seen/one_shot_mIoU"]) == pytest.approx(results["metrics"]["test/seen/one_shot_mIoU"])
    with pytest.raises(FileNotFoundError, match="no such evaluation recipe"):
        EvaluateAfterFit(config=str(tmp_path / "none.yaml"))

"""The quickstart's evaluation: the recipe's world, the predictors and what results.json holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from seggpt_lab.cli import main as cli_main
from seggpt_lab.quickstart import main, world
from tests.seggpt_lab.modules.pretrain_runs import QUICKSTART, overrides


def test_world_comes_from_the_recipes_validation_source(tmp_path: Path) -> None:
    folder, spec = world(QUICKSTART)
    val = yaml.safe_load(Path(QUICKSTART).read_text())["data"]["init_args"]["val"]
    assert folder == Path(val["path"])
    assert spec == val["convert"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": {"init_args": {"val": {"path": "x", "convert": {"source": "davis"}}}}}))
    with pytest.raises(ValueError, match="must be synthetic"):
        world(bad)
    bad.write_text(yaml.safe_dump({"data": {"init_args": {}}}))
    with pytest.raises(ValueError, match="needs a path and a synthetic `convert` spec"):
        world(bad)


def test_results_hold_the_model_the_baselines_and_the_oracle(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = overrides(run, tmp_path / "shards" / "synthetic", 2)
    cli_main(["fit", "--config", QUICKSTART, "--config", str(config)])
    out = tmp_path / "eval"
    results = main(["--config", str(config), "--checkpoint", str(run / "checkpoints" / "last.ckpt"),
                    "--output", str(out), "--episodes", "6", "--scenes", "40"])
    assert json.loads((out / "results.json").read_text()) == results
    assert set(results["baselines"]) == {"copy_prompt", "all_background", "all_foreground"}
    assert results["baselines"]["all_background"] == 0  # no foreground predicted: IoU 0 for every class
    for key in ("miou", "heldout_categories_miou", "oracle_all_objects_miou", "heldout_oracle_all_objects_miou",
                "colour_match_miou", "heldout_colour_match_miou"):
        assert 0 <= results[key] <= 100, key
    # every object pixel includes the prompted category's: the oracle beats marking everything foreground
    assert results["oracle_all_objects_miou"] > results["baselines"]["all_foreground"]
    # generated with the recipe's world, 40 scenes a split, beside its shards
    assert (tmp_path / "shards" / "eval" / "40" / "synthetic" / "heldout-index.json").is_file()
    assert len(list((out / "pictures").glob("val-*.png"))) == 6
    # prompt-following first: the model's figures and the baselines', prompt-blind ones at exactly 0
    for split in ("seen", "heldout"):
        figures = results["prompt_following"][split]
        assert figures["queries"] > 0 and figures["S_low"] <= figures["S"] <= figures["S_high"]
        assert {"A", "mIoU", "recall", "absent_painted", "S/same_shape", "S/other_shape"} <= set(figures)
        blind = results["prompt_following_baselines"]["oracle_all_objects"][split]
        assert blind["S"] == 0 and blind["A"] == 0 and blind["absent_painted"] == 100
        colour = results["prompt_following_baselines"]["colour_match"][split]
        assert colour["queries"] == figures["queries"] and -100 <= colour["S"] <= 100
    assert len(list((out / "pictures").glob("swap-val-*.png"))) >= 1

"""PretrainModule: parameter groups, the schedule, loss weights, and `seggpt-lab fit` with checkpoints and resume."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from datamodules.convert import convert
from datamodules.sources.synthetic import Synthetic
from seggpt_lab.callbacks import CONFIG_FILE
from seggpt_lab.cli import main
from seggpt_lab.model import SegGPT
from seggpt_lab.modules.pretrain import PretrainModule, layer_id, param_groups, warmup_cosine
from tests.conftest import REPO
from tests.seggpt_lab.modules.pretrain_runs import QUICKSTART, overrides


def _tiny() -> SegGPT:
    return SegGPT(img_size=(64, 32), patch_size=8, embed_dim=32, depth=3, num_heads=2, merge_index=1,
                  feature_indices=(1, 2), decoder_embed_dim=8, pretrain_img_size=32)


def test_param_groups_exclude_norms_biases_tokens_and_tables_from_decay() -> None:
    model = _tiny()
    groups = param_groups(model, weight_decay=0.05)
    names = {n: g for g in groups for n in g["names"]}
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # each parameter exactly once
    no_decay = {n for n, g in names.items() if g["weight_decay"] == 0}
    for name in ("pos_embed", "mask_token", "type_token_ins", "blocks.0.attn.rel_pos_h", "blocks.1.norm1.weight",
                 "blocks.2.attn.qkv.bias", "norm.bias", "decoder_embed.bias"):
        assert name in no_decay, name
    for name in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.2.mlp.fc2.weight",
                 "decoder_embed.weight", "decoder_pred.0.weight"):
        assert names[name]["weight_decay"] == 0.05, name
    assert all(g["lr_scale"] == 1.0 for g in groups)


def test_layer_decay_scales() -> None:
    model = _tiny()
    names = {n: g for g in param_groups(model, 0.05, layer_decay=0.5) for n in g["names"]}
    assert layer_id("patch_embed.proj.weight", 3) == 0 and layer_id("blocks.1.mlp.fc1.weight", 3) == 2
    assert names["patch_embed.proj.weight"]["lr_scale"] == 0.5**4
    assert names["blocks.0.attn.qkv.weight"]["lr_scale"] == 0.5**3
    assert names["blocks.2.attn.qkv.weight"]["lr_scale"] == 0.5**1
    assert names["decoder_pred.3.weight"]["lr_scale"] == 1.0


def test_painter_rule_decays_tokens_and_tables_and_exempts_only_vectors_and_pos_embed() -> None:
    """Painter's trainer: no decay on 1-D parameters and {pos_embed, cls_token} only; "ours" exempts every token
    and relative-position table too. Whatever the rule, each parameter is in exactly one group."""
    model = _tiny()
    shapes = dict(model.named_parameters())
    decayed = {}
    for rule in ("ours", "painter"):
        names = {n: g for g in param_groups(model, 0.05, no_decay=rule) for n in g["names"]}
        assert sorted(names) == sorted(shapes)
        decayed[rule] = {n for n, g in names.items() if g["weight_decay"] == 0.05}
    assert decayed["painter"] == {n for n, p in shapes.items() if p.ndim > 1 and n != "pos_embed"}
    tokens_and_tables = {n for n in shapes if n.endswith(("_token", "token_x", "token_y", "token_cls", "token_ins",
                                                          "rel_pos_h", "rel_pos_w"))}
    assert len(tokens_and_tables) == 5 + 2 * len(model.blocks)
    assert decayed["painter"] - decayed["ours"] == tokens_and_tables  # the only difference between the rules
    assert decayed["ours"] <= decayed["painter"]
    with pytest.raises(ValueError, match="no_decay"):
        param_groups(model, 0.05, no_decay="timm")
    with pytest.raises(ValueError, match="no_decay"):
        PretrainModule(_tiny(), no_decay="timm")


def test_painter_layer_decay_puts_the_tokens_in_the_last_group() -> None:
    model = _tiny()
    depth = len(model.blocks)
    for rule, token_layer in (("ours", 0), ("painter", depth + 1)):
        names = {n: g for g in param_groups(model, 0.05, layer_decay=0.5, no_decay=rule) for n in g["names"]}
        for token in ("mask_token", "segment_token_y", "type_token_cls"):
            assert layer_id(token, depth, rule) == token_layer
            assert names[token]["lr_scale"] == 0.5 ** (depth + 1 - token_layer)
        # the patch and position embeddings stay in layer 0, the blocks in theirs, under both rules
        assert names["pos_embed"]["lr_scale"] == names["patch_embed.proj.weight"]["lr_scale"] == 0.5 ** (depth + 1)
        assert names["blocks.1.attn.rel_pos_w"]["lr_scale"] == 0.5 ** (depth - 1)


def test_warmup_cosine() -> None:
    assert warmup_cosine(0, 10, 110) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110) == pytest.approx(0.5)
    assert warmup_cosine(110, 10, 110, min_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, 10, 110) == pytest.approx(0.0)
    values = [warmup_cosine(s, 10, 110) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_foreground_weight_multiplies_painted_pixels() -> None:
    module = PretrainModule(_tiny(), foreground_weight=4.0)
    target = torch.zeros(1, 3, 64, 32, dtype=torch.uint8)
    target[0, 1, :8] = 200  # painted rows
    valid = torch.ones(1, 1, 64, 32)
    valid[0, 0, 4:6] = 0  # void inside the painted rows stays 0
    weights = module.loss_weights({"target_canvas": target, "valid": valid})
    assert weights[0, 0, :4].eq(4).all() and weights[0, 0, 4:6].eq(0).all() and weights[0, 0, 8:].eq(1).all()


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="val_seg_type"):
        PretrainModule(_tiny(), val_seg_type="panoptic")
    with pytest.raises(ValueError, match="lr > 0"):
        PretrainModule(_tiny(), lr=0)


def _rows(out: Path) -> list[dict]:
    with open(out / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_fit_logs_validates_and_writes_checkpoints_and_pictures(tmp_path: Path) -> None:
    out = tmp_path / "run"
    main(["fit", "--config", QUICKSTART, "--config", str(overrides(out, tmp_path / "shards" / "synthetic", 4))])
    rows = _rows(out)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    rates = [float(r["data/partner_rate"]) for r in rows if r.get("data/partner_rate")]
    assert rates and all(0 <= r <= 1 for r in rates)
    assert [r["val/mIoU"] for r in rows if r.get("val/mIoU")]  # validated at steps 2 and 4
    assert {p.name for p in (out / "checkpoints").glob("*.ckpt")} >= {"last.ckpt"}
    assert sorted(p.name for p in (out / "csv" / "pictures").glob("*.png")) == ["step-0000000.png",
                                                                                   "step-0000002.png"]
    assert (out / "csv" / "config.yaml").is_file()


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _loader_state(checkpoint: dict) -> list:
    return checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]


def test_resume_from_last_continues_step_schedule_optimiser_and_data(tmp_path: Path) -> None:
    shards = tmp_path / "shards" / "synthetic"
    straight, split = tmp_path / "straight", tmp_path / "split"
    main(["fit", "--config", QUICKSTART, "--config", str(overrides(straight, shards, 8))])
    main(["fit", "--config", QUICKSTART, "--config", str(overrides(split, shards, 4))])
    first = _state(split / "checkpoints" / "last.ckpt")
    assert first["global_step"] == 4
    main(["fit", "--config", QUICKSTART, "--config", str(overrides(split, shards, 8)), "--ckpt_path", "last"])
    resumed, reference = _state(split / "checkpoints" / "last.ckpt"), _state(straight / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == reference["global_step"] == 8
    assert resumed["lr_schedulers"][0]["last_epoch"] == 8
    steps = {int(s["step"]) for s in resumed["optimizer_states"][0]["state"].values()}
    assert steps == {8}  # AdamW's step counters went on from 4, not from 0
    # the data went on too: the loader's pass counter is saved and restored, so the resumed run saw what the
    # uninterrupted run saw, and both end with the same weights
    assert _loader_state(resumed) == _loader_state(reference) == [{"passes": 2}]
    for key, value in reference["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_wandb_runs_store_config_and_pictures_and_share_a_folder(tmp_path: Path, monkeypatch) -> None:
    """Two offline W&B runs in one folder: neither crashes, each keeps the resolved config and the prediction grids."""
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the CLI's default must make the run offline by itself
    monkeypatch.setenv("WANDB_SILENT", "true")
    shards = tmp_path / "shards" / "synthetic"
    for run in ("one", "two"):
        main(["fit", "--config", QUICKSTART, "--config", str(overrides(tmp_path / run, shards, 2)),
              "--trainer.logger", "lightning.pytorch.loggers.WandbLogger",
              "--trainer.logger.init_args.save_dir", str(tmp_path / "wb"),
              "--trainer.logger.init_args.project", "test", "--model.init_args.lr", "0.002"])
    runs = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    for run in runs:
        files = run / "files"
        saved = yaml.safe_load((files / CONFIG_FILE).read_text())
        assert saved["model"]["class_path"] == "seggpt_lab.modules.pretrain.PretrainModule"
        assert saved["model"]["init_args"]["lr"] == 0.002
        assert saved["data"]["init_args"]["batch_size"] == 2
        assert len(list((files / "media" / "images" / "train").glob("predictions_*.png"))) == 1  # step 0 of 2


def test_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    """`seggpt-lab fit` with DDP over gloo on 2 processes and two sources of uneven shard counts (3 and 5):
    it finishes, the ranks read disjoint shards, and both hold the same weights after the steps."""
    sources = []
    for name, split, samples, size in (("a", "train", 60, 20), ("b", "heldout", 50, 10)):
        convert(Synthetic(None, split, samples=samples, size=32), tmp_path / name, shard_size=size, progress=False)
        sources.append({"path": str(tmp_path / name / "synthetic"), "split": split, "name": name})
    out = tmp_path / "run"
    config = overrides(out, tmp_path / "a" / "synthetic", 3, sources=sources, strategy="ddp", devices=2)
    result = subprocess.run([sys.executable, "-m", "seggpt_lab.cli", "fit", "--config", QUICKSTART, "--config",
                             str(config)], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / "probe" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["world_size"], r["step"]) for r in ranks] == [(2, 3), (2, 3)]
    for name, shards in (("a", 3), ("b", 5)):
        first, second = (set(r["urls"][name]) for r in ranks)
        assert first.isdisjoint(second) and len(first | second) == shards, name
        assert {len(first), len(second)} == {shards // 2, shards - shards // 2}  # uneven: 2/1 and 3/2
    start = [torch.load(out / "probe" / f"rank{r}-start.pt", weights_only=True) for r in (0, 1)]
    end = [torch.load(out / "probe" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key, value in end[0].items():
        assert torch.equal(value, end[1][key]), key  # DDP averaged the ranks' different gradients
        assert torch.equal(start[0][key], start[1][key]), key
    assert any(not torch.equal(end[0][k], start[0][k]) for k in end[0])  # and the weights did move


def test_compile_flag_compiles_the_blocks_once_when_the_model_is_configured() -> None:
    eager, compiled = PretrainModule(_tiny()), PretrainModule(_tiny(), compile=True)
    for module in (eager, compiled):
        module.configure_model()
        module.configure_model()  # Lightning may call it again (fit, then validate): still one wrapper
    assert all(block._compiled_call_impl is None for block in eager.model.blocks)
    assert all(block._compiled_call_impl is not None for block in compiled.model.blocks)

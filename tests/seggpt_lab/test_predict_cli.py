"""`seggpt-lab predict`: masks and overlays for the official example images, a DAVIS video, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seggpt_lab.checkpoint import save_checkpoint
from seggpt_lab.cli import entry, main
from seggpt_lab.images import prompt_masks
from seggpt_lab.model import SegGPT
from seggpt_lab.predictor import Predictor
from seggpt_lab.prompts import prompt_from_examples, save_prompt
from tests.conftest import REPO

RECIPE = str(REPO / "recipes" / "predict.yaml")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = SegGPT(img_size=(128, 64), patch_size=16, embed_dim=32, depth=2, num_heads=2, merge_index=0,
                   feature_indices=(0, 1), decoder_embed_dim=8, pretrain_img_size=64, init="xavier")
    path = tmp_path_factory.mktemp("model") / "model.pth"
    save_checkpoint(model, path)
    return path


@pytest.fixture
def examples(shared_data: Path) -> Path:
    return shared_data / "painter_examples" / "SegGPT" / "SegGPT_inference" / "examples"


def _predict(checkpoint: Path, out: Path, *args: str):
    return main(["predict", "--config", RECIPE, "--model.init_args.checkpoint", str(checkpoint),
                 "--trainer.default_root_dir", str(out), *args])


def test_predict_writes_masks_and_overlays_for_the_official_examples(checkpoint, examples, tmp_path) -> None:
    queries = [examples / "hmbb_2.jpg", examples / "hmbb_3.jpg"]
    _predict(checkpoint, tmp_path, "--data.init_args.queries", f"[{queries[0]}, {queries[1]}]",
             "--data.init_args.prompts", f"[{examples / 'hmbb_1.jpg'}]",
             "--data.init_args.prompt_masks", f"[{examples / 'hmbb_1_target.png'}]")
    expected = Predictor.from_pretrained(checkpoint).segment(queries, [(examples / "hmbb_1.jpg",
                                                                        examples / "hmbb_1_target.png")])
    for query, result in zip(queries, expected, strict=True):
        mask = Image.open(tmp_path / f"{query.stem}_mask.png")
        overlay = Image.open(tmp_path / f"{query.stem}_overlay.png")
        size = Image.open(query).size
        assert mask.mode == "P" and mask.size == overlay.size == size
        np.testing.assert_array_equal(np.asarray(mask), result.labels)  # what the Predictor gives, written out
        assert set(np.unique(np.asarray(mask))) <= {0, 1}


def test_predict_propagates_a_davis_video(checkpoint, shared_data, tmp_path) -> None:
    davis = shared_data / "davis2016" / "DAVIS"
    _predict(checkpoint, tmp_path, "--data.init_args.video", str(davis / "JPEGImages" / "480p" / "blackswan"),
             "--data.init_args.first_mask", str(davis / "Annotations" / "480p" / "blackswan" / "00000.png"),
             "--data.init_args.max_frames", "4", "--model.init_args.num_frames", "2")
    frames = sorted((tmp_path / "blackswan").iterdir())
    assert [f.name for f in frames] == [f"{t:05d}.png" for t in range(4)]
    first = np.asarray(Image.open(frames[0]))
    truth = np.asarray(Image.open(davis / "Annotations" / "480p" / "blackswan" / "00000.png")) > 127
    np.testing.assert_array_equal(first, truth)  # the first frame keeps the given objects
    animation = Image.open(tmp_path / "blackswan_overlay.gif")
    assert animation.n_frames == 4 and animation.size == (854, 480)


def test_predict_reads_grey_rgba_and_16_bit_queries(checkpoint, examples, tmp_path) -> None:
    rgb = np.asarray(Image.open(examples / "hmbb_2.jpg").convert("RGB"))
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(tmp_path / "alpha.png")
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    (tmp_path / "notes.txt").write_text("not an image: skipped, and counted in the log")
    out = tmp_path / "out"
    _predict(checkpoint, out, "--data.init_args.queries", f"[{tmp_path}]",
             "--data.init_args.prompts", f"[{examples / 'hmbb_1.jpg'}]",
             "--data.init_args.prompt_masks", f"[{examples / 'hmbb_1_target.png'}]")
    assert sorted(p.name for p in out.glob("*_mask.png")) == ["alpha_mask.png", "deep_mask.png", "grey_mask.png"]


@pytest.mark.parametrize(("args", "message"), [
    (["--data.init_args.queries", "[{tmp}/missing.jpg]", "--data.init_args.prompts", "[{ex}/hmbb_1.jpg]",
      "--data.init_args.prompt_masks", "[{ex}/hmbb_1_target.png]"], "missing.jpg: no such file or folder"),
    (["--data.init_args.queries", "[{ex}/hmbb_2.jpg]", "--data.init_args.prompts", "[{ex}/hmbb_1.jpg, {ex}/hmbb_3.jpg]",
      "--data.init_args.prompt_masks", "[{ex}/hmbb_1_target.png]"], "2 prompt images but 1 prompt masks"),
    (["--data.init_args.queries", "[{tmp}/texts]", "--data.init_args.prompts", "[{ex}/hmbb_1.jpg]",
      "--data.init_args.prompt_masks", "[{ex}/hmbb_1_target.png]"], "texts holds no images"),
    (["--data.init_args.queries", "[{ex}/hmbb_2.jpg]", "--data.init_args.prompts", "[{ex}/hmbb_1.jpg]",
      "--data.init_args.prompt_masks", "[{tmp}/black.png]"], "mark nothing"),
    (["--data.init_args.video", "{tmp}/texts", "--data.init_args.first_mask", "{tmp}/black.png"], "holds no frames"),
])
def test_bad_input_ends_with_one_line(checkpoint, examples, tmp_path, args, message) -> None:
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    Image.new("L", (300, 168)).save(tmp_path / "black.png")
    args = [a.format(tmp=tmp_path, ex=examples) for a in args]
    env = {**os.environ, "SEGGPT_LAB_TRACEBACK": ""}
    done = subprocess.run([sys.executable, "-c", "from seggpt_lab.cli import entry; entry()", "predict", "--config",
                           RECIPE, "--model.init_args.checkpoint", str(checkpoint), "--trainer.default_root_dir",
                           str(tmp_path / "out"), *args], capture_output=True, text=True, env=env, cwd=REPO)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("seggpt-lab: error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_predict_recipe_parses(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--config", RECIPE, "--data.init_args.queries", "[a.jpg]", "--print_config"])
    assert exit_.value.code == 0
    assert "seggpt_lab.callbacks.PredictionWriter" in capsys.readouterr().out


def test_predict_with_a_prompt_file_writes_its_class_ids(checkpoint, examples, tmp_path) -> None:
    image = torch.from_numpy(np.asarray(Image.open(examples / "hmbb_1.jpg").convert("RGB")).copy()).permute(2, 0, 1)
    label = torch.from_numpy((np.asarray(Image.open(examples / "hmbb_1_target.png").convert("L")) > 127) * 9)
    save_prompt(prompt_from_examples([image], [label], [9], (64, 64), ["hmbb"]), tmp_path / "prompt.pt")
    _predict(checkpoint, tmp_path / "out", "--data.init_args.queries", f"[{examples / 'hmbb_2.jpg'}]",
             "--data.init_args.prompt_file", str(tmp_path / "prompt.pt"), "--model.init_args.seg_type", "semantic")
    mask = np.asarray(Image.open(tmp_path / "out" / "hmbb_2_mask.png"))
    assert mask.shape == Image.open(examples / "hmbb_2.jpg").size[::-1] and set(np.unique(mask)) <= {0, 9}


def test_predict_reads_grey_rgba_and_16_bit_prompts(checkpoint, examples, tmp_path) -> None:
    """Prompt images in any mode and a 16-bit prompt mask (0 / 65535) are read like their 8-bit RGB versions."""
    rgb = np.asarray(Image.open(examples / "hmbb_1.jpg").convert("RGB"))
    mask = np.asarray(Image.open(examples / "hmbb_1_target.png").convert("L")) > 127
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(tmp_path / "alpha.png")
    Image.fromarray(mask.astype(np.uint16) * 65535).save(tmp_path / "deep_mask.png")
    _predict(checkpoint, tmp_path / "out", "--data.init_args.queries", f"[{examples / 'hmbb_2.jpg'}]",
             "--data.init_args.prompts", f"[{tmp_path / 'grey.png'}, {tmp_path / 'alpha.png'}]",
             "--data.init_args.prompt_masks", f"[{tmp_path / 'deep_mask.png'}, {tmp_path / 'deep_mask.png'}]")
    labels = np.asarray(Image.open(tmp_path / "out" / "hmbb_2_mask.png"))
    assert labels.shape == Image.open(examples / "hmbb_2.jpg").size[::-1] and set(np.unique(labels)) <= {0, 1}


def test_a_video_file_without_frames_ends_with_one_line(checkpoint, examples, tmp_path, monkeypatch, capsys) -> None:
    """An audio-only MP4 (no video stream) is a video with no frames: one line naming it, not an IndexError."""
    av = pytest.importorskip("av")
    path = tmp_path / "sound.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    monkeypatch.delenv("SEGGPT_LAB_TRACEBACK", raising=False)
    monkeypatch.setattr(sys, "argv", ["seggpt-lab", "predict", "--config", RECIPE, "--model.init_args.checkpoint",
                                      str(checkpoint), "--trainer.default_root_dir", str(tmp_path / "out"),
                                      "--data.init_args.video", str(path), "--data.init_args.first_mask",
                                      str(examples / "hmbb_1_target.png")])
    with pytest.raises(SystemExit) as exit_:
        entry()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("seggpt-lab: error:")]
    assert len(errors) == 1 and f"{path}: the video has no frames" in errors[0], err[-2000:]


def test_a_16_bit_class_map_with_too_many_labels_ends_with_one_line(tmp_path) -> None:
    Image.fromarray(np.array([[0, 3000]], np.uint16)).save(tmp_path / "ids.png")
    with pytest.raises(ValueError, match=r"ids.png: an index mask with labels up to 3000, more than 255"):
        prompt_masks([tmp_path / "ids.png"])

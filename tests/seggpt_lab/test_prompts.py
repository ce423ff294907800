from __future__ import annotations

import pytest
import torch

from seggpt_lab.palette import build_palette, decode
from seggpt_lab.prompts import load_prompt, prompt_from_examples, save_prompt


def test_prompt_from_examples_paints_each_class_and_tiles_examples(tmp_path):
    label = torch.zeros(20, 20, dtype=torch.long)
    label[:10], label[10:, :5] = 7, 3  # classes 7 and 3; 0 background
    images = [torch.full((3, 20, 20), 100, dtype=torch.uint8), torch.full((3, 20, 20), 200, dtype=torch.uint8)]
    prompt = prompt_from_examples(images, [label, label], class_ids=[3, 7], size=(16, 16))
    assert prompt["image"].shape == (3, 16, 16) and prompt["target"].shape == (3, 16, 16)
    rows = decode(prompt["target"], build_palette(2))  # palette row 1 = class 3, row 2 = class 7
    assert rows[:4, :8].unique().tolist() == [2]  # top half of the first (top-left) example: class 7
    assert rows[8:, 8:].unique().tolist() == [0]  # the empty fourth cell
    save_prompt(prompt, tmp_path / "p.pt")
    again = load_prompt(tmp_path / "p.pt")
    assert torch.equal(again["target"], prompt["target"]) and again["class_ids"] == [3, 7]


def test_bad_prompt_files_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt: no such prompt file"):
        load_prompt(tmp_path / "nope.pt")
    torch.save({"image": torch.zeros(3, 4, 4)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad.pt: not a prompt file, missing \['target', 'palette', 'class_ids'\]"):
        load_prompt(tmp_path / "bad.pt")


def test_instance_prompt_paints_every_instance_of_every_example_its_own_colour(tmp_path):
    from seggpt_lab.prompts import instance_prompt_from_examples

    first, second = torch.zeros(20, 20, dtype=torch.long), torch.zeros(20, 20, dtype=torch.long)
    first[:10, :10], first[:10, 10:] = 7, 3  # two touching instances, ids out of order
    second[10:, :] = 5  # one instance
    images = [torch.full((3, 20, 20), 100, dtype=torch.uint8), torch.full((3, 20, 20), 200, dtype=torch.uint8)]
    prompt = instance_prompt_from_examples(images, [first, second], size=(16, 16))
    assert prompt["class_ids"] == [1, 2, 3] and prompt["class_names"] == ["instance 1", "instance 2", "instance 3"]
    assert len(prompt["palette"].unique(dim=0)) == 4  # black and three distinct colours
    rows = decode(prompt["target"], prompt["palette"])  # first example top-left, second top-right (2 x 2 grid)
    assert rows[:4, :4].unique().tolist() == [2] and rows[:4, 4:8].unique().tolist() == [1]  # by id: 3, then 7
    assert rows[4:8, 8:].unique().tolist() == [3] and rows[:4, 8:].unique().tolist() == [0]
    save_prompt(prompt, tmp_path / "instances.pt")
    assert load_prompt(tmp_path / "instances.pt")["class_ids"] == [1, 2, 3]
    with pytest.raises(ValueError, match="no instance to paint"):
        instance_prompt_from_examples(images[:1], [torch.zeros(20, 20, dtype=torch.long)], size=(16, 16))

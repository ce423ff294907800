"""Reference predictors: what each paints, and one-line errors where one cannot run."""

from __future__ import annotations

import pytest
import torch

from seggpt_lab.canvas import IGNORE_LABEL
from seggpt_lab.references import colour_match, reference_labels


def test_colour_match_paints_the_colours_the_prompts_label_and_nothing_else():
    red, blue, green = (200, 30, 30), (30, 30, 200), (30, 200, 30)
    prompt = torch.zeros(3, 8, 8, dtype=torch.uint8)
    prompt[:, :4] = torch.tensor(red, dtype=torch.uint8)[:, None, None]
    prompt[:, 4:] = torch.tensor(blue, dtype=torch.uint8)[:, None, None]
    label = torch.zeros(8, 8, dtype=torch.long)
    label[:4] = 1  # red is the target, blue background
    label[0, 0] = IGNORE_LABEL  # void is counted for neither
    query = torch.zeros(3, 6, 6, dtype=torch.uint8)
    query[:, :, :2] = torch.tensor(blue, dtype=torch.uint8)[:, None, None]
    query[:, :, 2:4] = torch.tensor(red, dtype=torch.uint8)[:, None, None]
    query[:, :, 4:] = torch.tensor(green, dtype=torch.uint8)[:, None, None]  # a colour no prompt shows
    pred = colour_match([prompt], [label], query)
    expected = torch.zeros(6, 6, dtype=torch.long)
    expected[:, 2:4] = 1
    assert torch.equal(pred, expected)
    # several prompts and labels: counts add up; a tie falls to background; levels within one cell match
    second = torch.ones(8, 8, dtype=torch.long)
    second[4:] = 2  # blue is label 2 in the second prompt, as often as background in the first
    query[:, 0, 2] = torch.tensor([205, 25, 31], dtype=torch.uint8)  # red within 32 levels, same cell
    pred = colour_match([prompt, prompt], [label, second], query)
    assert torch.equal(pred, expected)
    third = torch.full((8, 8), 2, dtype=torch.long)
    assert torch.equal(colour_match([prompt] * 3, [label, second, third], query)[:, :2], torch.full((6, 2), 2))



def test_reference_labels_of_each_predictor():
    truth = torch.tensor([[0, 1], [IGNORE_LABEL, 1]])
    prompt = torch.tensor([[1, 0], [0, IGNORE_LABEL]])
    objects = torch.tensor([[1, 1], [IGNORE_LABEL, 0]])
    image = torch.zeros(3, 2, 2, dtype=torch.uint8)

    def run(name, **kw):
        return reference_labels(name, [image], [prompt], image, truth, **kw)

    assert torch.equal(run("oracle"), torch.tensor([[0, 1], [0, 1]]))  # void is never predicted
    assert torch.equal(run("empty"), torch.zeros(2, 2, dtype=torch.long))
    assert torch.equal(run("full"), torch.ones(2, 2, dtype=torch.long))
    assert torch.equal(run("copy_prompt"), torch.tensor([[1, 0], [0, 0]]))
    assert torch.equal(run("all_objects", all_objects=objects), torch.tensor([[1, 1], [0, 0]]))
    assert torch.equal(run("colour"), torch.zeros(2, 2, dtype=torch.long))  # one colour, mostly background


def test_reference_labels_refuse_what_they_cannot_do():
    truth = torch.zeros(4, 4, dtype=torch.long)
    image = torch.zeros(3, 4, 4, dtype=torch.uint8)
    small = torch.zeros(2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"copy_prompt needs a prompt of the query's size \(4, 4\), got \(2, 2\)"):
        reference_labels("copy_prompt", [image[:, :2, :2]], [small], image, truth)
    with pytest.raises(ValueError, match="all_objects needs the query's every-object map"):
        reference_labels("all_objects", [image], [truth], image, truth)
    with pytest.raises(ValueError, match="unknown reference predictor 'nearest'; choose from"):
        reference_labels("nearest", [image], [truth], image, truth)

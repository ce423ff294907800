"""PromptSwap: prompt-blind predictors score S = 0 exactly, a perfect one 100; hand-computed episodes; the interval;
kinds; duplicates and split order (the DDP gather) do not change the result; bad input."""

from __future__ import annotations

import pytest
import torch

from seggpt_lab.canvas import IGNORE_LABEL
from seggpt_lab.metrics import PromptSwap, role_areas


def scenes(n: int, seed: int = 0, size: int = 24) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """n random queries: two disjoint objects (binary maps) of random boxes, a few void pixels."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        a, b = torch.zeros(size, size, dtype=torch.long), torch.zeros(size, size, dtype=torch.long)
        y, x = torch.randint(0, size // 2 - 5, (2,), generator=gen).tolist()  # rows above size // 2
        a[y : y + 6, x : x + 8] = 1
        y, x = torch.randint(size // 2, size - 6, (2,), generator=gen).tolist()
        b[y : y + 5, x : x + 6] = 1
        void = torch.rand(size, size, generator=gen) < 0.02
        a[void], b[void] = IGNORE_LABEL, IGNORE_LABEL
        out.append((a, b))
    return out


def run(metric: PromptSwap, queries, predict, absent=None) -> dict[str, float]:
    for q, (a, b) in enumerate(queries):
        targets = torch.stack([a, b])
        preds = torch.stack([predict(a, b, 0), predict(a, b, 1)])
        metric.update(preds, targets, targets.flip(0), torch.tensor([q, q]), torch.tensor([0, 1]),
                      torch.tensor([1, 2]), torch.tensor([q % len(metric.kinds)] * 2))
        if absent is not None:
            both = torch.where((a == 1) | (b == 1), 1, torch.where(a == IGNORE_LABEL, IGNORE_LABEL, 0))
            metric.update_absent(absent(a, b)[None], both[None])
    return {k: float(v) for k, v in metric.compute().items()}


def clean(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x == IGNORE_LABEL, 0, x)


@pytest.mark.parametrize("blind", ["both_objects", "all_foreground", "all_background", "noise", "first_object"])
def test_a_prompt_blind_predictor_scores_exactly_zero(blind: str) -> None:
    queries = scenes(40)
    noise = {}

    def predict(a, b, role):  # ignores `role`: the same pixels whichever object the prompt shows
        if blind == "both_objects":
            return clean(a) | clean(b)
        if blind == "all_foreground":
            return torch.ones_like(a)
        if blind == "all_background":
            return torch.zeros_like(a)
        if blind == "first_object":
            return clean(a)
        key = id(a)
        noise.setdefault(key, (torch.rand(a.shape, generator=torch.Generator().manual_seed(key % 1000)) < 0.4).long())
        return noise[key]

    scores = run(PromptSwap(kinds=("same", "other")), queries, predict)
    assert scores["S"] == 0.0 and scores["S/same"] == 0.0 and scores["S/other"] == 0.0
    assert scores["A"] == 0.0  # both roles can never be right at once
    assert scores["queries"] == 40 and scores["queries/same"] == 20
    # the declared names, which the modules log, are exactly compute()'s
    per_kind = {f"{f}/{k}" for f in PromptSwap.KIND_FIGURES for k in ("same", "other")}
    assert set(scores) == {*PromptSwap.FIGURES, *per_kind}
    assert set(run(PromptSwap(), queries, predict)) == set(PromptSwap.FIGURES)


def test_a_perfect_predictor_and_one_that_paints_the_other_object() -> None:
    queries = scenes(30)
    perfect = run(PromptSwap(), queries, lambda a, b, r: clean((a, b)[r]), absent=lambda a, b: torch.zeros_like(a))
    assert perfect["S"] == pytest.approx(100) and perfect["A"] == 100 and perfect["mIoU"] == pytest.approx(100)
    assert perfect["recall"] == pytest.approx(100) and perfect["absent_painted"] == 0
    assert perfect["S_low"] == pytest.approx(100) and perfect["S_high"] == pytest.approx(100)
    wrong = run(PromptSwap(), queries, lambda a, b, r: clean((b, a)[r]), absent=lambda a, b: clean(a) | clean(b))
    assert wrong["S"] == pytest.approx(-100) and wrong["A"] == 0 and wrong["mIoU"] == 0
    assert wrong["absent_painted"] == pytest.approx(100)


def test_scores_against_hand_counts() -> None:
    # one 1 x 8 query: object 0 on pixels 0-2, object 1 on 4-6, pixel 7 void
    a = torch.tensor([[1, 1, 1, 0, 0, 0, 0, IGNORE_LABEL]])
    b = torch.tensor([[0, 0, 0, 0, 1, 1, 1, IGNORE_LABEL]])
    p0 = torch.tensor([[1, 1, 0, 0, 1, 0, 0, 1]])  # role 0: IoU_t 2/4 (the void pixel left out), IoU_d 1/5
    p1 = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 0]])  # role 1: IoU_t 3/4, IoU_d 0
    assert role_areas(p0[None], a[None], b[None]).tolist() == [[2, 4, 1, 5, 3]]
    metric = PromptSwap(class_ids=[7, 9])
    targets = torch.stack([a, b])
    metric.update(torch.stack([p0, p1]), targets, targets.flip(0), torch.tensor([5, 5]), torch.tensor([0, 1]),
                  torch.tensor([7, 9]))
    metric.update_absent(p0[None], torch.where((a == 1) | (b == 1), 1, 0)[None])  # 3 of 6 object pixels
    got = metric.compute()
    margin = ((2 / 4 - 1 / 5) + (3 / 4 - 0)) / 2
    assert float(got["S"]) == pytest.approx(100 * margin)
    assert float(got["A"]) == 100 and float(got["queries"]) == 1
    assert float(got["mIoU"]) == pytest.approx(100 * (2 / 4 + 3 / 4) / 2)
    assert float(got["recall"]) == pytest.approx(100 * 5 / 6)
    assert float(got["absent_painted"]) == pytest.approx(50)


def test_interval_covers_the_mean_and_narrows_with_more_queries() -> None:
    gen = torch.Generator().manual_seed(3)

    def noisy(n):
        queries = scenes(n, seed=n)
        flips = torch.rand(n, 2, generator=gen) < 0.3  # a role painted the wrong object 30% of the time
        index = {id(a): q for q, (a, _) in enumerate(queries)}
        return run(PromptSwap(), queries, lambda a, b, r: clean((a, b)[r ^ int(flips[index[id(a)], r])]))

    small, large = noisy(40), noisy(400)
    for s in (small, large):
        assert s["S_low"] < s["S"] < s["S_high"]
    assert large["S_high"] - large["S_low"] < small["S_high"] - small["S_low"]
    assert 20 < large["S"] < 60  # 1 - 2 * 0.3 = 0.4 of the perfect 100, roughly


def test_duplicates_and_the_order_of_updates_do_not_matter() -> None:
    queries = scenes(12)
    rows = []
    for q, (a, b) in enumerate(queries):
        for r in (0, 1):
            pred = clean((a, b)[r]) if q % 3 else clean(a)
            rows.append((pred, torch.stack([a, b])[r], torch.stack([a, b])[1 - r], q, r))
    one = PromptSwap(kinds=("x", "y"))
    for pred, t, d, q, r in rows:
        one.update(pred[None], t[None], d[None], torch.tensor([q]), torch.tensor([r]), torch.tensor([1]))
    # as two DDP ranks would see it: split across processes, reversed, the padded sampler repeating some episodes
    two = PromptSwap(kinds=("x", "y"))
    for pred, t, d, q, r in [*rows[::-1], *rows[:3]]:
        two.update(pred[None], t[None], d[None], torch.tensor([q]), torch.tensor([r]), torch.tensor([1]))
    assert {k: float(v) for k, v in one.compute().items()} == {k: float(v) for k, v in two.compute().items()}


def test_queries_missing_a_role_are_left_out_of_s_and_a() -> None:
    (a, b), = scenes(1)
    metric = PromptSwap()
    metric.update(clean(a)[None], a[None], b[None], torch.tensor([0]), torch.tensor([0]), torch.tensor([1]))
    got = metric.compute()
    assert float(got["queries"]) == 0 and float(got["S"]) == 0 and float(got["mIoU"]) == pytest.approx(100)


def test_bad_input_is_named() -> None:
    (a, b), = scenes(1)
    metric = PromptSwap(kinds=("x", "y"))
    one = torch.tensor([0])
    with pytest.raises(ValueError, match="binary"):
        metric.update((a * 2)[None].clamp(max=2), a[None], b[None], one, one, one)
    with pytest.raises(ValueError, match="overlap"):
        metric.update(clean(a)[None], a[None], a[None], one, one, one)
    with pytest.raises(ValueError, match="role must be 0 or 1"):
        metric.update(clean(a)[None], a[None], b[None], one, torch.tensor([2]), one)
    with pytest.raises(ValueError, match=r"kind must index \['x', 'y'\]"):
        metric.update(clean(a)[None], a[None], b[None], one, one, one, torch.tensor([2]))
    with pytest.raises(ValueError, match="one value per episode"):
        metric.update(clean(a)[None], a[None], b[None], torch.tensor([0, 1]), one, one)
    with pytest.raises(ValueError, match="must all be"):
        metric.update(clean(a), a[None], b[None], one, one, one)
    with pytest.raises(ValueError, match="distinct"):
        PromptSwap(kinds=("x", "x"))

"""PromptSwapDataModule: prompt-swap queries, the test of whether a model segments what the prompt shows.

A query is an image holding two objects: two categories (any semantic set whose images hold several: the synthetic
scenes, COCO, ADE20K, VOC) or two objects of one video (DAVIS-2017, YouTube-VOS). Each is the target once, prompted
by another image that holds it, plus an absent-object control; `seggpt_lab.metrics.PromptSwap` scores them. Query i
is planned from its own generator seeded (seed, i), so a plan depends on neither the workers nor their order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.evaluation import EvaluationDataModule
from datamodules.fewshot import image_tensor
from datamodules.schema import SEM_VOID
from datamodules.shards import ShardReader
from seggpt_lab.canvas import IGNORE_LABEL, SwapQuery

log = logging.getLogger(__name__)

Objects = Literal["categories", "video_objects"]


class SwapSpec(NamedTuple):
    """One query by sample keys: objects (class or video object ids), their prompts, absent (prompt, object), kind."""

    query: str
    objects: tuple[int, int]
    prompts: tuple[str, str]
    absent: tuple[str, int] | None
    kind: int


def object_areas(reader: ShardReader, objects: Objects = "categories") -> tuple[dict[str, dict[int, int]],
                                                                             dict[str, str]]:
    """({key: {object id: pixels}}, {key: group}) over the annotated samples, in shard order: "categories", sem.png
    classes, one group; "video_objects", ins.png instances grouped by video (prompts come from other frames)."""
    areas: dict[str, dict[int, int]] = {}
    groups: dict[str, str] = {}
    for key in reader.keys():
        meta = reader.meta(key)
        if objects == "categories" and "classes" not in meta or objects == "video_objects" and "instances" not in meta:
            continue
        sample = reader.sample(key)
        label = sample.sem if objects == "categories" else sample.ins
        if label is None:
            continue
        counts = np.bincount(label.ravel().astype(np.int64), minlength=1)
        areas[key] = {int(i): int(counts[i]) for i in np.flatnonzero(counts) if 0 < i < SEM_VOID}
        groups[key] = str(meta["video"]["id"]) if objects == "video_objects" and meta.get("video") else ""
    if not areas:
        raise ValueError(f"{reader.index_file}: no sample has {'sem.png' if objects == 'categories' else 'ins.png'} "
                         f"labels; prompt-swap queries with objects={objects!r} need them")
    return areas, groups


def plan_swaps(areas: dict[str, dict[int, int]], groups: dict[str, str] | None = None, min_pixels: int = 16,
               exclusive: bool = True, queries: int | None = None, seed: int = 0,
               kind_of: Callable[[int, int], int] | None = None) -> list[SwapSpec]:
    """The usable queries of `areas` (`object_areas`) in shard order; at most `queries`, a seeded draw.

    An object counts with at least `min_pixels` pixels. Query i (the i-th image holding two) draws from
    `default_rng([seed, i])` a pair (A, B) whose prompts exist, then each prompt: another image of its group holding
    it (with `exclusive`, not the other). Absent control: an object of the group of which the query holds no pixel
    (one group per video: another video's object) and an image of it. `kind_of(a, b)`: the kind's index, default 0."""
    groups = groups or {}
    present = {k: sorted(i for i, n in a.items() if n >= min_pixels) for k, a in areas.items()}
    holders: dict[tuple[str, int], list[str]] = {}
    for key, ids in present.items():
        for i in ids:
            holders.setdefault((groups.get(key, ""), i), []).append(key)
    by_video = groups and len(set(groups.values())) > 1
    plan: list[SwapSpec] = []
    candidates = [k for k, ids in present.items() if len(ids) >= 2]
    for i, key in enumerate(candidates):
        rng = np.random.default_rng([seed, i])
        group, ids = groups.get(key, ""), present[key]

        def prompts_for(a: int, b: int, group: str = group, key: str = key) -> list[str]:
            return [k for k in holders[(group, a)] if k != key and not (exclusive and b in present[k])]

        pairs = [(a, b) for n, a in enumerate(ids) for b in ids[n + 1:] if prompts_for(a, b) and prompts_for(b, a)]
        if not pairs:
            continue
        a, b = pairs[rng.integers(len(pairs))]
        chosen = tuple(str(rng.choice(prompts_for(x, y))) for x, y in ((a, b), (b, a)))
        if by_video:
            others = sorted((g, o) for g, o in holders if g != group)
        else:
            others = sorted((g, o) for g, o in holders if g == group and o not in areas[key])  # not one pixel
        absent = None
        if others:
            g, o = others[rng.integers(len(others))]
            absent = (str(rng.choice(holders[(g, o)])), o)
        plan.append(SwapSpec(key, (a, b), chosen, absent, kind_of(a, b) if kind_of else 0))
    if queries is not None and queries < len(plan):
        keep = np.random.default_rng([seed, len(candidates)]).choice(len(plan), queries, replace=False)
        plan = [plan[j] for j in sorted(keep)]
    return plan


def _binary(label: np.ndarray, value: int) -> torch.Tensor:
    out = (label == value).astype(np.int64)
    out[label == SEM_VOID] = IGNORE_LABEL
    return torch.from_numpy(out)


class PromptSwapQueries(Dataset):
    """Query i of `plan` as a `SwapQuery`, read from `reader` at native image size."""

    def __init__(self, reader: ShardReader, plan: list[SwapSpec], objects: Objects, kinds: list[str]) -> None:
        self.reader, self.plan, self.objects, self.kinds = reader, plan, objects, kinds

    def __len__(self) -> int:
        return len(self.plan)

    def _label(self, key: str) -> tuple[np.ndarray, torch.Tensor]:
        sample = self.reader.sample(key)
        if self.objects == "categories":
            return sample.sem, image_tensor(sample)
        label = sample.ins.astype(np.int64)
        if sample.sem is not None:
            label[sample.sem == SEM_VOID] = SEM_VOID  # ins holds 0 on void; sem marks it
        return label, image_tensor(sample)

    def __getitem__(self, i: int) -> SwapQuery:
        spec = self.plan[i]
        label, image = self._label(spec.query)
        prompts = [self._label(k) for k in spec.prompts]
        item = SwapQuery(key=spec.query, index=i, objects=list(spec.objects), kind=self.kinds[spec.kind],
                         query_image=image, targets=torch.stack([_binary(label, o) for o in spec.objects]),
                         all_objects=_binary(np.where((label > 0) & (label != SEM_VOID), 1, label), 1),
                         prompt_images=[p[1] for p in prompts],
                         prompt_labels=[_binary(p[0], o) for p, o in zip(prompts, spec.objects, strict=True)])
        if spec.absent is not None:
            absent, image = self._label(spec.absent[0])
            item.update(absent_image=image, absent_label=_binary(absent, spec.absent[1]), absent_object=spec.absent[1])
        return item


class PromptSwapDataModule(EvaluationDataModule):
    """Prompt-swap queries (module docstring) from one converted split, one `SwapQuery` at a time at native size;
    scored by `seggpt_lab.modules.evaluate.PromptSwapEvaluation`.

    Args:
        index: path of a converted split's `<split>-index.json`.
        objects: "categories" (sem.png classes) or "video_objects" (one video's objects, from ins.png).
        queries: at most this many queries (a seeded draw); None: every usable image.
        min_pixels: an object counts in an image only with at least this many pixels.
        exclusive: a prompt must not hold the query's other object; "video_objects" recipes set False, as a
            video's frames mostly hold all its objects (the other is then in the prompt, unmarked).
        groups: distractor kinds for "categories": {class name: group} (such as COCO's supercategories) or
            "name_prefix" (the name before its first "-": the synthetic shapes); None: one kind, "all".
        group_label: the kinds are "same_<group_label>" and "other_<group_label>" ("shape", "supercategory").
        seed: seeds query i's generator as (seed, i).
        num_workers: DataLoader worker processes.
    """

    def __init__(self, index: str, objects: Objects = "categories", queries: int | None = None, min_pixels: int = 16,
                 exclusive: bool = True, groups: dict[str, str] | Literal["name_prefix"] | None = None,
                 group_label: str = "group", seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        if objects not in ("categories", "video_objects"):
            raise ValueError(f"objects must be 'categories' or 'video_objects', got {objects!r}")
        if min_pixels < 1 or (queries is not None and queries < 1):
            raise ValueError(f"min_pixels and queries must be >= 1, got {min_pixels} and {queries}")
        if groups is not None and objects != "categories":
            raise ValueError("groups name classes: they apply to objects='categories' only")
        if isinstance(groups, str) and groups != "name_prefix":
            raise ValueError(f"groups must be a {{class name: group}} mapping, 'name_prefix' or None, got {groups!r}")
        self.save_hyperparameters()
        self.index, self.objects, self.queries, self.min_pixels = index, objects, queries, min_pixels
        self.exclusive, self.groups, self.seed, self.num_workers = exclusive, groups, seed, num_workers
        self.kinds = [f"same_{group_label}", f"other_{group_label}"] if groups is not None else ["all"]
        self.dataset: PromptSwapQueries | None = None
        self.class_ids: list[int] = []  # set by setup(): the target classes the mIoU averages over

    def kind_function(self, classes: dict[int, str]) -> Callable[[int, int], int] | None:
        """(a, b) -> 0 when the classes share a group, 1 otherwise; None without groups."""
        if self.groups is None:
            return None
        if self.groups == "name_prefix":
            group = {i: name.split("-")[0] for i, name in classes.items()}
        else:
            unknown = sorted(set(classes.values()) - set(self.groups))
            if unknown:
                raise ValueError(f"{self.index}: groups has no entry for the classes {unknown[:5]}"
                                 f"{' ...' if len(unknown) > 5 else ''}; give every class of the split a group")
            group = {i: self.groups[name] for i, name in classes.items()}
        return lambda a, b: int(group[a] != group[b])

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        reader = ShardReader(self.index)
        areas, groups = object_areas(reader, self.objects)
        if self.objects == "video_objects" and not any(groups.values()):
            raise ValueError(f"{self.index}: no sample has video metadata; objects='video_objects' pairs the objects "
                             "of one video's frames (use objects='categories' for images)")
        classes: dict[int, str] = {}
        for key in areas:
            classes.update({int(i): n for i, n in reader.meta(key).get("classes", {}).items()})
        plan = plan_swaps(areas, groups if self.objects == "video_objects" else None, self.min_pixels,
                          self.exclusive, self.queries, self.seed, self.kind_function(classes))
        if not plan:
            raise ValueError(f"{self.index}: no image holds two objects of at least {self.min_pixels} pixels that "
                             f"other images can prompt{' exclusively' if self.exclusive else ''}; prompt-swap needs "
                             "such images (try exclusive: false or a smaller min_pixels)")
        log.info("%s: %d prompt-swap queries", self.index, len(plan))
        self.dataset = PromptSwapQueries(reader, plan, self.objects, self.kinds)
        self.class_ids = sorted({o for spec in plan for o in spec.objects})

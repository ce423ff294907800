"""What each LightningModule reads from its data module, as typed protocols, checked at `setup`.

A module names the protocol it needs and calls `require(self, Protocol)`; a data module of another kind ends the
run with one line naming the missing attribute and a data module that provides it, instead of an
AttributeError deep inside a step. The data modules (`datamodules/`) satisfy these structurally: nothing here
imports them.
"""

from __future__ import annotations

from typing import Any, Protocol, get_type_hints


class FewShotData(Protocol):
    """`datamodules.fewshot.FewShotDataModule`: the classes its episodes cover."""

    class_ids: list[int]


class SemanticData(Protocol):
    """`datamodules.semantic.SemanticDataModule`: the label space's size and the seeds its examples were drawn with."""

    num_classes: int
    seeds: list[int]


class PanopticData(Protocol):
    """`datamodules.panoptic.PanopticDataModule`: which categories are things and which stuff."""

    things: list[int]
    stuff: list[int]


class PromptSwapData(Protocol):
    """`datamodules.prompt_swap.PromptSwapDataModule`: the objects' ids and the distractor kinds."""

    class_ids: list[int]
    kinds: list[str]


class PromptFollowingData(Protocol):
    """`datamodules.prompt_following.PromptFollowingDataModule`: the (set, part) of each test loader, the
    distractor kinds, and per set and part the classes a mean runs over."""

    parts: list[tuple[str, str]]
    kinds: list[str]
    class_ids: dict[str, dict[str, list[int]]]


class PromptTuningData(Protocol):
    """`datamodules.prompt_tuning.PromptTuningDataModule`: the classes, the crops, the held-out images and the
    one-shot example."""

    class_ids: list[int]
    class_names: list[str]
    train_set: Any
    val_set: Any

    def example(self) -> Any: ...


def require(module: Any, contract: type) -> Any:
    """`module.trainer.datamodule`, after checking that it has every attribute of `contract`; else one line."""
    data = module.trainer.datamodule
    names = [*get_type_hints(contract), *(n for n, v in vars(contract).items() if callable(v) and n[0] != "_")]
    missing = [n for n in names if not hasattr(data, n)]
    if missing:
        provider = contract.__doc__.split(":")[0]
        raise ValueError(f"{type(module).__name__} needs a data module with `{missing[0]}` ({provider} provides it); "
                         f"{type(data).__name__} has none")
    return data

"""What each LightningModule reads from its data module, as typed protocols that `require` checks at `setup`; the
data modules (`datamodules/`, not imported here) satisfy them structurally.
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
    """`datamodules.prompt_following.PromptFollowingDataModule`: test loaders' (set, part), classes per set and part."""

    parts: list[tuple[str, str]]
    kinds: list[str]
    class_ids: dict[str, dict[str, list[int]]]


class PromptTuningData(Protocol):
    """`datamodules.prompt_tuning.PromptTuningDataModule`: classes, crops, held-out images, one-shot example."""

    class_ids: list[int]
    class_names: list[str]
    train_set: Any
    val_set: Any

    def example(self) -> Any: ...


def require(module: Any, contract: type) -> Any:
    """`module.trainer.datamodule` if it has every attribute of `contract`; else a ValueError naming a missing one."""
    data = module.trainer.datamodule
    names = [*get_type_hints(contract), *(n for n, v in vars(contract).items() if callable(v) and n[0] != "_")]
    missing = [n for n in names if not hasattr(data, n)]
    if missing:
        provider = contract.__doc__.split(":")[0]  # each protocol's docstring opens with its provider
        raise ValueError(f"{type(module).__name__} needs a data module with `{missing[0]}` ({provider} provides it); "
                         f"{type(data).__name__} has none")
    return data

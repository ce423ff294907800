"""Each evaluation and tuning module names, in one line, what its data module lacks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from datamodules.fewshot import FewShotDataModule
from datamodules.panoptic import PanopticDataModule
from datamodules.prompt_swap import PromptSwapDataModule
from datamodules.prompt_tuning import PromptTuningDataModule
from datamodules.semantic import SemanticDataModule
from datamodules.video import VideoDataModule
from seggpt_lab.modules.evaluate import (
    FewShotEvaluation,
    PanopticEvaluation,
    PromptSwapEvaluation,
    SemanticEvaluation,
)


def attached(module, data):
    module._trainer = SimpleNamespace(datamodule=data)  # what Trainer.test sets before calling setup
    return module


@pytest.mark.parametrize("module, data, message", [
    (FewShotEvaluation(predictor="oracle"), VideoDataModule("x.json"),
     "FewShotEvaluation needs a data module with `class_ids` (`datamodules.fewshot.FewShotDataModule` provides it); "
     "VideoDataModule has none"),
    (SemanticEvaluation(predictor="oracle"), PromptSwapDataModule("x.json"),
     "SemanticEvaluation needs a data module with `num_classes` (`datamodules.semantic.SemanticDataModule`"),
    (PanopticEvaluation(predictor="oracle"), SemanticDataModule("x.json", "y.json"),
     "PanopticEvaluation needs a data module with `things` (`datamodules.panoptic.PanopticDataModule`"),
    (PromptSwapEvaluation(predictor="oracle"), PanopticDataModule("x.json"),
     "PromptSwapEvaluation needs a data module with `class_ids` (`datamodules.prompt_swap.PromptSwapDataModule`"),
])
def test_a_data_module_of_another_kind_is_named_with_what_it_lacks(module, data, message):
    with pytest.raises(ValueError) as error:
        attached(module, data).setup("test")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_data_modules_that_the_contracts_name_satisfy_them():
    from seggpt_lab.modules import contracts

    pairs = [(contracts.FewShotData, FewShotDataModule("x.json")),
             (contracts.SemanticData, SemanticDataModule("x.json", "y.json")),
             (contracts.PanopticData, PanopticDataModule("x.json")),
             (contracts.PromptSwapData, PromptSwapDataModule("x.json")),
             (contracts.PromptTuningData, PromptTuningDataModule("x.json"))]
    for contract, data in pairs:
        assert contracts.require(SimpleNamespace(trainer=SimpleNamespace(datamodule=data)), contract) is data
    # a method counts too: the few-shot data module has the classes but no one-shot example to tune from
    with pytest.raises(ValueError, match="needs a data module with `class_names`"):
        contracts.require(SimpleNamespace(trainer=SimpleNamespace(datamodule=FewShotDataModule("x.json"))),
                          contracts.PromptTuningData)
    incomplete = SimpleNamespace(class_ids=[], class_names=[], train_set=None, val_set=None)
    with pytest.raises(ValueError, match="needs a data module with `example`"):
        contracts.require(SimpleNamespace(trainer=SimpleNamespace(datamodule=incomplete)), contracts.PromptTuningData)

"""The base of the evaluation DataModules: one item at a time, in a fixed order, for test, val and predict."""

from __future__ import annotations

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset


class EvaluationDataModule(LightningDataModule):
    """Subclasses build `self.dataset` in `setup()`; an item is a whole episode, video or image, hence no batching."""

    dataset: Dataset | None = None
    num_workers: int = 0

    def _loader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.dataset, batch_size=None, shuffle=False, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()

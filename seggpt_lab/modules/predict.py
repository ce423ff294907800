"""`seggpt-lab predict --config recipes/predict.yaml`: each item of `PredictDataModule` segmented by the `Predictor`
with its prompts (or prompt file) or, a video, propagated from its first-frame mask, for `PredictionWriter`."""

from __future__ import annotations

from typing import Literal

from lightning.pytorch import LightningModule

from seggpt_lab.checkpoint import load_pretrained
from seggpt_lab.images import MaskKind, read_frames
from seggpt_lab.model import SegGPT
from seggpt_lab.prediction import Ensemble
from seggpt_lab.predictor import Predictor, PromptTensors
from seggpt_lab.prompts import Prompt, load_prompt


class PredictModule(LightningModule):
    """Segments what the data module lists.

    Args:
        model: the SegGPT; give it or `checkpoint`.
        checkpoint: instead of `model`, any file `load_pretrained` reads (official, Hugging Face, ours, Lightning).

        seg_type: the task token (the official demo's default: "instance").
        ensemble: how several prompts combine, "feature" or "spatial".
        mask_kind: how prompt masks are read ("auto": see `seggpt_lab.images.prompt_masks`).
        num_frames: videos: previous predicted frames used as prompts besides the first (the official FIFO queue).
    """

    def __init__(self, model: SegGPT | None = None, checkpoint: str | None = None,
                 seg_type: Literal["semantic", "instance"] = "instance", ensemble: Ensemble = "feature",
                 mask_kind: MaskKind = "auto", num_frames: int = 0) -> None:
        super().__init__()
        if (model is None) == (checkpoint is None):
            raise ValueError("model: give exactly one of `model` and `checkpoint`")
        if num_frames < 0:
            raise ValueError(f"model.num_frames must be >= 0, got {num_frames}")
        # not the model: built in Python it is an nn.Module, which would be pickled into every checkpoint and make
        # it unreadable weights-only (resume refuses it); its weights are in the state dict, its config in the CLI's
        self.save_hyperparameters(ignore=["model"])
        self.model = load_pretrained(checkpoint) if model is None else model
        self.predictor: Predictor | None = None
        self.prompts: PromptTensors | None = None
        self.prompt_file: Prompt | None = None

    def on_predict_start(self) -> None:
        self.predictor = Predictor(self.model, self.device)
        data = self.trainer.datamodule
        # read and checked once for the whole run
        if data.prompts:
            self.prompts = self.predictor.prepare(list(zip(data.prompts, data.prompt_masks, strict=True)),
                                                  self.hparams.mask_kind)
        if data.prompt_file is not None:
            self.prompt_file = load_prompt(data.prompt_file)

    def predict_step(self, item: dict, index: int) -> dict:
        data, hp = self.trainer.datamodule, self.hparams
        if item["kind"] == "video":
            images = read_frames(item["path"], data.max_frames)  # decoded once: the writer overlays these
            results = self.predictor.segment_video(images, data.first_mask, hp.num_frames, hp.seg_type)
            return {**item, "frames": results, "images": images}
        if data.prompt_file is not None:
            result = self.predictor.segment(item["path"], prompt_file=self.prompt_file, seg_type=hp.seg_type)
        else:
            result = self.predictor.segment(item["path"], self.prompts, ensemble=hp.ensemble, seg_type=hp.seg_type)
        return {**item, "result": result}

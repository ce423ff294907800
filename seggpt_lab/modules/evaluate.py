"""Evaluation runs, `seggpt-lab test --config recipes/eval_<benchmark>.yaml`, each scored by its benchmark's
protocol (README, "Evaluation"). Each prints a table, writes under `output_dir` results.json, a CSV row per episode,
sequence or image, and pictures (prompt | query | prediction | ground truth), and logs them to a WandbLogger if set.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch import LightningModule
from PIL import Image

from seggpt_lab.canvas import (
    IGNORE_LABEL,
    ClassPrompt,
    Episode,
    PanopticImage,
    SemanticImage,
    SwapQuery,
    VideoSequence,
    clean,
)
from seggpt_lab.checkpoint import load_pretrained
from seggpt_lab.metrics import (
    FewShotIoU,
    JandF,
    PanopticQuality,
    PromptSwap,
    SemanticIoU,
    episode_areas,
    role_areas,
)
from seggpt_lab.model import SegGPT
from seggpt_lab.modules.contracts import FewShotData, PanopticData, PromptSwapData, SemanticData, require
from seggpt_lab.palette import VIDEO_THRESHOLD, build_palette
from seggpt_lab.pictures import dense, episode_picture, picture, prompt_tile, swap_picture
from seggpt_lab.prediction import Ensemble, predict_foreground, predict_labels, predict_with_prompt, propagate
from seggpt_lab.prompts import load_prompt
from seggpt_lab.references import reference_labels
from seggpt_lab.segments import panoptic_from_classes

PredictorName = Literal["model", "oracle", "empty", "colour"]

def refuse_colour(evaluation: Evaluation) -> None:
    """Raise for predictor "colour": the image-level evaluations give reference predictors no example prompts."""
    if evaluation.hparams.predictor == "colour":
        raise ValueError(f"{type(evaluation).__name__} has no example prompts for predictor 'colour'; "
                         "use model, oracle or empty")


# (prompt images, prompt labels, query image, query truth, the prompted category) -> the query's labels (H, W)
PredictOne = Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor, int], torch.Tensor]


def predict_swap(predict: PredictOne, query: SwapQuery) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A prompt-swap query's predictions (2, H, W), prompted by object 0 then 1, and the absent control's or None."""
    image, targets = query["query_image"], query["targets"]
    preds = torch.stack([predict([query["prompt_images"][r]], [query["prompt_labels"][r]], image, targets[r],
                                 query["objects"][r]) for r in (0, 1)])
    absent = None
    if "absent_image" in query:
        absent = predict([query["absent_image"]], [query["absent_label"]], image, torch.zeros_like(targets[0]),
                         query["absent_object"])
    return preds, absent


def update_swap(metric: PromptSwap, query: SwapQuery, preds: torch.Tensor, absent: torch.Tensor | None) -> None:
    """Add one query's two roles (and its absent control) to `metric`."""
    targets = query["targets"]
    device = targets.device
    metric.update(preds, targets, targets.flip(0), torch.tensor([query["index"]] * 2, device=device),
                  torch.tensor([0, 1], device=device), torch.tensor(query["objects"], device=device),
                  torch.tensor([metric.kinds.index(query["kind"])] * 2, device=device))
    if absent is not None:
        both = torch.where((targets == 1).any(0), 1, torch.where((targets == IGNORE_LABEL).any(0), IGNORE_LABEL, 0))
        metric.update_absent(absent[None], both[None])


def episode_row(episode: Episode, index: int, pred: torch.Tensor) -> dict:
    """One episode's CSV row: its query, class, shots and the prediction's foreground IoU (x100; 100 when both the
    prediction and the truth are empty)."""
    inter, union = (a[0, 1].item() for a in episode_areas(pred[None], episode["query_label"][None]))
    return {"episode": index, "query": episode["key"], "class_id": episode["class_id"],
            "shots": len(episode["prompt_images"]), "iou": 100 * inter / union if union else 100.0}


def swap_rows(query: SwapQuery, preds: torch.Tensor, absent: torch.Tensor | None) -> list[dict]:
    """One prompt-swap query's CSV rows: per role the IoU with the target and with the other object (x100), and the
    absent control's share of the two objects' pixels painted."""
    targets = query["targets"]
    areas = role_areas(preds, targets, targets.flip(0)).tolist()  # per role: I, U with target, with the other
    rows = [{"query": query["key"], "index": query["index"], "role": r, "target": query["objects"][r],
             "distractor": query["objects"][1 - r], "kind": query["kind"],
             "iou_target": 100 * inter_t / max(union_t, 1), "iou_distractor": 100 * inter_d / max(union_d, 1),
             "absent_painted": ""}
            for r, (inter_t, union_t, inter_d, union_d, _) in enumerate(areas)]
    if absent is not None:
        on = (targets == 1).any(0)
        rows.append({"query": query["key"], "index": query["index"], "role": "absent", "target": query["absent_object"],
                     "distractor": "", "kind": query["kind"], "iou_target": "", "iou_distractor": "",
                     "absent_painted": 100 * float(((absent == 1) & on).sum() / on.sum().clamp(min=1))})
    return rows


class Evaluation(LightningModule):
    """The base of the evaluation runs. Predictions are decoded by the nearest palette colour (transformers'
    `SegGptImageProcessor.post_process_semantic_segmentation`), one-label ones by `binary_threshold` if set.

    Args:
        model: the SegGPT to evaluate; or None and `checkpoint`.
        checkpoint: a file or folder `load_pretrained` reads (official, Hugging Face, ours); read for "model" only.
        predictor: "model", or a reference (`seggpt_lab.references`): "oracle" (the ground truth), "empty" (all
            background) or "colour" (`colour_match` on the example prompts; refused by semantic and panoptic runs).
        ensemble: how several prompts combine: "feature" (the model's feature ensemble) or "spatial" (a grid).
        seg_type: the task token given to the model.
        output_dir: where results.json, the CSV and the pictures go.
        num_pictures: prediction pictures to write.
    """

    binary_threshold: float | None = None

    def __init__(self, model: SegGPT | None = None, checkpoint: str | None = None, predictor: PredictorName = "model",
                 ensemble: Ensemble = "feature", seg_type: Literal["semantic", "instance"] = "instance",
                 output_dir: str = "outputs/eval", num_pictures: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        if checkpoint is not None and predictor == "model":
            model = load_pretrained(checkpoint)
        if predictor == "model" and model is None:
            raise ValueError("evaluation needs --model.init_args.model or --model.init_args.checkpoint "
                             "(or predictor: oracle / empty)")
        self.model = model
        self.output_dir = Path(output_dir)
        self.rows: list[dict] = []

    def predict_one(self, prompt_images: list[torch.Tensor], prompt_labels: list[torch.Tensor],
                    query_image: torch.Tensor, query_truth: torch.Tensor, num_labels: int,
                    predictor: str | None = None, all_objects: torch.Tensor | None = None,
                    palette: torch.Tensor | None = None) -> torch.Tensor:
        """The query's label map (H, W) from `predictor` (default: the configured one); `palette`: the model's
        prompt colours and decoding palette, if not `build_palette(num_labels)`."""
        predictor = predictor or self.hparams.predictor
        if predictor != "model":
            return reference_labels(predictor, prompt_images, prompt_labels, query_image, query_truth, all_objects)
        return predict_labels(self.model, prompt_images, [clean(p) for p in prompt_labels], query_image, num_labels,
                              self.hparams.seg_type, self.hparams.ensemble, self.binary_threshold, palette
                              ).to(query_truth.device)

    def save_picture(self, name: str, image: Image.Image) -> None:
        folder = self.output_dir / "pictures"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{name}.png")
        if hasattr(self.logger, "log_image"):
            self.logger.log_image(key="test/predictions", images=[image], caption=[name])

    def write_rows(self, rows: list[dict], csv_name: str) -> None:
        """This rank's rows as `<csv_name>.csv` (`<csv_name>-rank<r>.csv` under DDP) and a W&B table."""
        if not rows:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        rank = f"-rank{self.global_rank}" if self.trainer.world_size > 1 else ""
        with open(self.output_dir / f"{csv_name}{rank}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        if hasattr(self.logger, "log_table"):
            self.logger.log_table(key=f"test/{csv_name}", columns=list(rows[0]), data=[list(r.values()) for r in rows])

    def write_results(self, results: dict, metrics: dict[str, float]) -> None:
        """results.json (rank 0), with the predictor and the ensemble that made the numbers, and under `metrics` the
        figures as logged (what `callbacks.EvaluateAfterFit` hands to a training run)."""
        if self.global_rank == 0:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            summary = {"predictor": self.hparams.predictor, "ensemble": self.hparams.ensemble, **results,
                       "metrics": metrics}
            (self.output_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")

    def finish(self, results: dict[str, float], csv_name: str, info: dict[str, object] | None = None) -> None:
        """Log, print and write `results` and `info` (how they were made) on rank 0, and this rank's rows."""
        results = {k: float(v) for k, v in results.items()}
        for name, value in results.items():
            self.log(f"test/{name}", value, rank_zero_only=True)
        self.write_rows(self.rows, csv_name)
        info = info or {}
        self.write_results({**info, **results}, {f"test/{k}": v for k, v in results.items()})
        if self.global_rank == 0:
            width = max((len(k) for k in [*results, *info]), default=0)
            lines = [f"  {k:<{width}}  {v}" for k, v in info.items()]
            lines += [f"  {k:<{width}}  {v:8.2f}" for k, v in results.items()] or ["  (no local score)"]
            print("\n".join([f"{type(self).__name__} ({self.hparams.predictor})", *lines]))


class FewShotEvaluation(Evaluation):
    """Few-shot segmentation (FSS-1000, PASCAL-5i, COCO-20i): HSNet's mIoU and FB-IoU x100 (`FewShotIoU`).

    Args:
        class_ids: the classes the mean runs over (a fold's test classes); None: the data module's `class_ids`.
        model, checkpoint, predictor, ensemble, seg_type, output_dir, num_pictures: see `Evaluation`.
    """

    def __init__(self, model: SegGPT | None = None, checkpoint: str | None = None, predictor: PredictorName = "model",
                 ensemble: Ensemble = "feature", seg_type: Literal["semantic", "instance"] = "instance",
                 output_dir: str = "outputs/eval", num_pictures: int = 8, class_ids: list[int] | None = None) -> None:
        super().__init__(model, checkpoint, predictor, ensemble, seg_type, output_dir, num_pictures)
        self.class_ids = class_ids

    def setup(self, stage: str) -> None:
        class_ids = self.class_ids or require(self, FewShotData).class_ids
        if not class_ids:
            raise ValueError("FewShotEvaluation needs class_ids, from its arguments or the data module")
        self.metric = FewShotIoU(class_ids=list(class_ids))

    def test_step(self, episode: Episode, index: int) -> None:
        truth = episode["query_label"]
        pred = self.predict_one(episode["prompt_images"], episode["prompt_labels"], episode["query_image"], truth, 1)
        self.metric.update(pred[None], truth[None], torch.tensor([episode["class_id"]], device=truth.device))
        self.rows.append(episode_row(episode, index, pred))
        if index < self.hparams.num_pictures:
            self.save_picture(f"episode-{index:05d}", episode_picture(episode, pred))

    def on_test_epoch_end(self) -> None:
        self.finish(self.metric.compute(), "episodes")


class VideoEvaluation(Evaluation):
    """Semi-supervised video object segmentation (DAVIS 2016/2017, YouTube-VOS, MOSE): frame 0's objects and the
    last `memory` predictions prompt each later frame (`propagate`); J&F by the DAVIS toolkit's rules (`JandF`).
    One object (DAVIS-2016) is binarised as the official video mode does (`VIDEO_THRESHOLD`).

    Args:
        memory: predicted frames kept as extra prompts (a FIFO queue).
        new_objects: objects first annotated after frame 0 join there with their given masks (YouTube-VOS, MOSE).
        score: compute J&F locally (needs every frame annotated, as DAVIS has).
        submission: write palette PNGs in the servers' layout, `output_dir/Annotations/<video>/<frame>.png`.
        model, checkpoint, predictor, ensemble, seg_type, output_dir, num_pictures: see `Evaluation`.
    """

    binary_threshold = VIDEO_THRESHOLD

    def __init__(self, model: SegGPT | None = None, checkpoint: str | None = None, predictor: PredictorName = "model",
                 ensemble: Ensemble = "feature", seg_type: Literal["semantic", "instance"] = "instance",
                 output_dir: str = "outputs/eval", num_pictures: int = 8, memory: int = 0, new_objects: bool = False,
                 score: bool = True, submission: bool = False) -> None:
        super().__init__(model, checkpoint, predictor, ensemble, seg_type, output_dir, num_pictures)
        self.metric = JandF()

    def test_step(self, sequence: VideoSequence, index: int) -> None:
        images, truth = sequence["images"], sequence["labels"]
        given = [clean(label) for label in truth]
        first = given[0]
        seen = set(first.unique().tolist()) - {0}
        if self.hparams.new_objects:
            seen = seen.union(*(set(label.unique().tolist()) for label in given)) - {0}

        def predict(prompts, t, num_labels):
            return self.predict_one([p[0] for p in prompts], [p[1] for p in prompts], images[t], truth[t], num_labels)

        preds = propagate(images, first, predict, self.hparams.memory, given if self.hparams.new_objects else None)
        pred_seq = torch.stack(preds)
        row = {"video": sequence["key"], "frames": len(images), "objects": len(seen)}
        if self.hparams.score:
            self.metric.update(pred_seq, truth)
            j, f = self.metric.last_sequence
            j_mean, f_mean = 100 * float(j.mean(1).mean()), 100 * float(f.mean(1).mean())
            row.update({"J&F": (j_mean + f_mean) / 2, "J": j_mean, "F": f_mean})
        self.rows.append(row)
        if self.hparams.submission:
            self._write_annotations(sequence, pred_seq, max(seen, default=1))
        if index < self.hparams.num_pictures:
            middle = len(images) // 2
            self.save_picture(f"video-{sequence['key']}", picture(
                [images[0], images[middle], images[middle], images[middle]],
                [first, torch.zeros_like(pred_seq[0]), pred_seq[middle], truth[middle]], max(seen, default=1)))

    def _write_annotations(self, sequence: VideoSequence, pred: torch.Tensor, num_objects: int) -> None:
        folder = self.output_dir / "Annotations" / sequence["key"]
        folder.mkdir(parents=True, exist_ok=True)
        palette = build_palette(max(num_objects, 1)).flatten().tolist()
        for frame, labels in zip(sequence["frames"], pred, strict=True):
            png = Image.fromarray(labels.byte().cpu().numpy(), mode="P")
            png.putpalette(palette)
            png.save(folder / f"{frame:05d}.png")

    def on_test_epoch_end(self) -> None:
        self.finish(self.metric.compute() if self.hparams.score else {}, "sequences")


class SemanticEvaluation(Evaluation):
    """Semantic segmentation (ADE20K, LoveDA): each class is prompted by its examples and each pixel takes its best
    class, or a prompt file paints every class in one forward; `SemanticIoU` (detectron2's SemSegEvaluator). With
    several example seeds, each is scored and the best reported (`best_seed`): the paper's Table S1 protocol,
    optimistic (README, "Evaluation"); results.json's `protocol` names what made the number.

    Args:
        background: label 0 is a class (LoveDA, VOC): a pixel whose best score is below 0.5 (prompt file: nearest
            to black) is background; False (ADE20K, whose 0 is void): every pixel takes its best class.
        prompt_file: a prompt file (`seggpt_lab.prompts`) used instead of the data module's examples; model only.
        model, checkpoint, predictor, ensemble, seg_type, output_dir, num_pictures: see `Evaluation`.
    """

    PAPER_SEEDS = [1000, 2000, 3000, 4000]  # SegGPT Appendix B / Table S1: example-based ADE20K, best of these

    def __init__(self, model: SegGPT | None = None, checkpoint: str | None = None, predictor: PredictorName = "model",
                 ensemble: Ensemble = "feature", seg_type: Literal["semantic", "instance"] = "semantic",
                 output_dir: str = "outputs/eval", num_pictures: int = 8, background: bool = True,
                 prompt_file: str | None = None) -> None:
        super().__init__(model, checkpoint, predictor, ensemble, seg_type, output_dir, num_pictures)
        refuse_colour(self)
        self.prompt = load_prompt(prompt_file) if prompt_file is not None and predictor == "model" else None

    def setup(self, stage: str) -> None:
        data = require(self, SemanticData)
        num_classes = data.num_classes
        if not num_classes:
            raise ValueError("SemanticEvaluation needs a data module that reports num_classes (SemanticDataModule)")
        if self.prompt is not None:  # the file may name classes the evaluated split lacks
            num_classes = max(num_classes, max(self.prompt["class_ids"], default=0) + 1)
        # one score per seed of the data module's examples; a prompt file uses no examples, so one score
        self.seeds = [None] if self.prompt is not None else list(data.seeds)
        self.metrics = torch.nn.ModuleList(SemanticIoU(num_classes=num_classes, ignore_index=IGNORE_LABEL)
                                           for _ in self.seeds)

    def protocol(self) -> str:
        """How the reported number was made, for results.json and the printed table."""
        if self.prompt is not None:
            return f"prompt file {self.hparams.prompt_file}"
        if self.seeds == [None]:
            return "the data module's examples"
        if len(self.seeds) == 1:
            return f"seed {self.seeds[0]}"
        paper = " (paper Table S1)" if self.seeds == self.PAPER_SEEDS else ""
        return f"best of seeds {self.seeds}{paper}"

    def segment(self, item: SemanticImage, prompts: list[ClassPrompt]) -> torch.Tensor:
        """(H, W) class ids for one image, prompted per class by `prompts`."""
        truth = item["label"]
        if self.hparams.predictor != "model":
            return self.predict_one([], [], item["image"], truth, 1)
        if self.prompt is not None:
            return predict_with_prompt(self.model, self.prompt, item["image"], self.hparams.seg_type,
                                       self.hparams.background).to(truth.device)
        scores = torch.stack([predict_foreground(self.model, p["images"], p["labels"], item["image"],
                                                 self.hparams.seg_type, self.hparams.ensemble)
                              for p in prompts])  # (C, H, W)
        ids = torch.tensor([p["class_id"] for p in prompts])
        best, index = scores.max(0)
        pred = ids[index]
        if self.hparams.background:
            pred = torch.where(best < 0.5, 0, pred)
        return pred.to(truth.device)

    def test_step(self, item: SemanticImage, index: int) -> None:
        truth = item["label"]
        valid = truth != IGNORE_LABEL
        per_seed = len(item["prompts"]) // len(self.seeds)  # the data module's prompts are seed-major
        preds = [self.segment(item, item["prompts"][k * per_seed:(k + 1) * per_seed]) for k in range(len(self.seeds))]
        for seed, metric, pred in zip(self.seeds, self.metrics, preds, strict=True):
            metric.update(pred[None], truth[None])
            self.rows.append({"image": item["key"], "seed": seed, "pixel_accuracy":
                              100 * float((pred == truth)[valid].float().mean()) if valid.any() else 100.0})
        pred = preds[0]  # the pictures show the first seed's prediction
        if index < self.hparams.num_pictures:
            images, labels = [item["image"]] * 3, [torch.zeros_like(truth), pred, truth]
            if self.prompt is not None:
                example, example_labels = prompt_tile(self.prompt)
                images, labels = [example, *images[1:]], [example_labels, *labels[1:]]
            num_labels = max(per_seed, *(int(clean(label).max()) for label in labels))
            self.save_picture(f"image-{index:05d}", picture(images, labels, num_labels))

    def on_test_epoch_end(self) -> None:
        scores = [metric.compute() for metric in self.metrics]
        best = max(range(len(scores)), key=lambda k: float(scores[k]["mIoU"]))
        results = dict(scores[best])
        if len(scores) > 1:
            results |= {f"mIoU_seed{seed}": s["mIoU"] for seed, s in zip(self.seeds, scores, strict=True)}
            results["mIoU_mean_over_seeds"] = sum(float(s["mIoU"]) for s in scores) / len(scores)
        info = {"protocol": self.protocol(), **({"best_seed": self.seeds[best]} if len(scores) > 1 else {})}
        self.finish(results, "images", info)


class PanopticEvaluation(Evaluation):
    """Panoptic segmentation (COCO): a prompt file paints every class, each stuff class is one segment, and thing
    instances come from `instances` (`panoptic_from_classes`: category and instance in parallel, baaivision/Painter#40).
    panopticapi's PQ, SQ and RQ for all, things and stuff (`pq_compute`: crowd regions neither matched nor penalised).

    Args:
        prompt_file: the class prompt file (`seggpt_lab.prompts`), whose palette names the classes; needed by the model.
        instances: "prompt" (the regions an instance prompt paints) or "components" (8-connected regions of a
            thing class: touching objects merge); `panoptic_from_classes` turns them into instances.
        instance_prompt_file: the instance prompt (`datamodules.panoptic.instance_prompt`); needed with "prompt".
        things: category ids of countable objects; None: the data module's `things`.
        stuff: category ids of amorphous regions; None: the data module's `stuff`.
        min_area: predicted segments (instances and stuff regions) of fewer pixels are dropped.
        model, checkpoint, predictor, ensemble, seg_type, output_dir, num_pictures: see `Evaluation` (one prompt:
            `ensemble` does not apply).
    """

    def __init__(self, model: SegGPT | None = None, checkpoint: str | None = None, predictor: PredictorName = "model",
                 ensemble: Ensemble = "feature", seg_type: Literal["semantic", "instance"] = "semantic",
                 output_dir: str = "outputs/eval", num_pictures: int = 8, prompt_file: str | None = None,
                 instances: Literal["prompt", "components"] = "prompt", instance_prompt_file: str | None = None,
                 things: list[int] | None = None, stuff: list[int] | None = None, min_area: int = 0) -> None:
        super().__init__(model, checkpoint, predictor, ensemble, seg_type, output_dir, num_pictures)
        refuse_colour(self)
        if predictor == "model" and prompt_file is None:
            raise ValueError("PanopticEvaluation with the model needs --model.init_args.prompt_file")
        if predictor == "model" and instances == "prompt" and instance_prompt_file is None:
            raise ValueError("PanopticEvaluation with instances 'prompt' needs --model.init_args.instance_prompt_file "
                             "(or --model.init_args.instances components)")
        self.prompt = load_prompt(prompt_file) if predictor == "model" else None
        self.instance_prompt = (load_prompt(instance_prompt_file) if predictor == "model" and instances == "prompt"
                                else None)

    def setup(self, stage: str) -> None:
        things, stuff = self.hparams.things, self.hparams.stuff
        if things is None or stuff is None:
            data = require(self, PanopticData)
            things = things if things is not None else data.things
            stuff = stuff if stuff is not None else data.stuff
        if things is None or stuff is None or not (things or stuff):
            raise ValueError("PanopticEvaluation needs things and stuff, from its arguments or the data module "
                             "(PanopticDataModule)")
        self.things, self.stuff = list(things), list(stuff)
        self.metric = PanopticQuality(things=self.things, stuff=self.stuff)

    def segment(self, item: PanopticImage) -> tuple[torch.Tensor, dict[int, int]]:
        """((H, W) segment ids, {segment id: category}) for one image."""
        truth = item["segments"]
        if self.hparams.predictor == "oracle":
            return truth, {s: int(c) for s, (c, _) in item["segment_info"].items()}
        if self.hparams.predictor == "empty":
            return torch.zeros_like(truth), {}
        classes = predict_with_prompt(self.model, self.prompt, item["image"], self.hparams.seg_type)
        painted = None  # the instance prompt's rows: one colour per object
        if self.instance_prompt is not None:
            painted = predict_with_prompt(self.model, self.instance_prompt, item["image"], "instance")
        segments, info = panoptic_from_classes(classes, self.things, self.stuff, self.hparams.min_area, painted)
        return segments.to(truth.device), info

    def test_step(self, item: PanopticImage, index: int) -> None:
        truth, truth_info = item["segments"], item["segment_info"]
        pred, pred_info = self.segment(item)
        self.metric.update((pred, pred_info), (truth, truth_info))
        self.rows.append({"image": item["key"], "predicted_segments": len(pred_info),
                          "ground_truth_segments": len(truth_info)})
        if index < self.hparams.num_pictures:
            images, labels = [item["image"]] * 3, [torch.zeros_like(truth), dense(pred), dense(truth)]
            if self.prompt is not None:
                example, example_labels = prompt_tile(self.prompt)
                images, labels = [example, *images[1:]], [example_labels, *labels[1:]]
            num_labels = max(int(label.max()) for label in labels)
            self.save_picture(f"image-{index:05d}", picture(images, labels, num_labels))

    def on_test_epoch_end(self) -> None:
        self.finish(self.metric.compute(), "images")


class PromptSwapEvaluation(Evaluation):
    """Prompt-swap queries (`datamodules.prompt_swap`) scored by `PromptSwap` (README, "Evaluation"), and the
    category-blind oracle beside (`blind_oracle/...`: S 0; a prompt-following model beats its mIoU).

    Args:
        bootstrap: resamples for the interval of S.
        model, checkpoint, predictor, ensemble, seg_type, output_dir, num_pictures: see `Evaluation`.
    """

    def __init__(self, model: SegGPT | None = None, checkpoint: str | None = None, predictor: PredictorName = "model",
                 ensemble: Ensemble = "feature", seg_type: Literal["semantic", "instance"] = "semantic",
                 output_dir: str = "outputs/eval", num_pictures: int = 8, bootstrap: int = 1000) -> None:
        super().__init__(model, checkpoint, predictor, ensemble, seg_type, output_dir, num_pictures)

    def setup(self, stage: str) -> None:
        data = require(self, PromptSwapData)
        kinds, class_ids = data.kinds, data.class_ids
        if not kinds:
            raise ValueError("PromptSwapEvaluation needs a data module that reports kinds (PromptSwapDataModule)")
        self.metric = PromptSwap(class_ids, kinds, self.hparams.bootstrap)
        self.blind = PromptSwap(class_ids, kinds, self.hparams.bootstrap)

    def test_step(self, query: SwapQuery, index: int) -> None:
        preds, absent = predict_swap(lambda *a: self.predict_one(*a[:4], num_labels=1), query)
        update_swap(self.metric, query, preds, absent)
        update_swap(self.blind, query, *predict_swap(lambda *a: self.predict_one(
            *a[:4], num_labels=1, predictor="all_objects", all_objects=query["all_objects"]), query))
        self.rows += swap_rows(query, preds, absent)
        if index < self.hparams.num_pictures:
            self.save_picture(f"query-{index:05d}", swap_picture(query, preds))

    def on_test_epoch_end(self) -> None:
        scores = self.metric.compute()
        blind = self.blind.compute()
        scores.update({f"blind_oracle/{k}": blind[k] for k in ("S", "A", "mIoU", "recall", "absent_painted")})
        self.finish(scores, "episodes")


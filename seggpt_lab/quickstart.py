"""The quickstart's evaluation: one-shot episodes on new synthetic scenes, the model against trivial baselines.

    seggpt-lab fit --config recipes/quickstart.yaml
    python -m seggpt_lab.quickstart --config recipes/quickstart.yaml [--checkpoint PATH]

Two episode sets of one-shot segmentation (prompt: another image holding the category, painted in one
colour; the task: that category in the query): new images of the training categories (`val`) and the
held-out shape x texture combinations (`heldout`, never seen in training). Each is scored with HSNet's
mIoU (x100) for the model and for predictors that do not read the prompt's category:

- copy_prompt: the prompt's mask pasted onto the query (the prompt and query have one size here);
- all_background / all_foreground: every pixel 0 / every pixel 1;
- oracle_all_objects: every object pixel of the query whatever its category, an upper bound for a model
  that finds objects but ignores which one the prompt shows.

The world is the recipe's: the validation source's folder and generator settings (`data.init_args.val`,
with its `convert` spec) give the `val` episodes and, with the split changed, the `heldout` ones.
Writes `results.json` (`miou`, `heldout_categories_miou`, `baselines`, `oracle_all_objects_miou`, the same for
the held-out set, the ratio to the best baseline), prediction pictures and the training loss curve.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import torch
import yaml
from PIL import Image, ImageDraw
from tqdm import tqdm

from datamodules.fewshot import FewShotEpisodes, image_classes, plan_episodes
from datamodules.pretrain import ShardSource
from datamodules.shards import ShardReader
from seggpt_lab.canvas import IGNORE_LABEL
from seggpt_lab.checkpoint import load_pretrained
from seggpt_lab.inference import predict_labels
from seggpt_lab.metrics import FewShotIoU
from seggpt_lab.modules.evaluate import picture

PREDICTORS = ("model", "copy_prompt", "all_background", "all_foreground", "oracle_all_objects")


def world(recipe: str | Path) -> tuple[Path, dict]:
    """The recipe's synthetic validation world: (DIR/synthetic, its `convert` spec: source, samples, size...)."""
    config = yaml.safe_load(Path(recipe).read_text())
    try:
        val = config["data"]["init_args"]["val"]
        spec = dict(val["convert"])
    except (KeyError, TypeError):
        raise ValueError(f"{recipe}: data.init_args.val needs a path and a synthetic `convert` spec") from None
    if spec.get("source") != "synthetic":
        raise ValueError(f"{recipe}: the quickstart evaluates on synthetic scenes; data.init_args.val.convert.source "
                         "must be synthetic")
    return Path(val["path"]), spec


def episodes(folder: Path, split: str, count: int, spec: dict, seed: int = 0) -> FewShotEpisodes:
    """`count` one-shot episodes (a class drawn uniformly, then query and prompt) of a synthetic split,
    generated into `folder` (DIR/synthetic) with the `convert` spec when missing, as training does."""
    ShardSource(str(folder), split=split, convert=spec).ensure_converted()
    reader = ShardReader(folder / f"{split}-index.json")
    plan, _ = plan_episodes(image_classes(reader, min_pixels=16), 1, count, "class_uniform", seed)
    return FewShotEpisodes(reader, plan)


@torch.inference_mode()
def evaluate(model, dataset: FewShotEpisodes, label: str, pictures: Path | None = None, num_pictures: int = 8
             ) -> dict[str, float]:
    """mIoU of every predictor over the episodes of `dataset`."""
    class_ids = sorted({spec.class_id for spec in dataset.plan})
    metrics = {name: FewShotIoU(class_ids=class_ids) for name in PREDICTORS}
    for i in tqdm(range(len(dataset)), desc=f"evaluating {label}", unit="episode"):
        episode, spec = dataset[i], dataset.plan[i]
        truth, prompt = episode["query_label"], episode["prompt_labels"][0]
        sem = torch.from_numpy(dataset.reader.sample(spec.query).sem.astype("int64"))
        preds = {
            "model": predict_labels(model, episode["prompt_images"], [torch.where(prompt == IGNORE_LABEL, 0, prompt)],
                                    episode["query_image"], 1, "semantic"),
            "copy_prompt": torch.where(prompt == IGNORE_LABEL, 0, prompt),
            "all_background": torch.zeros_like(truth),
            "all_foreground": torch.ones_like(truth),
            "oracle_all_objects": (sem > 0).long(),
        }
        for name, pred in preds.items():
            metrics[name].update(pred[None], truth[None], torch.tensor([episode["class_id"]]))
        if pictures is not None and i < num_pictures:
            pictures.mkdir(parents=True, exist_ok=True)
            image = episode["query_image"]
            picture([episode["prompt_images"][0], image, image, image], [prompt, torch.zeros_like(truth),
                    preds["model"], truth], 1).save(pictures / f"{label}-{i:03d}.png")
    return {name: float(m.compute()["mIoU"]) for name, m in metrics.items()}


def loss_curve(metrics_csv: Path, out: Path, key: str = "train/loss", size: tuple[int, int] = (640, 320)) -> None:
    """A line plot of `key` against the step from a CSVLogger file (PIL: no plotting library needed)."""
    with open(metrics_csv) as f:
        points = [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]
    if len(points) < 2:
        return
    w, h = size
    pad = 40
    steps, values = zip(*points, strict=True)
    lo, hi = min(values), max(values)
    span_x, span_y = max(steps[-1] - steps[0], 1), max(hi - lo, 1e-12)
    xy = [(pad + (s - steps[0]) / span_x * (w - 2 * pad), h - pad - (v - lo) / span_y * (h - 2 * pad))
          for s, v in points]
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([pad, pad, w - pad, h - pad], outline="gray")
    draw.line(xy, fill=(31, 119, 180), width=2)
    draw.text((pad, 8), f"{key} by step: {values[0]:.4f} at {steps[0]} -> {values[-1]:.4f} at {steps[-1]}",
              fill="black")
    draw.text((pad, h - pad + 8), f"step {steps[0]}", fill="black")
    draw.text((w - pad - 60, h - pad + 8), f"step {steps[-1]}", fill="black")
    draw.text((4, pad - 12), f"{hi:.3f}", fill="black")
    draw.text((4, h - pad), f"{lo:.3f}", fill="black")
    image.save(out)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="recipes/quickstart.yaml", help="the recipe the model was trained with")
    parser.add_argument("--checkpoint", default="outputs/quickstart/checkpoints/last.ckpt")
    parser.add_argument("--output", default="outputs/quickstart")
    parser.add_argument("--episodes", type=int, default=300, help="episodes per set")
    opts = parser.parse_args(argv)
    folder, spec = world(opts.config)
    out = Path(opts.output)
    model = load_pretrained(opts.checkpoint).eval()
    scores = {}
    for split in ("val", "heldout"):
        data = episodes(folder, split, opts.episodes, spec)
        scores[split] = evaluate(model, data, split, out / "pictures")
    seen, held = scores["val"], scores["heldout"]
    baselines = {k: seen[k] for k in ("copy_prompt", "all_background", "all_foreground")}
    best = max(baselines.values())
    results = {
        "miou": seen["model"],
        "heldout_categories_miou": held["model"],
        "baselines": baselines,
        "oracle_all_objects_miou": seen["oracle_all_objects"],
        "best_baseline_miou": best,
        "miou_over_best_baseline": seen["model"] / best if best > 0 else math.inf,
        "heldout_baselines": {k: held[k] for k in ("copy_prompt", "all_background", "all_foreground")},
        "heldout_oracle_all_objects_miou": held["oracle_all_objects"],
        "episodes_per_set": opts.episodes,
        "checkpoint": str(opts.checkpoint),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    metrics_csv = out / "csv" / "metrics.csv"
    if metrics_csv.is_file():
        loss_curve(metrics_csv, out / "loss.png")
    print(f"\none-shot mIoU (x100), {opts.episodes} episodes per set")
    print(f"  {'predictor':<20} {'seen categories':>16} {'held-out categories':>20}")
    for name in PREDICTORS:
        print(f"  {name:<20} {seen[name]:16.1f} {held[name]:20.1f}")
    print(f"  model / best baseline: {results['miou_over_best_baseline']:.2f}x   -> {out / 'results.json'}")
    return results


if __name__ == "__main__":
    main()

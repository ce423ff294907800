"""The quickstart's evaluation: does the model segment what the prompt shows? Prompt-swap and one-shot episodes on new
synthetic scenes, against predictors that do not read the prompt.

    seggpt-lab fit --config recipes/quickstart.yaml
    python -m seggpt_lab.quickstart --config recipes/quickstart.yaml [--checkpoint PATH]

Two sets of scenes, each `--scenes` new images of the recipe's world: new scenes of the training categories
(`val`) and scenes whose first object is a held-out shape x texture combination, never seen in training, among
objects of all categories (`heldout`: composition, since a held-out category meets distractors of its own shape
and of its own texture). On each:

- prompt-swap (`datamodules.prompt_swap`, `seggpt_lab.metrics.PromptSwap`): every scene holding two categories is
  segmented twice, each object prompted in turn by another scene that holds it and not the other, and once with
  a prompt of a category it does not hold. Selectivity S (with its bootstrap 95% interval), swap accuracy A, the
  swap-set mIoU beside the category-blind oracle's, and the share of object pixels painted for an absent
  category beside the target recall; S split into same-shape and other-shape distractors.
- one-shot mIoU (HSNet, classes drawn uniformly; held-out classes only on `heldout`) of the model and of
  copy_prompt (the prompt's mask pasted onto the query), all_background, all_foreground and
  oracle_all_objects (every object pixel, whatever its category: a model that finds objects but ignores
  which one the prompt shows).
- colour_match (`seggpt_lab.modules.evaluate.colour_match`) on both: it paints the query's pixels whose colour
  the prompt's target carries most, so it reads the prompt but sees no shape; where colour follows the
  category (`colours: category`) it says how much of the model's prompt-following colour alone gives.

The world is the recipe's: the validation source's generator settings (`data.init_args.val`, with its
`convert` spec) with `--scenes` samples, generated beside it (DIR/eval/<scenes>/synthetic). Writes `results.json`
(`prompt_following`, `miou`, `heldout_categories_miou`, `baselines`, ...), prediction and swap pictures and
the training loss curve.
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
from datamodules.prompt_swap import PromptSwapDataModule
from datamodules.shards import ShardReader
from datamodules.synthetic import CATEGORIES, HELD_OUT
from seggpt_lab.canvas import clean
from seggpt_lab.checkpoint import load_pretrained
from seggpt_lab.metrics import FewShotIoU, PromptSwap
from seggpt_lab.modules.evaluate import blind_swap, colour_match, predict_swap, update_swap
from seggpt_lab.pictures import picture, swap_picture
from seggpt_lab.prediction import predict_labels

PREDICTORS = ("model", "copy_prompt", "colour_match", "all_background", "all_foreground", "oracle_all_objects")
SWAP_PREDICTORS = ("model", "copy_prompt", "colour_match", "oracle_all_objects")
HELD_OUT_IDS = sorted(i for i, name in CATEGORIES.items() if name in HELD_OUT)


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


def evaluation_split(folder: Path, split: str, spec: dict, scenes: int) -> Path:
    """The index of `scenes` scenes of the world `spec` for `split`, generated into DIR/eval/<scenes>/synthetic
    beside the recipe's folder (DIR/synthetic) when missing."""
    spec = {**spec, "samples": scenes}
    target = folder.parent / "eval" / f"{scenes}" / folder.name
    ShardSource(str(target), split=split, convert=spec).ensure_converted()
    return target / f"{split}-index.json"


def episodes(index: Path, count: int, classes: list[int] | None = None, seed: int = 0) -> FewShotEpisodes:
    """`count` one-shot episodes (a class of `classes`, or any, drawn uniformly, then query and prompt)."""
    reader = ShardReader(index)
    plan, _ = plan_episodes(image_classes(reader, classes, min_pixels=16), 1, count, "class_uniform", seed, classes)
    return FewShotEpisodes(reader, plan)


@torch.inference_mode()
def evaluate(model, dataset: FewShotEpisodes, label: str, pictures: Path | None = None, num_pictures: int = 8
             ) -> dict[str, float]:
    """mIoU of every predictor over the episodes of `dataset`."""
    class_ids = sorted({spec.class_id for spec in dataset.plan})
    metrics = {name: FewShotIoU(class_ids=class_ids) for name in PREDICTORS}
    for i in tqdm(range(len(dataset)), desc=f"one-shot {label}", unit="episode"):
        episode, spec = dataset[i], dataset.plan[i]
        truth, prompt = episode["query_label"], clean(episode["prompt_labels"][0])
        sem = torch.from_numpy(dataset.reader.sample(spec.query).sem.astype("int64"))
        preds = {
            "model": predict_labels(model, episode["prompt_images"], [prompt], episode["query_image"], 1, "semantic"),
            "copy_prompt": prompt,
            "colour_match": colour_match(episode["prompt_images"], [prompt], episode["query_image"]),
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


@torch.inference_mode()
def evaluate_swaps(model, index: Path, label: str, class_ids: list[int] | None = None, pictures: Path | None = None,
                   num_pictures: int = 8) -> dict[str, dict[str, float]]:
    """Prompt-swap scores ({predictor: {S, S_low, ..., queries/other_shape}}) of the model, copy_prompt and the
    category-blind oracle on every two-category scene of `index`; mIoU over `class_ids` (default: all targets)."""
    data = PromptSwapDataModule(str(index), groups="name_prefix", group_label="shape")
    data.setup()

    def model_predict(images, labels, image, truth):
        return predict_labels(model, images, [clean(lab) for lab in labels], image, 1, "semantic")

    def copy_prompt(query):
        same = all(p.shape == query["targets"].shape[1:] for p in query["prompt_labels"])
        if not same:
            raise ValueError("copy_prompt needs prompts of the query's size (the synthetic scenes have one size)")
        absent = clean(query["absent_label"]) if "absent_label" in query else None
        return torch.stack([clean(p) for p in query["prompt_labels"]]), absent

    def colour_predict(images, labels, image, truth):
        return colour_match(images, labels, image)

    predictors = {"model": lambda q: predict_swap(model_predict, q), "copy_prompt": copy_prompt,
                  "colour_match": lambda q: predict_swap(colour_predict, q), "oracle_all_objects": blind_swap}
    metrics = {name: PromptSwap(class_ids or data.class_ids, data.kinds) for name in SWAP_PREDICTORS}
    for i in tqdm(range(len(data.dataset)), desc=f"prompt-swap {label}", unit="query"):
        query = data.dataset[i]
        for name, predict in predictors.items():
            preds, absent = predict(query)
            update_swap(metrics[name], query, preds, absent)
            if name == "model" and pictures is not None and i < num_pictures:
                pictures.mkdir(parents=True, exist_ok=True)
                swap_picture(query, preds).save(pictures / f"swap-{label}-{i:03d}.png")
    return {name: {k: float(v) for k, v in m.compute().items()} for name, m in metrics.items()}


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
    parser.add_argument("--episodes", type=int, default=300, help="one-shot episodes per set")
    parser.add_argument("--scenes", type=int, default=1000, help="new scenes per set (prompt-swap uses every "
                        "two-category one)")
    opts = parser.parse_args(argv)
    folder, spec = world(opts.config)
    out = Path(opts.output)
    model = load_pretrained(opts.checkpoint).eval()
    scores, swaps = {}, {}
    for split, classes in (("val", None), ("heldout", HELD_OUT_IDS)):
        index = evaluation_split(folder, split, spec, opts.scenes)
        swaps[split] = evaluate_swaps(model, index, split, classes, out / "pictures")
        scores[split] = evaluate(model, episodes(index, opts.episodes, classes), split, out / "pictures")
    seen, held = scores["val"], scores["heldout"]
    baselines = {k: seen[k] for k in ("copy_prompt", "all_background", "all_foreground")}
    best = max(baselines.values())
    results = {
        "prompt_following": {"seen": swaps["val"]["model"], "heldout": swaps["heldout"]["model"]},
        "prompt_following_baselines": {name: {"seen": swaps["val"][name], "heldout": swaps["heldout"][name]}
                                       for name in SWAP_PREDICTORS[1:]},
        "miou": seen["model"],
        "heldout_categories_miou": held["model"],
        "baselines": baselines,
        "oracle_all_objects_miou": seen["oracle_all_objects"],
        "colour_match_miou": seen["colour_match"],
        "best_baseline_miou": best,
        "miou_over_best_baseline": seen["model"] / best if best > 0 else math.inf,
        "heldout_baselines": {k: held[k] for k in ("copy_prompt", "all_background", "all_foreground")},
        "heldout_oracle_all_objects_miou": held["oracle_all_objects"],
        "heldout_colour_match_miou": held["colour_match"],
        "episodes_per_set": opts.episodes,
        "scenes_per_set": opts.scenes,
        "checkpoint": str(opts.checkpoint),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    metrics_csv = out / "csv" / "metrics.csv"
    if metrics_csv.is_file():
        loss_curve(metrics_csv, out / "loss.png")
    print(table(swaps, scores, opts.episodes))
    print(f"  model / best baseline: {results['miou_over_best_baseline']:.2f}x   -> {out / 'results.json'}")
    return results


def table(swaps: dict[str, dict[str, dict[str, float]]], scores: dict[str, dict[str, float]], episodes: int) -> str:
    """The printed summary: prompt-following first, then the one-shot mIoU of every predictor."""
    seen, held = swaps["val"], swaps["heldout"]
    lines = [f"\nprompt-following: prompt-swap queries ({seen['model']['queries']:.0f} seen, "
             f"{held['model']['queries']:.0f} held-out), x100",
             f"  {'':<34} {'seen categories':>22} {'held-out categories':>22}"]

    def row(name: str, fmt) -> None:
        lines.append(f"  {name:<34} {fmt(seen):>22} {fmt(held):>22}")

    row("S (selectivity) [95% interval]", lambda r: f"{r['model']['S']:.1f} [{r['model']['S_low']:.1f}, "
                                                    f"{r['model']['S_high']:.1f}]")
    row("A (both roles right, %)", lambda r: f"{r['model']['A']:.0f}")
    row("S same-shape / other-shape", lambda r: f"{r['model']['S/same_shape']:.1f} / {r['model']['S/other_shape']:.1f}")
    row("absent prompt painted / recall", lambda r: f"{r['model']['absent_painted']:.0f} / {r['model']['recall']:.0f}")
    row("swap-set mIoU: model / blind oracle",
        lambda r: f"{r['model']['mIoU']:.1f} / {r['oracle_all_objects']['mIoU']:.1f}")
    for name in SWAP_PREDICTORS[1:3]:
        row(f"{name}: S / A", lambda r, n=name: f"{r[n]['S']:.1f} / {r[n]['A']:.0f}")
    lines += [f"\none-shot mIoU (x100), {episodes} episodes per set",
              f"  {'predictor':<20} {'seen categories':>16} {'held-out categories':>20}"]
    lines += [f"  {name:<20} {scores['val'][name]:16.1f} {scores['heldout'][name]:20.1f}" for name in PREDICTORS]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

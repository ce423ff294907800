"""Does the model segment what the prompt shows? Prompt-swap and one-shot scores on named shard sets
(`datamodules.prompt_following`), for the model and reference predictors (`seggpt_lab.references`) on the same items.

    seggpt-lab test --config recipes/eval_quickstart.yaml

results.json holds per set `prompt_following.<predictor>` (`PromptSwap`'s figures), `one_shot_miou.<predictor>`
(HSNet's) and `miou_over_best_trivial`: the model's one-shot mIoU over the best of the `TRIVIAL` references.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from seggpt_lab.canvas import Episode, SwapQuery
from seggpt_lab.metrics import FewShotIoU, PromptSwap
from seggpt_lab.model import SegGPT
from seggpt_lab.modules.contracts import PromptFollowingData, require
from seggpt_lab.modules.evaluate import Evaluation, PredictorName, episode_row, predict_swap, swap_rows, update_swap
from seggpt_lab.palette import fixed_color
from seggpt_lab.pictures import episode_picture, swap_picture
from seggpt_lab.prediction import Ensemble
from seggpt_lab.references import ReferenceName

TRIVIAL = ("copy_prompt", "empty", "full")  # baselines that read no more of the prompt than its mask
SHOWN = ("copy_prompt", "colour")  # references whose swap S / A the printed table shows


def metric_name(set_name: str, predictor: str, first: str, figure: str) -> str:
    """The logged name of a figure: test/<set>/<figure> for the evaluated predictor, test/<set>/<reference>/..."""
    return f"test/{set_name}" + ("" if predictor == first else f"/{predictor}") + f"/{figure}"


class PromptFollowingEvaluation(Evaluation):
    """Prompt-swap and one-shot scores of the model and of reference predictors, per shard set (module docstring).

    Args:
        references: reference predictors scored beside `predictor` on the same items.
        bootstrap: resamples for the interval of S.
        prompt_colors: the colour of the model's prompt masks: "white" (one colour for any prompt, as in inference)
            or "fixed" (each category its `palette.fixed_color`, as a model trained with fixed colours expects);
            the prediction is decoded over black and that colour. README, "Ablations".
        model, checkpoint, predictor, ensemble, seg_type, output_dir, num_pictures: see `Evaluation`
            (`num_pictures` per set and part).
    """

    def __init__(self, model: SegGPT | None = None, checkpoint: str | None = None, predictor: PredictorName = "model",
                 ensemble: Ensemble = "feature", seg_type: Literal["semantic", "instance"] = "semantic",
                 output_dir: str = "outputs/eval", num_pictures: int = 8,
                 references: list[ReferenceName] | None = None, bootstrap: int = 1000,
                 prompt_colors: Literal["white", "fixed"] = "white") -> None:
        super().__init__(model, checkpoint, predictor, ensemble, seg_type, output_dir, num_pictures)
        refs = list(references or [])
        if prompt_colors not in ("white", "fixed"):
            raise ValueError(f"model.prompt_colors must be 'white' or 'fixed', got {prompt_colors!r}")
        if predictor in refs or len(set(refs)) != len(refs):
            raise ValueError(f"model.references: list each reference once, apart from the predictor; got {refs}")
        self.predictors = [predictor, *refs]
        self.swap_rows: list[dict] = []

    @classmethod
    def logged_metrics(cls, init_args: dict, config: dict) -> list[str]:
        """The names `on_test_epoch_end` logs for this configuration (`seggpt_lab.cli.logged_metrics`)."""
        first = init_args.get("predictor", "model")
        predictors = [first, *(init_args.get("references") or [])]
        sets = [s["name"] for s in config["data"]["init_args"]["sets"]]
        figures = (*PromptSwap.FIGURES, "one_shot_mIoU")
        return [metric_name(s, p, first, k) for s in sets for p in predictors for k in figures]

    def palette(self, class_id: int) -> torch.Tensor | None:
        """The model's palette for a prompt of `class_id`: None (white, `build_palette(1)`) unless "fixed"."""
        if self.hparams.prompt_colors == "white":
            return None
        return torch.tensor([(0, 0, 0), fixed_color(class_id)], dtype=torch.uint8)

    def setup(self, stage: str) -> None:
        data = require(self, PromptFollowingData)
        self.parts = list(data.parts)
        self.kinds = list(data.kinds)
        self.metrics = nn.ModuleDict()  # "<set>|<part>|<predictor>": one metric each, moved with the module
        for name, part in self.parts:
            classes = data.class_ids[name][part]
            for p in self.predictors:
                self.metrics[f"{name}|{part}|{p}"] = (PromptSwap(classes, self.kinds, self.hparams.bootstrap)
                                                      if part == "swap" else FewShotIoU(class_ids=classes))

    def test_step(self, item: SwapQuery | Episode, index: int, dataloader_idx: int = 0) -> None:
        name, part = self.parts[dataloader_idx]
        if part == "swap":
            self._swap(name, item, index)
        else:
            self._one_shot(name, item, index)

    def _swap(self, name: str, query: SwapQuery, index: int) -> None:
        for p in self.predictors:
            preds, absent = predict_swap(lambda *a, p=p: self.predict_one(
                *a[:4], num_labels=1, predictor=p, all_objects=query["all_objects"], palette=self.palette(a[4])), query)
            update_swap(self.metrics[f"{name}|swap|{p}"], query, preds, absent)
            if p == self.predictors[0]:
                model_preds, model_absent = preds, absent
        self.swap_rows += [{"set": name, **row} for row in swap_rows(query, model_preds, model_absent)]
        if index < self.hparams.num_pictures:
            self.save_picture(f"swap-{name}-{index:03d}", swap_picture(query, model_preds))

    def _one_shot(self, name: str, episode: Episode, index: int) -> None:
        truth = episode["query_label"]
        class_id = torch.tensor([episode["class_id"]], device=truth.device)
        for p in self.predictors:
            pred = self.predict_one(episode["prompt_images"], episode["prompt_labels"], episode["query_image"], truth,
                                    1, predictor=p, all_objects=episode["all_objects"],
                                    palette=self.palette(episode["class_id"]))
            self.metrics[f"{name}|one_shot|{p}"].update(pred[None], truth[None], class_id)
            if p == self.predictors[0]:
                model_pred = pred
        self.rows.append({"set": name, **episode_row(episode, index, model_pred)})
        if index < self.hparams.num_pictures:
            self.save_picture(f"{name}-{index:03d}", episode_picture(episode, model_pred))

    def on_test_epoch_end(self) -> None:
        sets: dict[str, dict] = {}
        for name, part in self.parts:
            scores = {p: {k: float(v) for k, v in self.metrics[f"{name}|{part}|{p}"].compute().items()}
                      for p in self.predictors}
            entry = sets.setdefault(name, {})
            if part == "swap":
                entry["prompt_following"] = scores
            else:
                entry["one_shot_miou"] = {p: s["mIoU"] for p, s in scores.items()}
                trivial = [entry["one_shot_miou"][p] for p in TRIVIAL if p in entry["one_shot_miou"]]
                if trivial:
                    best = max(trivial)
                    model = entry["one_shot_miou"][self.predictors[0]]
                    entry["miou_over_best_trivial"] = model / best if best else None
        # straight to the loggers: self.log would repeat every figure under each test loader
        flat = {metric_name(name, p, self.predictors[0], k): v for name, entry in sets.items()
                for p, figures in entry["prompt_following"].items() for k, v in figures.items() if "/" not in k}
        flat.update({metric_name(name, p, self.predictors[0], "one_shot_mIoU"): v
                     for name, entry in sets.items() for p, v in entry["one_shot_miou"].items()})
        for logger in self.loggers:
            logger.log_metrics(flat)
        self.write_rows(self.swap_rows, "swap_episodes")
        self.write_rows(self.rows, "one_shot_episodes")
        self.write_results({"references": self.predictors[1:], "sets": sets}, flat)
        if self.global_rank == 0:
            print(self.table(sets))

    def table(self, sets: dict[str, dict]) -> str:
        """The printed summary: prompt-following first, then the one-shot mIoU of every predictor."""
        names, first = list(sets), self.predictors[0]
        width = max(22, *(len(n) + 2 for n in names))
        swaps = {n: sets[n]["prompt_following"] for n in names}
        queries = ", ".join(f"{swaps[n][first]['queries']:.0f} {n}" for n in names)
        lines = [f"\nprompt-following: prompt-swap queries ({queries}), x100",
                 f"  {'':<34}" + "".join(f"{n:>{width}}" for n in names)]

        def row(label: str, fmt) -> None:
            lines.append(f"  {label:<34}" + "".join(f"{fmt(swaps[n]):>{width}}" for n in names))

        row("S (selectivity) [95% interval]", lambda r: f"{r[first]['S']:.1f} [{r[first]['S_low']:.1f}, "
                                                        f"{r[first]['S_high']:.1f}]")
        row("A (both roles right, %)", lambda r: f"{r[first]['A']:.0f}")
        if len(self.kinds) > 1:
            row("S " + " / ".join(k.replace("_", "-") for k in self.kinds),
                lambda r: " / ".join(f"{r[first][f'S/{k}']:.1f}" for k in self.kinds))
        row("absent prompt painted / recall", lambda r: f"{r[first]['absent_painted']:.0f} / {r[first]['recall']:.0f}")
        if "all_objects" in self.predictors:
            row("swap-set mIoU: model / blind oracle",
                lambda r: f"{r[first]['mIoU']:.1f} / {r['all_objects']['mIoU']:.1f}")
        for p in (p for p in SHOWN if p in self.predictors):
            row(f"{p}: S / A", lambda r, p=p: f"{r[p]['S']:.1f} / {r[p]['A']:.0f}")
        lines += ["\none-shot mIoU (x100)", f"  {'predictor':<20}" + "".join(f"{n:>{width}}" for n in names)]
        lines += [f"  {p:<20}" + "".join(f"{sets[n]['one_shot_miou'][p]:>{width}.1f}" for n in names)
                  for p in self.predictors]
        ratios = [f"{sets[n]['miou_over_best_trivial']:.2f}x ({n})" for n in names
                  if sets[n].get("miou_over_best_trivial") is not None]
        if ratios:
            lines.append(f"  {first} / best trivial baseline: {', '.join(ratios)}")
        lines.append(f"  -> {self.output_dir / 'results.json'}")
        return "\n".join(lines)

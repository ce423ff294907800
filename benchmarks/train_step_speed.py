"""Training step of the tiny preset (recipes/quickstart.yaml's model) on CPU: pairs/s and where the time goes.

The step is `PretrainModule`'s, outside Lightning: `model_inputs` (uint8 canvases -> normalised floats),
the forward pass, `masked_smooth_l1` with the module's `loss_weights`, backward and AdamW. The batches are
random canvases of the recipe's shape with Painter patch masks (the step's cost does not depend on the
pictures). Prints the median step time and pairs/s, the profile of the step's operators by self time, and
the number of operators one step launches at two batch sizes: equal counts mean no per-sample Python
work inside the step (issue 7, target 2).

    python benchmarks/train_step_speed.py [--steps 30] [--batch-size 16] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.profiler import ProfilerActivity, profile

from datamodules.masking import painter_mask
from seggpt_lab.canvas import InContextBatch, model_inputs
from seggpt_lab.model import SegGPT, masked_smooth_l1
from seggpt_lab.modules.pretrain import PretrainModule

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"


def tiny_preset() -> PretrainModule:
    config = yaml.safe_load(RECIPE.read_text())["model"]["init_args"]
    model = SegGPT(**config.pop("model")["init_args"])
    return PretrainModule(model, **config)


def random_batch(model: SegGPT, size: int, rng: np.random.Generator) -> InContextBatch:
    height, width = model.config["img_size"]
    grid = (height // model.patch_size, width // model.patch_size)
    return InContextBatch(
        image_canvas=torch.from_numpy(rng.integers(0, 256, (size, 3, height, width), dtype=np.uint8)),
        target_canvas=torch.from_numpy(rng.integers(0, 2, (size, 3, height, width), dtype=np.uint8) * 255),
        valid=torch.ones(size, 1, height, width),
        bool_masked_pos=torch.from_numpy(np.stack([painter_mask(grid, rng) for _ in range(size)])),
        seg_type=torch.zeros(size, dtype=torch.long),
    )


def make_step(module: PretrainModule):
    model, hp = module.model, module.hparams
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)

    def step(batch: InContextBatch) -> None:
        image, target = model_inputs(batch)
        pred = model(image, target, batch["bool_masked_pos"], batch["seg_type"])
        loss = masked_smooth_l1(pred, target, batch["bool_masked_pos"], model.patch_size, module.loss_weights(batch),
                                hp.loss_beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def operators(step, batch: InContextBatch) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(batch)
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    module = tiny_preset().train()
    step = make_step(module)
    batch = random_batch(module.model, args.batch_size, rng)
    for _ in range(3):  # warm-up: allocator, AdamW state
        step(batch)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    params = sum(p.numel() for p in module.model.parameters())
    print(f"tiny preset: {params / 1e6:.2f}M parameters, canvases {tuple(module.model.config['img_size'])}, "
          f"batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"step {median * 1000:.0f} ms (median of {args.steps}), {args.batch_size / median:.0f} pairs/s")

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            step(batch)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))

    counts = {size: operators(step, random_batch(module.model, size, rng)) for size in (args.batch_size // 2,
                                                                                        args.batch_size * 2)}
    verdict = "equal: no per-sample work" if len(set(counts.values())) == 1 else "DIFFERENT: per-sample work"
    print("operators per step: " + ", ".join(f"batch {b}: {n}" for b, n in counts.items()) + f" ({verdict})")


if __name__ == "__main__":
    main()

"""SegGPT ViT-L forward speed on this machine: ours against transformers, and against the matmul roofline.

One prompt/query pair, float32, inference mode, the same random weights and input for both
implementations; repeats are interleaved (ours, theirs, ours, ...) and medians compared, so drifting
machine load affects both alike. Achieved GFLOP/s counts the multiply-adds of every matrix product,
attention product and convolution of our forward pass (`torch.utils.flop_counter`) over our median
time; the roofline is a 4096^3 float32 matrix product timed in the same run. Last, a feature ensemble
of 4 prompts for one query (one batch of 4 pairs, features averaged) against the single pair, also
interleaved. Targets (issue 7, target 1): ours <= 0.75x transformers, >= 60% of the matmul rate,
the 4-prompt ensemble <= 4.2x one prompt.

    python benchmarks/model_speed.py [--repeats 5] [--ensemble-repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import SegGptConfig, SegGptForImageSegmentation

from seggpt_lab.checkpoint import config_to_hf, hf_key_map
from seggpt_lab.model import seggpt_vit_large


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_gflops(n: int = 4096, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n**3 / statistics.median(timed(lambda: a @ b) for _ in range(repeats)) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ensemble-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ours = seggpt_vit_large().eval()
    theirs = SegGptForImageSegmentation(SegGptConfig(**config_to_hf(ours.config))).eval()
    mapping = hf_key_map(list(ours.state_dict()))
    theirs.load_state_dict({mapping[k]: v for k, v in ours.state_dict().items()})

    prompt, query, mask = torch.randn(1, 3, 448, 448), torch.randn(1, 3, 448, 448), torch.randn(1, 3, 448, 448)
    image_canvas, target_canvas = torch.cat([prompt, query], 2), torch.cat([mask, mask], 2)
    bool_masked_pos, seg_type = ours.query_mask(1), torch.ones(1, dtype=torch.long)

    def run_ours():
        return ours(image_canvas, target_canvas, bool_masked_pos, seg_type)

    def run_theirs():
        return theirs(pixel_values=query, prompt_pixel_values=prompt, prompt_masks=mask).pred_masks

    with torch.inference_mode():
        diff = (run_ours() - run_theirs()).abs().max().item()  # also the warm-up
        # counted on the unfused reference path: the counter does not see inside the fused CPU kernel
        ours.set_attn_impl("eager")
        with FlopCounterMode(display=False) as counter:
            run_ours()
        ours.set_attn_impl("sdpa")
        flops = counter.get_total_flops()
        t_ours, t_theirs = [], []
        for _ in range(args.repeats):
            t_ours.append(timed(run_ours))
            t_theirs.append(timed(run_theirs))
        peak = matmul_gflops()
        ours_s, theirs_s = statistics.median(t_ours), statistics.median(t_theirs)
        achieved = flops / ours_s / 1e9
        print(f"threads {torch.get_num_threads()}, repeats {args.repeats}, max |ours - transformers| {diff:.2e}")
        print(f"ours         forward  {ours_s:7.3f} s (median)")
        print(f"transformers forward  {theirs_s:7.3f} s (median)")
        print(f"ratio ours / transformers  {ours_s / theirs_s:.3f}   (target <= 0.75)")
        print(f"forward work {flops / 1e9:.0f} GFLOP; ours achieves {achieved:.1f} GFLOP/s; "
              f"4096^3 matmul {peak:.1f} GFLOP/s; fraction {achieved / peak:.1%}   (target >= 60%)")

        k = 4  # prompts of one query: the feature ensemble's batch
        images, targets = image_canvas.expand(k, -1, -1, -1), target_canvas.expand(k, -1, -1, -1)
        masked, types = ours.query_mask(k), seg_type.expand(k)

        def run_ensemble():
            return ours(images, targets, masked, types, feature_ensemble=True)

        run_ensemble()  # warm-up
        t_single, t_ensemble = [], []
        for _ in range(args.ensemble_repeats):
            t_single.append(timed(run_ours))
            t_ensemble.append(timed(run_ensemble))
        single_s, ensemble_s = statistics.median(t_single), statistics.median(t_ensemble)
        print(f"feature ensemble of {k} prompts {ensemble_s:7.3f} s, one prompt {single_s:7.3f} s: "
              f"{ensemble_s / single_s:.2f}x   (target <= 4.2x)")


if __name__ == "__main__":
    main()

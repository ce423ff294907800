"""GPU: SegGPT-L training step in bf16 at the paper's 896x448 canvas, and inference queries/s (issue 7, target 5).

Stages, in order of importance, each skipped once the time budget (--budget seconds) is spent:

1. The ceilings: a dense bf16 matrix product (8192^3, random data) in TFLOP/s; the model's FLOPs per pair,
   counted by `torch.utils.flop_counter` on the explicit ("eager") attention path, forward and backward.
2. Attention alone, one ViT-L layer's shapes (1568 tokens, 16 heads of 64): each way to add the decomposed
   relative-position bias (`RelPosAttention.attn_impl`) against the fp32 explicit reference (relative error
   of the output and of the gradients) and timed forward + backward; a bias-free flash call is the floor, and
   the fused "triton" kernel alone on the same q, k, v is timed beside it (the target: within 2x), for each
   of its tilings; the fastest tiling is kept for the stages after.
3. The training step of `PretrainModule` outside Lightning: uint8 canvases normalised on the GPU, forward under
   bf16 autocast (Lightning's `bf16-mixed`), masked smooth-l1, backward, AdamW; per `attn_impl`, eager and with
   regional `torch.compile` (each block compiled; the 24 blocks share one compiled graph). MFU is the model's
   FLOPs (recomputation not counted) per second over the measured matmul rate. Then batch sizes with and without
   activation checkpointing (peak memory each), and fused against foreach AdamW.
4. Inference (eval mode, bf16): queries/s with one prompt per query, and with 8-prompt feature ensembles of
   one query (the video setting: 8 frames as prompts).

Prints one line per measurement as it goes and a summary last; --out writes every number as JSON.

    python benchmarks/gpu_train_speed.py [--budget 420] [--out results.json]
    python benchmarks/gpu_train_speed.py --smoke   # tiny shapes on CPU: checks the script, measures nothing
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import traceback
from contextlib import nullcontext

import torch
import torch._dynamo
import torch.nn.functional as F
from torch.nn.attention import SDPBackend
from torch.utils.flop_counter import FlopCounterMode

import seggpt_lab.model as model_module
import seggpt_lab.relpos_attention as fused_module
from seggpt_lab.canvas import InContextBatch, model_inputs
from seggpt_lab.model import ATTN_IMPLS, RelPosAttention, SegGPT, masked_smooth_l1
from seggpt_lab.relpos_attention import interpreting, relpos_attention

RESULTS: dict = {}
OUT: list[str] = []  # the --out path, rewritten after every measurement so that a killed run keeps its numbers


def log(key: str, value, text: str) -> None:
    RESULTS[key] = value
    print(text, flush=True)
    for path in OUT:
        with open(path, "w") as f:
            json.dump(RESULTS, f, indent=1, default=str)


class Clock:
    def __init__(self, device: torch.device, budget: float) -> None:
        self.device, self.end = device, time.monotonic() + budget

    def left(self) -> float:
        return self.end - time.monotonic()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def time(self, fn, warmup: int, repeats: int) -> float:
        """Median seconds per call (CUDA events on the GPU)."""
        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        for _ in range(repeats):
            if self.device.type == "cuda":
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop) / 1000)
            else:
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        return statistics.median(times)


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


def autocast(device: torch.device):
    return torch.autocast(device.type, torch.bfloat16)


def build(config: dict, device: torch.device, impl: str, **overrides) -> SegGPT:
    torch.manual_seed(0)
    with device:
        model = SegGPT(**{**config, **overrides, "attn_impl": impl})
    return model


def batch(model: SegGPT, size: int, device: torch.device, seed: int = 0) -> InContextBatch:
    g = torch.Generator(device).manual_seed(seed)
    H, W = model.img_size
    return InContextBatch(
        image_canvas=torch.randint(0, 256, (size, 3, H, W), generator=g, device=device, dtype=torch.uint8),
        target_canvas=torch.randint(0, 2, (size, 3, H, W), generator=g, device=device, dtype=torch.uint8) * 255,
        valid=torch.ones(size, 1, H, W, device=device, dtype=torch.uint8),
        bool_masked_pos=model.query_mask(size, device), seg_type=torch.zeros(size, dtype=torch.long, device=device))


def train_step(model: SegGPT, device: torch.device, fused: bool = True):
    """PretrainModule.training_step + Lightning's bf16-mixed autocast + AdamW (fused on CUDA, as the module)."""
    kind = {"fused": True} if fused else {"foreach": True}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, **kind)

    def step(b: InContextBatch) -> None:
        with autocast(device):
            image, target = model_inputs(b)
            pred = model(image, target, b["bool_masked_pos"], b["seg_type"])
            loss = masked_smooth_l1(pred, target, b["bool_masked_pos"], model.patch_size, b["valid"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, optimizer


def matmul_rate(clock: Clock, device: torch.device, n: int) -> float:
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    seconds = clock.time(lambda: a @ b, warmup=3, repeats=10)
    return 2 * n**3 / seconds


def count_flops(config: dict, device: torch.device) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs of one pair, explicit attention so every product is visible."""
    model = build(config, device, "eager").train()
    b = batch(model, 1, device)
    with FlopCounterMode(display=False) as forward:
        with autocast(device):
            pred = model(*model_inputs(b), b["bool_masked_pos"], b["seg_type"])
    with FlopCounterMode(display=False) as backward:
        pred.float().square().mean().backward()
    f, bw = forward.get_total_flops(), backward.get_total_flops()
    del model, pred
    free()
    return f, f + bw


def attention_layer(config: dict, device: torch.device) -> tuple[RelPosAttention, tuple[int, int, int]]:
    """One attention layer of the model's shapes, with a bias that matters; and the (h, w, C) of its input."""
    h, w = config["img_size"][0] // config["patch_size"], config["img_size"][1] // config["patch_size"]
    torch.manual_seed(0)
    layer = RelPosAttention(config["embed_dim"], num_heads=config["num_heads"], qkv_bias=True, use_rel_pos=True,
                            input_size=(h, w)).to(device)
    with torch.no_grad():
        layer.rel_pos_h.normal_(0, 0.5), layer.rel_pos_w.normal_(0, 0.5)
    return layer, (h, w, config["embed_dim"])


def time_layer(clock: Clock, device: torch.device, layer: RelPosAttention, xs: torch.Tensor) -> float:
    """Median seconds of the layer's forward and backward under bf16 autocast."""
    def fwd_bwd():
        with autocast(device):
            layer(xs).float().sum().backward()
    return clock.time(fwd_bwd, 2, 5)


def attention_stage(clock: Clock, device: torch.device, config: dict, canvases: int, impls: list[str]) -> None:
    """One layer's attention at the model's shapes: accuracy against fp32 eager, and fwd+bwd time per impl."""
    layer, (h, w, C) = attention_layer(config, device)
    heads = config["num_heads"]
    x = torch.randn(2, h, w, C, device=device)
    probe = torch.randn(2, h, w, C, device=device)

    def run(impl: str, amp: bool, inputs: torch.Tensor):
        layer.attn_impl = impl
        inputs = inputs.detach().requires_grad_()
        layer.zero_grad(set_to_none=True)
        with autocast(device) if amp else nullcontext():
            out = layer(inputs)
        (out.float() * probe[: out.shape[0]]).sum().backward()
        return out.float(), inputs.grad, layer.rel_pos_h.grad, layer.qkv.weight.grad

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    reference = run("eager", False, x)
    impls = [i for i in ATTN_IMPLS if i in impls or i == "eager"]
    for impl in impls:
        for amp in (False, True):
            if impl == "flex" and device.type == "cpu":
                continue  # FlexAttention has no backward on CPU
            try:
                got = run(impl, amp, x)
                errors = [((a - b).norm() / b.norm()).item() for a, b in zip(got, reference, strict=True)]
                log(f"attention/error/{impl}/{'bf16' if amp else 'fp32'}", errors,
                    f"attention {impl:9s} {'bf16' if amp else 'fp32'}: relative error out {errors[0]:.1e}, "
                    f"grad x {errors[1]:.1e}, grad rel_pos_h {errors[2]:.1e}, grad qkv {errors[3]:.1e}")
            except Exception as error:  # noqa: BLE001 - a failing contender is reported, the run goes on
                log(f"attention/error/{impl}", repr(error), f"attention {impl}: FAILED {error!r}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    xs = torch.randn(canvases, h, w, C, device=device)
    q = torch.randn(canvases, heads, h * w, C // heads, device=device, dtype=torch.bfloat16, requires_grad=True)
    flash = clock.time(lambda: F.scaled_dot_product_attention(q, q, q).sum().backward(), 2, 5)
    log("attention/ms/bias-free sdpa", flash * 1e3, f"attention fwd+bwd, {canvases} canvases: "
        f"bias-free sdpa {flash * 1e3:7.2f} ms (the floor: no bias at all)")
    if "triton" in impls:
        fused_tilings_stage(clock, q, h, w, flash)
    for impl in impls:
        if impl == "flex" and device.type == "cpu":
            continue
        layer.attn_impl = impl
        try:
            free()
            seconds = time_layer(clock, device, layer, xs)
            log(f"attention/ms/{impl}", seconds * 1e3, f"attention fwd+bwd, {canvases} canvases: {impl:9s} "
                f"{seconds * 1e3:7.2f} ms (layer incl. qkv/proj), peak {peak_gib():.1f} GiB")
        except Exception as error:  # noqa: BLE001
            log(f"attention/ms/{impl}", repr(error), f"attention {impl}: FAILED {error!r}")


def fused_tilings_stage(clock: Clock, q: torch.Tensor, h: int, w: int, floor: float) -> None:
    """The fused kernel alone (no qkv/proj) on the floor's q, k, v and two bias tables, forward + backward, per
    tiling (queries per program, keys per tile, warps); the fastest stays set in `seggpt_lab.relpos_attention`."""
    tables = [torch.randn(*q.shape[:3], s, device=q.device, dtype=q.dtype, requires_grad=True) for s in (h, w)]
    scale = q.shape[-1] ** -0.5
    tilings = [(64, 64, 4), (128, 64, 8), (64, 128, 4), (128, 128, 8), (64, 32, 4), (128, 32, 4)]
    times = {}
    for tiling in tilings if q.device.type == "cuda" else tilings[:1]:
        fused_module.BLOCK_M, fused_module.KEYS_PER_TILE, fused_module.NUM_WARPS = tiling
        try:
            times[tiling] = clock.time(lambda: relpos_attention(q, q, q, *tables, scale).sum().backward(), 2, 5)
        except Exception as error:  # noqa: BLE001 - a tiling that does not fit (shared memory) is reported
            log(f"attention/fused/{tiling}", repr(error).splitlines()[0][:200], f"fused kernel {tiling}: FAILED")
            continue
        log(f"attention/fused/{tiling}", times[tiling] * 1e3, f"attention fwd+bwd, fused kernel alone, "
            f"queries/keys/warps {tiling}: {times[tiling] * 1e3:7.2f} ms, {times[tiling] / floor:.2f}x the floor")
    if times:
        best = min(times, key=times.get)
        fused_module.BLOCK_M, fused_module.KEYS_PER_TILE, fused_module.NUM_WARPS = best
        log("attention/fused/best", {"tiling": best, "ms": times[best] * 1e3, "x_floor": times[best] / floor},
            f"fused kernel: best tiling {best}, {times[best] / floor:.2f}x the bias-free floor (target <= 2x)")


def augmented_kernels_stage(clock: Clock, device: torch.device, config: dict, canvases: int) -> None:
    """attn_impl="augmented": each bias-free kernel, values padded to the logits' head dim or not; the fastest
    that is accurate becomes the model's choice for the rest of the run (seggpt_lab.model.AUGMENTED_*)."""
    layer, (h, w, C) = attention_layer(config, device)
    xs = torch.randn(canvases, h, w, C, device=device)
    with torch.no_grad(), autocast(device):
        layer.attn_impl = "eager"
        reference = layer(xs[:2]).float()
    layer.attn_impl = "augmented"
    timings = {}
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
        for pad in (True, False):
            model_module.AUGMENTED_BACKENDS, model_module.AUGMENTED_PAD_VALUES = [backend], pad
            name = f"{backend.name.lower()}, values {'padded' if pad else 'of 64'}"
            try:
                with torch.no_grad(), autocast(device):
                    error = ((layer(xs[:2]).float() - reference).norm() / reference.norm()).item()
                seconds = time_layer(clock, device, layer, xs)
                if error < 0.05:
                    timings[(backend, pad)] = seconds
                log(f"kernels/{name}", {"ms": seconds * 1e3, "error": error}, f"augmented with {name:32s} "
                    f"fwd+bwd {seconds * 1e3:7.2f} ms, relative error vs bf16 eager {error:.1e}")
            except Exception as error:  # noqa: BLE001 - a kernel that refuses these shapes is reported
                log(f"kernels/{name}", repr(error).splitlines()[0][:200], f"augmented with {name:32s} unavailable")
    if timings:
        (backend, pad) = min(timings, key=timings.get)
        rest = [b for b in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                            SDPBackend.MATH) if b != backend]
        model_module.AUGMENTED_BACKENDS, model_module.AUGMENTED_PAD_VALUES = [backend, *rest], pad
        log("kernels/chosen", {"backend": backend.name, "pad_values": pad},
            f"augmented uses {backend.name} first, values {'padded' if pad else 'unpadded'}")


def train_stage(clock: Clock, device: torch.device, config: dict, impl: str, size: int, compiled: bool = False,
                checkpointing: bool = False, fused: bool = True, steps: int = 6) -> float | None:
    """Median step seconds for one configuration; logs pairs/s, tokens/s, MFU and peak memory."""
    name = f"train/{impl}/{'compiled' if compiled else 'eager'}/b{size}" + ("/ckpt" if checkpointing else "") + (
        "" if fused else "/foreach")
    try:
        free()
        model = build(config, device, impl, grad_checkpointing=checkpointing).train()
        if compiled:
            model.compile_blocks(dynamic=False)  # regional: the 24 blocks share one graph per shape
        step, _ = train_step(model, device, fused)
        b = batch(model, size, device)
        start = time.monotonic()
        step(b)  # compilation, if any, and the allocator's first pass
        clock.sync()
        first = time.monotonic() - start
        seconds = clock.time(lambda: step(b), warmup=1, repeats=steps)
        pairs = size / seconds
        mfu = pairs * RESULTS.get("flops/train_per_pair", float("nan")) / RESULTS.get("matmul/flops", float("nan"))
        tokens = pairs * model.num_patches
        log(name, {"step_s": seconds, "pairs_s": pairs, "tokens_s": tokens, "mfu": mfu, "peak_gib": peak_gib(),
                   "first_step_s": first},
            f"{name:42s} step {seconds * 1e3:8.1f} ms  {pairs:7.1f} pairs/s  {tokens / 1e3:7.1f}k tokens/s  "
            f"MFU {mfu:6.1%}  peak {peak_gib():6.1f} GiB  (first step {first:.0f} s)")
        return seconds
    except torch.cuda.OutOfMemoryError:
        log(name, "out of memory", f"{name:42s} out of memory")
    except Exception as error:  # noqa: BLE001
        traceback.print_exc()
        log(name, repr(error), f"{name:42s} FAILED {error!r}")
    finally:
        model = step = b = None  # noqa: F841 - release before the next configuration
        free()
    return None


def inference_stage(clock: Clock, device: torch.device, config: dict, impl: str, sizes: tuple[int, ...]) -> None:
    free()
    model = build(config, device, impl).eval()
    for size, prompts in [(s, 1) for s in sizes] + [(1, 8)]:
        b = batch(model, size * prompts, device)
        image, target = model_inputs(b)

        def forward(image=image, target=target, b=b, prompts=prompts):
            with torch.inference_mode(), autocast(device):
                model(image, target, b["bool_masked_pos"], b["seg_type"], feature_ensemble=prompts > 1)

        seconds = clock.time(forward, 2, 5)
        what = f"{size} queries x 1 prompt" if prompts == 1 else f"1 query x {prompts}-prompt feature ensemble"
        log(f"inference/{impl}/{size}x{prompts}", {"s": seconds, "queries_s": size / seconds},
            f"inference {impl:9s} {what:34s} {seconds * 1e3:8.1f} ms  {size / seconds:7.1f} queries/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=420, help="seconds; later stages are skipped after it")
    parser.add_argument("--batch", type=int, default=16, help="batch of the attention-impl comparison")
    parser.add_argument("--sweep", type=int, nargs="*", default=[32, 64], help="further batches, eager")
    parser.add_argument("--ckpt-sweep", type=int, nargs="*", default=[64, 128], help="batches with checkpointing")
    parser.add_argument("--compiled", type=int, nargs="*", default=[16, 32], help="batches with torch.compile")
    parser.add_argument("--compile-seconds", type=float, default=200, help="time one compiled batch size needs")
    parser.add_argument("--impls", nargs="*", default=["sdpa", "augmented", "flex", "triton"])
    parser.add_argument("--out", default=None, help="write every number to this JSON file")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU: checks the script only")
    args = parser.parse_args()

    if args.smoke:
        device = torch.device("cpu")
        config = {"img_size": (64, 32), "patch_size": 8, "embed_dim": 64, "depth": 4, "num_heads": 4,
                  "merge_index": 1, "feature_indices": (1, 3), "decoder_embed_dim": 8, "pretrain_img_size": 32}
        # no FlexAttention backward on CPU; the fused kernel only in Triton's interpreter (TRITON_INTERPRET=1)
        args.impls = [i for i in args.impls if i != "flex" and (i != "triton" or interpreting())]
        args.batch, args.sweep, args.ckpt_sweep, args.compiled, matmul_n, canvases = 2, [4], [4], [], 512, 4
    else:
        device = torch.device("cuda")
        config = {"img_size": (896, 448), "patch_size": 16, "embed_dim": 1024, "num_heads": 16}  # released ViT-L
        matmul_n, canvases = 8192, 2 * args.batch
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch._dynamo.config.cache_size_limit = 64  # one graph per shape and dtype; the default 8 is too few here
    clock = Clock(device, args.budget)
    OUT.extend([args.out] if args.out else [])
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    log("env", {"device": name, "torch": torch.__version__}, f"{name}, torch {torch.__version__}")

    rate = matmul_rate(clock, device, matmul_n)
    log("matmul/flops", rate, f"dense bf16 matmul {matmul_n}^3: {rate / 1e12:.1f} TFLOP/s")
    forward, train = count_flops(config, device)
    log("flops/forward_per_pair", forward, f"FLOPs per pair: forward {forward / 1e12:.3f} T")
    log("flops/train_per_pair", train, f"FLOPs per pair: forward + backward {train / 1e12:.3f} T")

    attention_stage(clock, device, config, canvases, args.impls)
    free()
    if device.type == "cuda" and "augmented" in args.impls:
        augmented_kernels_stage(clock, device, config, canvases)
        free()

    eager = {impl: train_stage(clock, device, config, impl, args.batch) for impl in args.impls}
    ranked = [impl for _, impl in sorted((s, i) for i, s in eager.items() if s)]
    if not ranked:
        raise SystemExit("no training configuration ran")
    best = ranked[0]
    auto = "sdpa" if device.type == "cpu" else model_module.AUTO_ACCELERATOR_IMPL
    log("train/fastest_impl", best, f"fastest attention for training: {best} (attn_impl='auto' uses {auto} here)")
    inference_stage(clock, device, config, best, (1, 8, 32) if device.type == "cuda" else (1, 2))
    free()
    for size in args.ckpt_sweep:  # memory is what checkpointing buys: eager steps show it without compiling
        if clock.left() > 60:
            train_stage(clock, device, config, best, size, checkpointing=True)
    if clock.left() > 40:
        train_stage(clock, device, config, best, args.batch, fused=False)
    for size in args.sweep:
        if clock.left() > 60:
            train_stage(clock, device, config, best, size)
    # regional compilation takes minutes per new batch shape (BENCHMARKS.md, section 5): only where time is left
    for size in args.compiled:
        if clock.left() > args.compile_seconds:
            train_stage(clock, device, config, best, size, compiled=True)
    log("budget_left_s", clock.left(), f"done, {clock.left():.0f} s of the budget left")


if __name__ == "__main__":
    main()

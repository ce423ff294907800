"""SegGPT weights in and out: official .pth, Hugging Face directories, Painter, and our own files.

Our parameter names are the official ones (baaivision/Painter models_seggpt.py), so an official or
Painter state dict loads as is; Hugging Face names go through one explicit rename table
(the pairs of transformers' models/seggpt/convert_seggpt_to_hf.py). Every file is read with
`weights_only=True` (`load_weights_only`), so no checkpoint can run code when it is opened, and
written atomically (`save_atomic`), so a run killed while saving leaves the previous file whole.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seggpt_lab.atomic import replacing
from seggpt_lab.model import SegGPT

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
HF_CONFIG = "config.json"

# ours (= official) -> transformers SegGptModel; SegGptForImageSegmentation adds "model." to these
HF_BACKBONE_RENAMES = [
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embeddings.projection.\1"),
    (r"mask_token", r"embeddings.mask_token"),
    (r"segment_token_x", r"embeddings.segment_token_input"),
    (r"segment_token_y", r"embeddings.segment_token_prompt"),
    (r"type_token_cls", r"embeddings.type_token_semantic"),
    (r"type_token_ins", r"embeddings.type_token_instance"),
    (r"pos_embed", r"embeddings.position_embeddings"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"encoder.layers.\1.layernorm_before.\2"),
    (r"blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)", r"encoder.layers.\1.attention.\2.\3"),
    (r"blocks\.(\d+)\.attn\.(rel_pos_[hw])", r"encoder.layers.\1.attention.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"encoder.layers.\1.layernorm_after.\2"),
    (r"blocks\.(\d+)\.mlp\.fc([12])\.(weight|bias)", r"encoder.layers.\1.mlp.lin\2.\3"),
    (r"norm\.(weight|bias)", r"encoder.layernorm.\1"),
]
# ours -> transformers SegGptForImageSegmentation's head (absent from a bare SegGptModel)
HF_DECODER_RENAMES = [
    (r"decoder_embed\.(weight|bias)", r"decoder.decoder_embed.\1"),
    (r"decoder_pred\.0\.(weight|bias)", r"decoder.decoder_pred.conv.\1"),
    (r"decoder_pred\.1\.(weight|bias)", r"decoder.decoder_pred.layernorm.\1"),
    (r"decoder_pred\.3\.(weight|bias)", r"decoder.decoder_pred.head.\1"),
]
TYPE_TOKENS = ("type_token_cls", "type_token_ins")  # absent from Painter checkpoints


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def hf_key_map(our_keys: list[str], with_head: bool = True) -> dict[str, str]:
    """{our key: transformers key} for every key of our state dict."""
    prefix = "model." if with_head else ""
    mapping = {}
    for key in our_keys:
        for pattern, repl in HF_BACKBONE_RENAMES:
            if re.fullmatch(pattern, key):
                mapping[key] = prefix + re.sub(pattern, repl, key)
                break
        else:
            for pattern, repl in HF_DECODER_RENAMES:
                if re.fullmatch(pattern, key):
                    if with_head:
                        mapping[key] = re.sub(pattern, repl, key)
                    break
            else:
                raise KeyError(f"no Hugging Face name for {key!r}: extend HF_BACKBONE_RENAMES")
    return mapping


HF_FIXED = {"hidden_act": "gelu", "qkv_bias": True, "use_relative_position_embeddings": True,
            "layer_norm_eps": 1e-6, "num_channels": 3}  # what every SegGPT release uses, and all we build


def config_from_hf(hf: dict) -> dict:
    """SegGPT kwargs from a transformers SegGptConfig dict."""
    unsupported = {k: hf[k] for k, v in HF_FIXED.items() if hf.get(k, v) != v}
    if unsupported:
        raise CheckpointError(f"unsupported SegGptConfig values {unsupported}; supported: {HF_FIXED}")
    image_size = hf.get("image_size", [896, 448])
    image_size = tuple(image_size) if isinstance(image_size, list | tuple) else (image_size, image_size)
    hidden = hf.get("hidden_size", 1024)
    return {
        "img_size": image_size,
        "patch_size": hf.get("patch_size", 16),
        "embed_dim": hidden,
        "depth": hf.get("num_hidden_layers", 24),
        "num_heads": hf.get("num_attention_heads", 16),
        "mlp_ratio": (hf.get("mlp_dim") or 4 * hidden) / hidden,
        "merge_index": hf.get("merge_index", 2),
        "feature_indices": tuple(hf.get("intermediate_hidden_state_indices", (5, 11, 17, 23))),
        "decoder_embed_dim": hf.get("decoder_hidden_size", 64),
        "pretrain_img_size": hf.get("pretrain_image_size", 224),
        "drop_path_rate": hf.get("drop_path_rate", 0.1),
    }


def config_to_hf(config: dict) -> dict:
    """transformers SegGptConfig dict from SegGPT kwargs."""
    return {
        "architectures": ["SegGptForImageSegmentation"],
        "model_type": "seggpt",
        "hidden_size": config["embed_dim"],
        "num_hidden_layers": config["depth"],
        "num_attention_heads": config["num_heads"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-6,
        "image_size": list(config["img_size"]),
        "patch_size": config["patch_size"],
        "num_channels": 3,
        "qkv_bias": True,
        "mlp_dim": int(config["embed_dim"] * config["mlp_ratio"]),
        "drop_path_rate": config["drop_path_rate"],
        "pretrain_image_size": config["pretrain_img_size"],
        "decoder_hidden_size": config["decoder_embed_dim"],
        "use_relative_position_embeddings": True,
        "merge_index": config["merge_index"],
        "intermediate_hidden_state_indices": list(config["feature_indices"]),
        "beta": 0.01,
    }


def infer_config(state: dict[str, torch.Tensor]) -> dict:
    """SegGPT kwargs from the tensor shapes of an official-named state dict.

    Which blocks feed the decoder is not visible in the shapes: the official layout (evenly spaced,
    ending at the last block) is assumed, with the official merge after block 2.
    """
    try:
        embed_dim, _, patch, _ = state["patch_embed.proj.weight"].shape
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        rel_h, head_dim = state["blocks.0.attn.rel_pos_h"].shape
        rel_w = state["blocks.0.attn.rel_pos_w"].shape[0]
        hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
        pretrain_grid = round((state["pos_embed"].shape[1] - 1) ** 0.5)
        n_features = state["decoder_embed.weight"].shape[1] // embed_dim if "decoder_embed.weight" in state else 4
        decoder_dim = state["decoder_pred.0.weight"].shape[0] if "decoder_pred.0.weight" in state else 64
    except KeyError as e:
        raise CheckpointError(f"not a SegGPT state dict: no tensor {e.args[0]!r}") from None
    step = depth // n_features
    return {
        "img_size": ((rel_h + 1) // 2 * patch, (rel_w + 1) // 2 * patch),
        "patch_size": patch,
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": embed_dim // head_dim,
        "mlp_ratio": hidden / embed_dim,
        "merge_index": min(2, depth - 1 - step * (n_features - 1)),  # official merge_idx 2, if it fits
        "feature_indices": tuple(depth - 1 - step * (n_features - 1 - i) for i in range(n_features)),
        "decoder_embed_dim": decoder_dim,
        "pretrain_img_size": pretrain_grid * patch,
    }


def load_weights_only(path: str | Path, what: str = "checkpoint", map_location: Any = "cpu", mmap: bool = False
                      ) -> Any:
    """`torch.load(path, weights_only=True)`: tensors and plain containers only, whatever torch's default.

    A file that holds anything else (pickled code, a custom class) is refused before any of it runs, with a
    one-line `CheckpointError` naming the file; so is a file torch cannot read at all (truncated, not torch).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        held = f" ({found[1]})" if found else ""
        raise CheckpointError(f"{path}: refused: the {what} holds pickled objects{held}, and only tensors and plain "
                              "containers are loaded; open it with torch.load(weights_only=False) only if you trust "
                              "its source") from None
    except Exception as e:  # a truncated or foreign file: zip, EOF and runtime errors all mean the same here
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path}: cannot be read as a torch {what} ({reason})") from None


def save_atomic(obj: Any, path: str | Path) -> None:
    """`torch.save` to `path`, atomically (`atomic.replacing`)."""
    with replacing(Path(path)) as f:
        torch.save(obj, f)


def _read_hf_dir(path: Path) -> tuple[dict, dict]:
    """(SegGPT kwargs, state dict with our names) from a transformers save_pretrained directory."""
    from safetensors.torch import load_file

    hf_config = json.loads((path / HF_CONFIG).read_text())
    if hf_config.get("model_type") != "seggpt":
        raise CheckpointError(f"{path / HF_CONFIG}: model_type is {hf_config.get('model_type')!r}, not 'seggpt'")
    if (path / "model.safetensors").exists():
        hf_state = load_file(path / "model.safetensors")
    elif (path / "model.safetensors.index.json").exists():
        shards = set(json.loads((path / "model.safetensors.index.json").read_text())["weight_map"].values())
        hf_state = {k: v for shard in sorted(shards) for k, v in load_file(path / shard).items()}
    elif (path / "pytorch_model.bin").exists():
        hf_state = load_weights_only(path / "pytorch_model.bin")
    else:
        raise CheckpointError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
    config = config_from_hf(hf_config)
    with torch.device("meta"):
        our_keys = list(SegGPT(**config).state_dict())
    with_head = any(k.startswith("decoder.") for k in hf_state)
    inverse = {v: k for k, v in hf_key_map(our_keys, with_head).items()}
    state = {inverse.get(k, k): v for k, v in hf_state.items()}
    return config, state


def _read_file(path: Path) -> dict:
    """One checkpoint file as loaded: a .safetensors file as {"model": tensors}, anything else through torch."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return {"model": load_file(path)}
    return load_weights_only(path)


def read_checkpoint(path: str | Path) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """Detect the format of `path`. Returns (format name, SegGPT kwargs, state dict with our names)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or directory")
    if path.is_dir():
        if not (path / HF_CONFIG).exists():
            raise CheckpointError(f"{path}: a directory without {HF_CONFIG} is not a Hugging Face checkpoint")
        return ("huggingface", *_read_hf_dir(path))
    ckpt = _read_file(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(ckpt).__name__}")
    if "seggpt_lab" in ckpt:  # ours: save_checkpoint
        return "seggpt_lab", dict(ckpt["seggpt_lab"]["config"]), ckpt["state_dict"]
    if "state_dict" in ckpt:  # a Lightning checkpoint: the model sits under some attribute prefix
        state = ckpt["state_dict"]
        prefix = next((k[: -len("patch_embed.proj.weight")] for k in state if k.endswith("patch_embed.proj.weight")),
                      None)
        if prefix is None:
            raise CheckpointError(f"{path}: a Lightning checkpoint without SegGPT weights (no patch_embed.proj.weight)")
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        return "lightning", infer_config(state), state
    state = ckpt.get("model", ckpt)
    fmt = "official" if all(t in state for t in TYPE_TOKENS) else "painter"
    return fmt, infer_config(state), state


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint",
               allow_missing: tuple[str, ...] = ()) -> None:
    """Copy `state` into `model`, after checking every name and shape; raise one error listing all problems."""
    expected = model.state_dict()
    missing = sorted(k for k in expected.keys() - state.keys() if k not in allow_missing)
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in sorted(expected.keys() & state.keys()) if state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        lines = [f"{source} does not fit {type(model).__name__}:"]
        for name, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                lines.append(f"  {name} ({len(items)}): {', '.join(items)}")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=False)


def load_pretrained(path: str | Path, **overrides) -> SegGPT:
    """Build a SegGPT from any supported checkpoint; `overrides` set runtime options (attn_impl, ...).

    Formats: the official `seggpt_vit_large.pth` ({"model": state_dict}); a Hugging Face directory
    of `SegGptForImageSegmentation` or `SegGptModel`; a Painter checkpoint (no type tokens); a
    Lightning checkpoint of this project; a file written by `save_checkpoint`.
    """
    fmt, config, state = read_checkpoint(path)
    model = SegGPT(**{**config, **overrides})
    allow_missing: tuple[str, ...] = ()
    if fmt == "painter":
        allow_missing = TYPE_TOKENS
        log.warning("%s is a Painter checkpoint without type tokens: type_token_cls/type_token_ins are "
                    "freshly initialised (normal, std 0.02)", path)
    if fmt == "huggingface" and "decoder_embed.weight" not in state:
        allow_missing = tuple(k for k in model.state_dict() if k.startswith(("decoder_embed.", "decoder_pred.")))
        log.warning("%s is a bare SegGptModel: the decoder head is freshly initialised", path)
    load_state(model, state, f"{path} ({fmt})", allow_missing)
    return model


def initialize_from(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Copy every tensor of a checkpoint whose name and shape fit `model`; report the rest; return the report.

    For starting a training run from related weights: any SegGPT format `read_checkpoint` knows, or a
    ViT state dict with timm / MAE names (`{"model": ...}` or bare, any prefix before `patch_embed.`),
    whose blocks, patch embedding and final norm are named as ours. A position table of another grid
    is resampled (timm `resample_abs_pos_embed`, bicubic); a ViT's `cls_token` has no use here.
    Returns {"loaded", "missing", "unexpected", "mismatched"} lists of names.
    """
    from timm.layers import resample_abs_pos_embed

    path = Path(path)
    try:
        _, _, state = read_checkpoint(path)
    except CheckpointError:
        if path.is_dir() or not path.exists():
            raise
        raw = _read_file(path)
        state = raw.get("model", raw.get("state_dict", raw)) if isinstance(raw, dict) else {}
        prefix = next((k[: -len("patch_embed.proj.weight")] for k in state if k.endswith("patch_embed.proj.weight")),
                      None)
        if prefix is None:
            raise CheckpointError(f"{path}: neither a SegGPT checkpoint nor a ViT state dict "
                                  "(no patch_embed.proj.weight)") from None
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and torch.is_tensor(v)}
    expected = model.state_dict()
    pos = state.get("pos_embed")
    if pos is not None and "pos_embed" in expected and pos.shape != expected["pos_embed"].shape:
        side = math.isqrt(expected["pos_embed"].shape[1] - 1)
        state["pos_embed"] = resample_abs_pos_embed(pos, [side, side], num_prefix_tokens=1)
    report = {"loaded": [], "missing": [], "unexpected": [], "mismatched": []}
    fitting = {}
    for k, v in state.items():
        if k not in expected:
            report["unexpected"].append(k)
        elif v.shape != expected[k].shape:
            report["mismatched"].append(f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}")
        else:
            fitting[k] = v
            report["loaded"].append(k)
    report["missing"] = sorted(expected.keys() - fitting.keys())
    model.load_state_dict(fitting, strict=False)
    log.info("%s: initialised %d of %d tensors", path, len(fitting), len(expected))
    for name in ("missing", "unexpected", "mismatched"):
        if report[name]:
            log.warning("%s: %d %s (left as initialised): %s", path, len(report[name]), name,
                        ", ".join(report[name][:20]) + (" ..." if len(report[name]) > 20 else ""))
    return report


def save_checkpoint(model: SegGPT, path: str | Path) -> None:
    """Write the weights and the architecture, for `load_pretrained` (atomically: `save_atomic`)."""
    save_atomic({"seggpt_lab": {"format_version": FORMAT_VERSION, "config": dict(model.config)},
                "state_dict": model.state_dict()}, path)


def export_huggingface(model: SegGPT, directory: str | Path) -> Path:
    """Write a directory that `transformers.SegGptForImageSegmentation.from_pretrained` opens."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    mapping = hf_key_map(list(state))
    save_file({mapping[k]: v.detach().contiguous() for k, v in state.items()},
              directory / "model.safetensors", metadata={"format": "pt"})
    (directory / HF_CONFIG).write_text(json.dumps(config_to_hf(model.config), indent=2) + "\n")
    return directory

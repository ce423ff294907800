"""SegGPT: a ViT that paints the query half of a two-image canvas from an in-context example.

Faithful to the official release (baaivision/Painter, SegGPT/SegGPT_inference/models_seggpt.py) and to the
Hugging Face port (transformers.models.seggpt). Shapes: B pairs (with a feature ensemble, the prompts of one
query); H, W canvas pixels (two W-sized halves stacked, prompt on top); h, w = H // p, W // p patches and
L = h * w tokens; p patch size, C embed_dim, D decoder_embed_dim.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, Mlp, PatchEmbed, resample_abs_pos_embed, trunc_normal_
from timm.models.vision_transformer_sam import Attention, get_rel_pos
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import flex_attention
from torch.utils.checkpoint import checkpoint

from seggpt_lab.relpos_attention import relpos_attention

EnsembleMode = Literal["official", "huggingface"]


def feature_ensemble(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Replace the query half (bottom h/2 rows) of x (B, h, w, C) by its mean within each of `groups` consecutive
    groups (two streams before the merge, one after), in place: a split-mean-concatenate would copy it 3 times."""
    query = x[:, x.shape[1] // 2:].unflatten(0, (groups, -1))  # (groups, prompts, h/2, w, C), a view of x
    # the mean taken about the first prompt is exact when prompts agree: N copies of one prompt give
    # exactly the one-prompt features (a plain mean of three equal floats need not return them)
    first = query[:, :1]
    query.copy_((first + (query - first).mean(dim=1, keepdim=True)).expand_as(query))
    return x


def per_canvas(module: nn.Module, x: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """module(x), one batch item at a time when `enabled`: oneDNN picks convolution algorithms by batch size,
    so a batched convolution would make a prediction depend (~1e-7) on its batch-mates."""
    if not enabled or x.shape[0] == 1:
        return module(x)
    return torch.cat([module(x[i : i + 1]) for i in range(x.shape[0])])  # slices keep the memory format


BIAS_CHUNK_BYTES = 16 * 2**20  # below glibc's largest mmap threshold (32 MiB), so chunk buffers are reused

# "augmented" on accelerators: the kernels to try, in order, and whether to pad the values to the logits' head dim
# (flash kernels need one head dim for q, k and v). cuDNN is the fastest; with padded values a GPU without it
# falls back to flash instead of the much slower memory-efficient kernel (BENCHMARKS.md, section 5).
AUGMENTED_BACKENDS: list[SDPBackend] = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                                        SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
AUGMENTED_PAD_VALUES = True

# what attn_impl="auto" uses off CPU: the fastest measured training step (BENCHMARKS.md, section 5)
AUTO_ACCELERATOR_IMPL = "augmented"

AttnImpl = Literal["auto", "sdpa", "augmented", "flex", "triton", "eager"]
ATTN_IMPLS = get_args(AttnImpl)


def check_attn_impl(attn_impl: str) -> str:
    """`attn_impl` if it names an implementation; else a ValueError that lists them."""
    if attn_impl not in ATTN_IMPLS:
        raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
    return attn_impl


@functools.cache
def _compiled_flex_attention():
    """FlexAttention compiled once per process (uncompiled it materialises the scores)."""
    return torch.compile(flex_attention, dynamic=False)


class RelPosAttention(Attention):
    """timm's SAM attention (official names) adding the decomposed relative bias rel_h[i, ky] + rel_w[i, kx]
    (MViTv2; official add_decomposed_rel_pos) one of five ways, `attn_impl`: "sdpa" (a float mask, in chunks on
    CPU small enough for the allocator to recycle), "augmented" (rel_h[i], rel_w[i] appended to the query and the
    one-hot codes of (ky, kx) to the key: q' k'^T = q k^T / sqrt(d) + bias for any bias-free kernel), "flex"
    (a FlexAttention score_mod), "triton" (our fused kernel that reads the two small tables, `relpos_attention`;
    CUDA only) or "eager" (the explicit reference); "auto" is "sdpa" on CPU, "augmented" elsewhere, the fastest
    of each (BENCHMARKS.md, sections 1 and 5)."""

    attn_impl: str = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, h, w, C) -> (B, h, w, C)."""
        B, h, w, _ = x.shape
        qkv = self.qkv(x.reshape(B, h * w, -1)).view(B, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, heads, L, d) each
        # decomposed relative position (MViTv2; official add_decomposed_rel_pos), unscaled q
        q_grid = q.reshape(B, self.num_heads, h, w, -1)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", q_grid, get_rel_pos(h, h, self.rel_pos_h)).contiguous()
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", q_grid, get_rel_pos(w, w, self.rel_pos_w)).contiguous()
        dropout = self.attn_drop.p if self.training else 0.0
        impl = check_attn_impl(self.attn_impl)  # also when set on the attribute directly
        if impl == "auto":
            impl = "sdpa" if x.device.type == "cpu" else AUTO_ACCELERATOR_IMPL
        if impl == "augmented":
            x = self._augmented(q, k, v, rel_h.flatten(2, 3), rel_w.flatten(2, 3), h, w, dropout)
        elif impl == "flex":
            x = self._flex(q, k, v, rel_h.flatten(2, 3), rel_w.flatten(2, 3), w)
        elif impl == "triton":
            if dropout > 0:
                raise ValueError("attn_impl='triton' has no attention dropout; use 'augmented' or 'sdpa'")
            x = relpos_attention(q, k, v, rel_h.flatten(2, 3), rel_w.flatten(2, 3), self.scale)
        elif impl == "sdpa":
            x = self._sdpa(q, k, v, rel_h, rel_w, dropout)
        else:  # "eager"
            attn = (q * self.scale) @ k.transpose(-2, -1) + _bias(rel_h, rel_w, slice(None), slice(None))
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        x = x.transpose(1, 2).reshape(B, h, w, -1)
        return self.proj_drop(self.proj(x))

    def _sdpa(self, q, k, v, rel_h, rel_w, dropout: float) -> torch.Tensor:
        B, _, h, w, _ = rel_h.shape
        if q.device.type == "cpu":
            # chunks of whole canvases while they fit, else of one canvas's query rows: the keys and values
            # a chunk reads then belong to the fewest canvases (4 prompts of ViT-L: 13 MB each, cache-sized)
            row_bytes = self.num_heads * w * h * w * q.element_size()  # one canvas's bias for one query row
            items = max(1, min(B, BIAS_CHUNK_BYTES // (row_bytes * h)))
            rows = max(1, min(h, BIAS_CHUNK_BYTES // (row_bytes * items)))
        else:
            items, rows = B, h
        return torch.cat([torch.cat([F.scaled_dot_product_attention(
            q[i:i + items, :, r * w:(r + rows) * w], k[i:i + items], v[i:i + items],
            attn_mask=_bias(rel_h, rel_w, slice(i, i + items), slice(r, r + rows)), dropout_p=dropout)
            for r in range(0, h, rows)], dim=2) for i in range(0, B, items)])  # (B, heads, L, d)

    def _augmented(self, q, k, v, rel_h, rel_w, h: int, w: int, dropout: float) -> torch.Tensor:
        """rel_h (B, n, L, h), rel_w (B, n, L, w): the bias as extra query/key dims, padded to a multiple of 8."""
        B, n, L, d = q.shape
        pad = -(d + h + w) % 8  # kernels want head dims in multiples of 8
        keys = torch.arange(L, device=q.device)
        codes = torch.cat([F.one_hot(keys // w, h), F.one_hot(keys % w, w), keys.new_zeros(L, pad)], dim=1)
        q = torch.cat([q * self.scale, rel_h, rel_w, q.new_zeros(B, n, L, pad)], dim=-1)
        k = torch.cat([k, codes.to(k.dtype).expand(B, n, L, h + w + pad)], dim=-1)
        if q.device.type == "cpu":
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=1.0)
        if AUGMENTED_PAD_VALUES:
            v = F.pad(v, (0, q.shape[-1] - d))
        with sdpa_kernel(AUGMENTED_BACKENDS, set_priority=True):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=1.0)[..., :d]

    def _flex(self, q, k, v, rel_h, rel_w, w: int) -> torch.Tensor:
        """rel_h (B, n, L, h), rel_w (B, n, L, w) gathered per logit; the bias never exists as a tensor."""
        if self.training and self.attn_drop.p > 0:
            raise ValueError("attn_impl='flex' has no attention dropout; use 'augmented' or 'sdpa'")

        def score_mod(score, b, head, i, j):
            return score + rel_h[b, head, i, j // w] + rel_w[b, head, i, j % w]

        if q.device.type == "cpu":  # eager: no compiled CPU kernel has a backward
            return flex_attention(q, k, v, score_mod=score_mod)
        return _compiled_flex_attention()(q, k, v, score_mod=score_mod)


def _bias(rel_h: torch.Tensor, rel_w: torch.Tensor, items: slice, rows: slice) -> torch.Tensor:
    """The dense bias of query rows `rows` of canvases `items`: (b, heads, rows * w, L) from (B, n, h, w, h|w)."""
    b = rel_h[items, :, rows].unsqueeze(-1) + rel_w[items, :, rows].unsqueeze(-2)  # (b, n, r, w, h, w)
    return b.reshape(b.shape[0], b.shape[1], -1, rel_h.shape[2] * rel_h.shape[3])


class Block(nn.Module):
    """Pre-norm ViT block; our own because the feature ensemble sits between attention and its residual add
    (official `Block.forward`, HF `SegGptLayer.forward`)."""

    def __init__(self, dim: int, num_heads: int, grid_size: tuple[int, int], mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, attn_impl: AttnImpl = "auto") -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RelPosAttention(dim, num_heads=num_heads, qkv_bias=True, use_rel_pos=True, input_size=grid_size)
        self.attn.attn_impl = check_attn_impl(attn_impl)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor, ensemble_groups: int = 0) -> torch.Tensor:
        """x (B, h, w, C) -> (B, h, w, C); ensemble_groups > 0 averages query halves in that many groups."""
        a = self.attn(self.norm1(x))
        if ensemble_groups:
            a = feature_ensemble(a, ensemble_groups)
        x = x + self.drop_path(a)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SegGPT(nn.Module):
    """SegGPT encoder-decoder. Defaults are the released ViT-L (896x448 canvas, 370,723,203 parameters).

    Args:
        img_size: canvas (H, W); both halves' sizes must be multiples of `patch_size`.
        patch_size: patch size p.
        embed_dim: transformer width C.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / C.
        merge_index: block after which the image and target streams are averaged into one.
        feature_indices: blocks whose (normed) outputs feed the decoder.
        decoder_embed_dim: decoder width D.
        pretrain_img_size: side of the square grid the absolute position embedding was trained on, in pixels.
        drop_path_rate: stochastic depth, linear over depth (training only).
        attn_impl: how attention adds the relative-position bias (see `RelPosAttention`).
        grad_checkpointing: recompute block activations in the backward pass to save memory.
        ensemble_mode: feature-ensemble semantics, "official" (per stream up to the merge) or "huggingface".

        init: weight initialisation from scratch: "official" (trunc-normal(0.02) linears, models_seggpt.py) or
            "xavier" (MAE's models_mae.py; shortens the initial loss plateau of small widths severalfold).
    """

    def __init__(
        self,
        img_size: tuple[int, int] = (896, 448),
        patch_size: int = 16,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        merge_index: int = 2,  # official models_seggpt.py merge_idx
        feature_indices: Sequence[int] = (5, 11, 17, 23),
        decoder_embed_dim: int = 64,
        pretrain_img_size: int = 224,
        drop_path_rate: float = 0.1,
        attn_impl: AttnImpl = "auto",
        grad_checkpointing: bool = False,
        ensemble_mode: EnsembleMode = "official",
        init: Literal["official", "xavier"] = "official",
    ) -> None:
        super().__init__()
        img_size = tuple(img_size)
        if img_size[0] % (2 * patch_size) or img_size[1] % patch_size:
            raise ValueError(f"img_size {img_size}: each half must be a multiple of patch_size={patch_size}")
        feature_indices = tuple(feature_indices)
        if not feature_indices or merge_index > min(feature_indices) or max(feature_indices) >= depth:
            raise ValueError(f"need merge_index <= min(feature_indices) and max(feature_indices) < depth={depth}; "
                             f"got merge_index={merge_index}, feature_indices={feature_indices}")
        if init not in ("official", "xavier"):
            raise ValueError(f"init must be 'official' or 'xavier', got {init!r}")
        if ensemble_mode not in ("official", "huggingface"):
            raise ValueError(f"ensemble_mode must be 'official' or 'huggingface', got {ensemble_mode!r}")
        # the constructor arguments, so that checkpoints can rebuild the architecture
        self.config = {
            "img_size": img_size, "patch_size": patch_size, "embed_dim": embed_dim, "depth": depth,
            "num_heads": num_heads, "mlp_ratio": mlp_ratio, "merge_index": merge_index,
            "feature_indices": feature_indices, "decoder_embed_dim": decoder_embed_dim,
            "pretrain_img_size": pretrain_img_size, "drop_path_rate": drop_path_rate,
        }
        self.img_size, self.patch_size = img_size, patch_size
        self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.merge_index, self.feature_indices = merge_index, feature_indices
        self.pretrain_grid = pretrain_img_size // patch_size
        self.decoder_embed_dim = decoder_embed_dim
        self.grad_checkpointing = grad_checkpointing
        self.ensemble_mode = ensemble_mode

        # one patch embedding shared by the image and the target canvas
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim, output_fmt="NHWC", strict_img_size=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, embed_dim))
        self.segment_token_x = nn.Parameter(torch.zeros(1, 1, 1, embed_dim))  # image stream
        self.segment_token_y = nn.Parameter(torch.zeros(1, 1, 1, embed_dim))  # target stream
        self.type_token_cls = nn.Parameter(torch.zeros(1, 1, 1, embed_dim))  # seg_type 0: semantic
        self.type_token_ins = nn.Parameter(torch.zeros(1, 1, 1, embed_dim))  # seg_type 1: instance
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pretrain_grid**2 + 1, embed_dim))  # + unused cls slot

        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear, as torch.linspace
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, self.grid_size, mlp_ratio, dpr[i], attn_impl) for i in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

        self.decoder_embed = nn.Linear(embed_dim * len(feature_indices), patch_size**2 * decoder_embed_dim)
        self.decoder_pred = nn.Sequential(
            nn.Conv2d(decoder_embed_dim, decoder_embed_dim, kernel_size=3, padding=1),
            LayerNorm2d(decoder_embed_dim, eps=1e-6),
            nn.GELU(),
            nn.Conv2d(decoder_embed_dim, 3, kernel_size=1),
        )
        self.init_weights(init)

    def init_weights(self, mode: Literal["official", "xavier"] = "official") -> None:
        """normal(0.02) tokens and position table; linears as `mode` (see `init`), biases 0; layer norms 1 and 0."""
        trunc_normal_(self.pos_embed, std=0.02)
        for token in (self.mask_token, self.segment_token_x, self.segment_token_y,
                      self.type_token_cls, self.type_token_ins):
            nn.init.normal_(token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                if mode == "xavier":
                    nn.init.xavier_uniform_(m.weight)
                else:
                    trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_attn_impl(self, attn_impl: AttnImpl) -> None:
        """Switch every block's attention implementation (the weights are the same for all of them)."""
        attn_impl = check_attn_impl(attn_impl)
        for block in self.blocks:
            block.attn.attn_impl = attn_impl

    def compile_blocks(self, **options) -> None:
        """torch.compile each block in place (regional compilation: one graph per input shape shared by all
        blocks); `options` go to torch.compile. Speed-up: BENCHMARKS.md, section 5."""
        for block in self.blocks:
            block.compile(**options)

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def query_mask(self, batch_size: int = 1, device: torch.device | str | None = None) -> torch.Tensor:
        """The inference mask: every patch of the query (bottom) half masked. Returns (B, L) bool."""
        mask = torch.zeros(self.grid_size, dtype=torch.bool, device=device)
        mask[self.grid_size[0] // 2:] = True
        return mask.flatten().expand(batch_size, -1)

    def forward(self, image_canvas: torch.Tensor, target_canvas: torch.Tensor, bool_masked_pos: torch.Tensor,
                seg_type: torch.Tensor, feature_ensemble: bool = False) -> torch.Tensor:
        """Canvases (B, 3, H, W); bool_masked_pos (B, L) or (1, L); seg_type (B,): 0 semantic, 1 instance;
        `feature_ensemble`: the B pairs are prompts of one query. Returns (B, 3, H, W), ImageNet-normalised."""
        x = self.embed(image_canvas, target_canvas, bool_masked_pos, seg_type)  # (2B, h, w, C)
        features = self.forward_encoder(x, feature_ensemble)  # (B, h, w, C * len(feature_indices))
        return self.forward_decoder(features)  # (B, 3, H, W)

    def embed(self, image_canvas: torch.Tensor, target_canvas: torch.Tensor, bool_masked_pos: torch.Tensor,
              seg_type: torch.Tensor) -> torch.Tensor:
        """Both streams as separate batch items: (2B, h, w, C), image stream first."""
        B = image_canvas.shape[0]
        x = per_canvas(self.patch_embed, image_canvas, not self.training)  # (B, h, w, C)
        y = per_canvas(self.patch_embed, target_canvas, not self.training)  # (B, h, w, C)
        # mask tokens go in before the additive embeddings (official forward_encoder)
        m = bool_masked_pos.reshape(-1, *self.grid_size, 1).to(y.dtype)  # (B or 1, h, w, 1)
        y = y * (1 - m) + self.mask_token * m
        pos = resample_abs_pos_embed(self.pos_embed, list(self.grid_size), num_prefix_tokens=1, antialias=False)
        pos = pos[:, 1:].reshape(1, *self.grid_size, -1)  # (1, h, w, C), cls slot dropped
        seg_type = seg_type.reshape(B, 1, 1, 1)
        type_token = torch.where(seg_type == 0, self.type_token_cls, self.type_token_ins)  # (B, 1, 1, C)
        x = x + self.segment_token_x + pos + type_token
        y = y + self.segment_token_y + pos + type_token
        return torch.cat([x, y], dim=0)

    def _ensemble_groups(self, index: int, batch: int, enabled: bool) -> int:
        """How many groups block `index` averages its query half over (0: none). batch = items in the block."""
        if not enabled:
            return 0
        before_merge = index <= self.merge_index
        if self.ensemble_mode == "official":
            # official seggpt_engine: ensemble only with more than one prompt, per stream up to the merge
            prompts = batch // 2 if before_merge else batch
            return (2 if before_merge else 1) if prompts > 1 else 0
        # transformers SegGptLayer: ensemble_cond = 2 if merge_index > i else 1, applied if batch // 2 >= cond
        cond = 2 if index < self.merge_index else 1
        return cond if batch // 2 >= cond else 0

    def forward_encoder(self, x: torch.Tensor, feature_ensemble: bool = False) -> torch.Tensor:
        """x (2B, h, w, C) -> concatenated normed features (B, h, w, C * len(feature_indices))."""
        features = []
        for i, block in enumerate(self.blocks):
            groups = self._ensemble_groups(i, x.shape[0], feature_ensemble)
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, groups, use_reentrant=False)
            else:
                x = block(x, groups)
            if i == self.merge_index:
                x = (x[: x.shape[0] // 2] + x[x.shape[0] // 2:]) * 0.5  # (B, h, w, C)
            if i in self.feature_indices:
                features.append(self.norm(x))
        return torch.cat(features, dim=-1)

    def forward_decoder(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, h, w, F) -> canvas (B, 3, H, W)."""
        B, h, w, _ = features.shape
        p, D = self.patch_size, self.decoder_embed_dim
        x = self.decoder_embed(features)  # (B, h, w, p*p*D), channel fastest: index (py*p + px)*D + d
        x = x.reshape(B, h, w, p, p, D).permute(0, 1, 3, 2, 4, 5).reshape(B, h * p, w * p, D)  # (B, H, W, D)
        # an NHWC tensor seen as NCHW (channels_last): convolutions and the channel norm need no more copies
        x = per_canvas(self.decoder_pred, x.permute(0, 3, 1, 2), not self.training)  # (B, 3, H, W)
        return x.contiguous()

    def forward_loss(self, image_canvas: torch.Tensor, target_canvas: torch.Tensor, bool_masked_pos: torch.Tensor,
                     seg_type: torch.Tensor, gt_canvas: torch.Tensor, valid: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward pass and masked smooth-l1 loss. Returns (loss scalar, predicted canvas (B, 3, H, W))."""
        pred = self(image_canvas, target_canvas, bool_masked_pos, seg_type)
        return masked_smooth_l1(pred, gt_canvas, bool_masked_pos, self.patch_size, valid), pred


def patch_mask_to_pixels(bool_masked_pos: torch.Tensor, grid_size: tuple[int, int], patch_size: int) -> torch.Tensor:
    """(B, L) patch mask -> (B, 1, h*p, w*p) float pixel mask."""
    m = bool_masked_pos.reshape(-1, 1, *grid_size).float()
    return m.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)


def masked_smooth_l1(pred: torch.Tensor, gt_canvas: torch.Tensor, bool_masked_pos: torch.Tensor,
                     patch_size: int = 16, valid: torch.Tensor | None = None, beta: float = 0.01) -> torch.Tensor:
    """Smooth-l1 (beta 0.01, official loss_func="smoothl1") averaged over masked patches and channels: pred,
    gt_canvas (B, 3, H, W); bool_masked_pos (B, L) or (1, L), broadcast before normalising (transformers'
    SegGptLoss divides by one sample's count); valid: optional (B, 1 or 3, H, W) weights on the mask."""


    B, _, H, W = pred.shape
    grid = (H // patch_size, W // patch_size)
    weight = patch_mask_to_pixels(bool_masked_pos.expand(B, -1), grid, patch_size).to(pred.dtype)
    weight = weight.expand(B, 3, H, W)
    if valid is not None:
        weight = weight * valid
    loss = F.smooth_l1_loss(pred, gt_canvas, reduction="none", beta=beta)
    return (loss * weight).sum() / weight.sum().clamp_min(1e-12)


PRESETS: dict[str, dict] = {
    "seggpt_vit_large": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "feature_indices": (5, 11, 17, 23)},
    "seggpt_vit_base": {"embed_dim": 768, "depth": 12, "num_heads": 12, "feature_indices": (2, 5, 8, 11)},
    "seggpt_vit_small": {"embed_dim": 384, "depth": 12, "num_heads": 6, "feature_indices": (2, 5, 8, 11)},
    "seggpt_vit_tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3, "feature_indices": (2, 5, 8, 11)},
}


def create_model(name: str, **overrides) -> SegGPT:
    """A preset by name (see PRESETS) with any SegGPT argument overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown SegGPT preset {name!r}; choose one of {sorted(PRESETS)}")
    return SegGPT(**{**PRESETS[name], **overrides})


def seggpt_vit_large(**overrides) -> SegGPT:
    """The released model: ViT-L, 896x448 canvas, 370,723,203 parameters."""
    return create_model("seggpt_vit_large", **overrides)


def seggpt_vit_base(**overrides) -> SegGPT:
    return create_model("seggpt_vit_base", **overrides)


def seggpt_vit_small(**overrides) -> SegGPT:
    return create_model("seggpt_vit_small", **overrides)


def seggpt_vit_tiny(**overrides) -> SegGPT:
    """ViT-Ti width and depth, for CPU demos and tests."""

    return create_model("seggpt_vit_tiny", **overrides)

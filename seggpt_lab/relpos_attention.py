"""Attention with SegGPT's decomposed relative-position bias in one fused Triton kernel, forward and backward.

The bias of query i and key j = (ky, kx) is rel_h[i, ky] + rel_w[i, kx] (MViTv2; official add_decomposed_rel_pos):
two small tables, (L, h) and (L, w) per head, never an (L, L) bias. No library kernel takes such a bias: SDPA and
cuDNN take a dense mask, FlexAttention gathers both tables per logit (BENCHMARKS.md, section 5), so the kernel
is ours. It is a flash-attention (online softmax, recomputation in the backward; Dao, "FlashAttention-2", 2023)
whose key tiles are whole rows of the key grid, padded to a power of two: in a tile, rel_w's columns are those
of every other tile (loaded once per program) and rel_h's are a few columns, and the bias's gradients are sums
over the tile's rows and columns. The same idea as the Triton kernels written for SAM's image encoder, whose
attention is the same (segment-anything-fast); written here from the algorithm, not from their code.

Tensors: q, k, v and the output (B, n, L, d), rel_h (B, n, L, h), rel_w (B, n, L, w) with L = h * w tokens in
row-major order. The kernels run on CUDA tensors; on CPU tensors only in Triton's interpreter (TRITON_INTERPRET=1
set before triton is imported), which the tests use to check the kernels against the eager reference.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # triton ships with torch's Linux wheels; elsewhere attn_impl="triton" says what is missing
    triton = None

# Tiles, fixed rather than autotuned so that a run's numerics do not depend on a timing; benchmarks/
# gpu_train_speed.py times the alternatives on a GPU and reports the fastest
BLOCK_M = 64  # queries per program
KEYS_PER_TILE = 64  # keys per tile, rounded to whole padded key rows
NUM_WARPS = 4


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (numpy, on CPU tensors)."""
    return triton is not None and bool(triton.knobs.runtime.interpret)


def check_available(device: torch.device) -> None:
    """A one-line error unless the fused kernel can run on `device`."""
    if triton is None:
        raise RuntimeError("attn_impl='triton' needs the triton package (pip install triton); "
                           "use attn_impl='augmented' or 'sdpa'")
    if device.type != "cuda" and not interpreting():
        raise ValueError(f"attn_impl='triton' runs on CUDA devices, not {device.type} (TRITON_INTERPRET=1 runs its "
                         "kernels in Triton's interpreter, for tests); use attn_impl='sdpa' or 'auto' here")


def relpos_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """softmax(scale * q k^T + rel_h[i, ky] + rel_w[i, kx]) v, differentiable in all five tensors."""
    check_available(q.device)
    return _RelPosAttention.apply(q, k, v, rel_h, rel_w, scale)


def _tiles(d: int, w: int) -> dict:
    """Block sizes: tl.dot wants power-of-two dims of at least 16."""
    block_w = max(16, triton.next_power_of_2(w))
    return {"BLOCK_M": BLOCK_M, "BLOCK_D": max(16, triton.next_power_of_2(d)), "BLOCK_W": block_w,
            "ROWS": max(1, KEYS_PER_TILE // block_w), "num_warps": NUM_WARPS}


def _precision(dtype: torch.dtype) -> str:
    """float32 tiles as torch's float32 matmuls are (exact unless TF32 is allowed); 16-bit ones are exact anyway."""
    return "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _contiguous_rows(x: torch.Tensor) -> torch.Tensor:
    """The kernels take any strides over (B, n, L) but unit stride along the last dim."""
    return x if x.stride(-1) == 1 else x.contiguous()


# a plain autograd.Function around the kernels: torch.compile traces user-defined Triton kernels in it, which the
# torch.library docs recommend over wrapping them in a custom op when no op semantics are needed
class _RelPosAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, rel_h, rel_w, scale):
        q, k, v = (_contiguous_rows(t) for t in (q, k, v))
        rel_h, rel_w = rel_h.contiguous(), rel_w.contiguous()
        B, n, L, d = q.shape
        h, w = rel_h.shape[-1], rel_w.shape[-1]
        if h * w != L or rel_h.shape[:3] != (B, n, L) or rel_w.shape[:3] != (B, n, L):
            raise ValueError(f"relpos_attention: rel_h {tuple(rel_h.shape)} and rel_w {tuple(rel_w.shape)} do not "
                             f"tile q {tuple(q.shape)}: want (B, n, L, h) and (B, n, L, w) with h * w = L")
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        lse = torch.empty(B, n, L, device=q.device, dtype=torch.float32)
        tiles = _tiles(d, w)
        _forward_kernel[(triton.cdiv(L, tiles["BLOCK_M"]), B * n)](
            q, k, v, rel_h, rel_w, out, lse, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
            n, L, d, h, w, scale, PRECISION=_precision(q.dtype), **tiles)
        ctx.save_for_backward(q, k, v, rel_h, rel_w, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, rel_h, rel_w, out, lse = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        B, n, L, d = q.shape
        h, w = rel_h.shape[-1], rel_w.shape[-1]
        delta = (out.float() * grad_out.float()).sum(-1)  # rowsum(dO * O) = rowsum(P * dP), (B, n, L)
        dq, dk, dv = (torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))
        d_rel_h, d_rel_w = torch.empty_like(rel_h), torch.empty_like(rel_w)
        tiles = _tiles(d, w)
        common = (q, k, v, rel_h, rel_w, grad_out, lse, delta, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
                  *grad_out.stride()[:3])
        _backward_keys_kernel[(triton.cdiv(h, tiles["ROWS"]), B * n)](
            *common, dk, dv, n, L, d, h, w, ctx.scale, PRECISION=_precision(q.dtype), **tiles)
        _backward_queries_kernel[(triton.cdiv(L, tiles["BLOCK_M"]), B * n)](
            *common, dq, d_rel_h, d_rel_w, n, L, d, h, w, ctx.scale, PRECISION=_precision(q.dtype), **tiles)
        return dq, dk, dv, d_rel_h, d_rel_w, None


if triton is not None:
    # Each program works on one (b, head), bn = b * n + head, and one query block (forward, dQ) or one key tile
    # (dK, dV). A key tile is ROWS padded key rows: tile position t is key (ky0 + t // BLOCK_W, t % BLOCK_W).
    # Padded keys and queries past L are masked; padded keys score -inf.

    @triton.jit
    def _rows(base, offs, stride, valid, offs_d, D):
        """Rows `offs` of an (L, D) matrix at `base` (row stride `stride`), zero where not valid."""
        return tl.load(base + offs[:, None] * stride + offs_d[None, :], mask=valid[:, None] & (offs_d < D)[None, :],
                       other=0.0)

    @triton.jit
    def _key_tile(ky0, offs_t, h, w, BLOCK_W: tl.constexpr):
        """Key row, token index and validity of each position of the tile that starts at key row ky0."""
        ky, kx = ky0 + offs_t // BLOCK_W, offs_t % BLOCK_W
        return ky, ky * w + kx, (ky < h) & (kx < w)

    @triton.jit
    def _rel_w_tile(rel_w_ptr, offs_m, m_valid, offs_t, w, BLOCK_W: tl.constexpr):
        """rel_w[i, t % BLOCK_W] of a query block, float32: the same for every key tile."""
        kx = offs_t % BLOCK_W
        return tl.load(rel_w_ptr + offs_m[:, None] * w + kx[None, :], mask=m_valid[:, None] & (kx < w)[None, :],
                       other=0.0).to(tl.float32)

    @triton.jit
    def _scores(q, k, rel_h_ptr, rel_w_tile, offs_m, m_valid, ky, key_valid, h, scale, PRECISION: tl.constexpr):
        """scale * q k^T + rel_h[i, ky] + rel_w[i, kx] of a query block and a key tile, float32, -inf off the grid."""
        bias_h = tl.load(rel_h_ptr + offs_m[:, None] * h + ky[None, :], mask=m_valid[:, None] & key_valid[None, :],
                         other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale + bias_h.to(tl.float32) + rel_w_tile
        return tl.where(key_valid[None, :], s, float("-inf"))

    @triton.jit
    def _score_grads(q, k, v, do, lse, delta, rel_h_ptr, rel_w_tile, offs_m, m_valid, ky, key_valid, h, scale,
                     PRECISION: tl.constexpr):
        """The backward's recomputed probabilities P and dS = P * (dP - delta) of a query block and a key tile;
        both zero on padded keys and on queries past L."""
        s = _scores(q, k, rel_h_ptr, rel_w_tile, offs_m, m_valid, ky, key_valid, h, scale, PRECISION)
        p = tl.where(m_valid[:, None], tl.exp(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        return p, p * (dp - delta[:, None])

    @triton.jit
    def _forward_kernel(Q, K, V, REL_H, REL_W, OUT, LSE, sqb, sqn, sql, skb, skn, skl, svb, svn, svl, sob, son, sol,
                        n, L, D, h, w, scale, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_D: tl.constexpr, BLOCK_W: tl.constexpr, ROWS: tl.constexpr):
        """Output and log-sum-exp of one query block: online softmax over the key tiles."""
        pid_m, bn = tl.program_id(0), tl.program_id(1)
        b, head = (bn // n).to(tl.int64), bn % n
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        offs_t = tl.arange(0, ROWS * BLOCK_W)
        m_valid = offs_m < L
        k_base, v_base = K + b * skb + head * skn, V + b * svb + head * svn
        rel_h_ptr = REL_H + bn.to(tl.int64) * L * h
        q = _rows(Q + b * sqb + head * sqn, offs_m, sql, m_valid, offs_d, D)
        rel_w_tile = _rel_w_tile(REL_W + bn.to(tl.int64) * L * w, offs_m, m_valid, offs_t, w, BLOCK_W)
        m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
        for ky0 in range(0, h, ROWS):
            ky, offs_n, key_valid = _key_tile(ky0, offs_t, h, w, BLOCK_W)
            k = _rows(k_base, offs_n, skl, key_valid, offs_d, D)
            v = _rows(v_base, offs_n, svl, key_valid, offs_d, D)
            s = _scores(q, k, rel_h_ptr, rel_w_tile, offs_m, m_valid, ky, key_valid, h, scale, PRECISION)
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.exp(s - m_new[:, None])
            alpha = tl.exp(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            m_i = m_new
        tl.store(OUT + b * sob + head * son + offs_m[:, None] * sol + offs_d[None, :],
                 (acc / l_i[:, None]).to(OUT.dtype.element_ty), mask=m_valid[:, None] & (offs_d < D)[None, :])
        tl.store(LSE + bn.to(tl.int64) * L + offs_m, m_i + tl.log(l_i), mask=m_valid)

    @triton.jit
    def _backward_keys_kernel(Q, K, V, REL_H, REL_W, DO, LSE, DELTA, sqb, sqn, sql, skb, skn, skl, svb, svn, svl,
                              sob, son, sol, DK, DV, n, L, D, h, w, scale, PRECISION: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_W: tl.constexpr,
                              ROWS: tl.constexpr):
        """dK = scale * dS^T Q and dV = P^T dO of one key tile, over all query blocks."""
        pid_k, bn = tl.program_id(0), tl.program_id(1)
        b, head = (bn // n).to(tl.int64), bn % n
        offs_d = tl.arange(0, BLOCK_D)
        offs_t = tl.arange(0, ROWS * BLOCK_W)
        ky, offs_n, key_valid = _key_tile(pid_k * ROWS, offs_t, h, w, BLOCK_W)
        q_base, do_base = Q + b * sqb + head * sqn, DO + b * sob + head * son
        rel_h_ptr, rel_w_ptr = REL_H + bn.to(tl.int64) * L * h, REL_W + bn.to(tl.int64) * L * w
        k = _rows(K + b * skb + head * skn, offs_n, skl, key_valid, offs_d, D)
        v = _rows(V + b * svb + head * svn, offs_n, svl, key_valid, offs_d, D)
        dk = tl.zeros((ROWS * BLOCK_W, BLOCK_D), tl.float32)
        dv = tl.zeros((ROWS * BLOCK_W, BLOCK_D), tl.float32)
        for m0 in range(0, L, BLOCK_M):
            offs_m = m0 + tl.arange(0, BLOCK_M)
            m_valid = offs_m < L
            q = _rows(q_base, offs_m, sql, m_valid, offs_d, D)
            do = _rows(do_base, offs_m, sol, m_valid, offs_d, D)
            lse = tl.load(LSE + bn.to(tl.int64) * L + offs_m, mask=m_valid, other=0.0)
            delta = tl.load(DELTA + bn.to(tl.int64) * L + offs_m, mask=m_valid, other=0.0)
            rel_w_tile = _rel_w_tile(rel_w_ptr, offs_m, m_valid, offs_t, w, BLOCK_W)
            p, ds = _score_grads(q, k, v, do, lse, delta, rel_h_ptr, rel_w_tile, offs_m, m_valid, ky, key_valid, h,
                                 scale, PRECISION)
            dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
            dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
        # dK and dV are contiguous (B, n, L, D)
        out = bn.to(tl.int64) * L * D + offs_n[:, None] * D + offs_d[None, :]
        mask = key_valid[:, None] & (offs_d < D)[None, :]
        tl.store(DK + out, (dk * scale).to(DK.dtype.element_ty), mask=mask)
        tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=mask)

    @triton.jit
    def _backward_queries_kernel(Q, K, V, REL_H, REL_W, DO, LSE, DELTA, sqb, sqn, sql, skb, skn, skl, svb, svn,
                                 svl, sob, son, sol, DQ, D_REL_H, D_REL_W, n, L, D, h, w, scale,
                                 PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                                 BLOCK_W: tl.constexpr, ROWS: tl.constexpr):
        """dQ = scale * dS K and the bias tables' gradients of one query block, over all key tiles: d rel_h[i, ky]
        sums dS over key row ky, d rel_w[i, kx] over key column kx. The program owns its queries' rows of both
        tables, so no atomics."""
        pid_m, bn = tl.program_id(0), tl.program_id(1)
        b, head = (bn // n).to(tl.int64), bn % n
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        offs_t = tl.arange(0, ROWS * BLOCK_W)
        offs_r = tl.arange(0, ROWS)
        m_valid = offs_m < L
        k_base, v_base = K + b * skb + head * skn, V + b * svb + head * svn
        rel_h_ptr, d_rel_h_ptr = REL_H + bn.to(tl.int64) * L * h, D_REL_H + bn.to(tl.int64) * L * h
        q = _rows(Q + b * sqb + head * sqn, offs_m, sql, m_valid, offs_d, D)
        do = _rows(DO + b * sob + head * son, offs_m, sol, m_valid, offs_d, D)
        lse = tl.load(LSE + bn.to(tl.int64) * L + offs_m, mask=m_valid, other=0.0)
        delta = tl.load(DELTA + bn.to(tl.int64) * L + offs_m, mask=m_valid, other=0.0)
        rel_w_tile = _rel_w_tile(REL_W + bn.to(tl.int64) * L * w, offs_m, m_valid, offs_t, w, BLOCK_W)
        dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
        d_rel_w = tl.zeros((BLOCK_M, BLOCK_W), tl.float32)
        for ky0 in range(0, h, ROWS):
            ky, offs_n, key_valid = _key_tile(ky0, offs_t, h, w, BLOCK_W)
            k = _rows(k_base, offs_n, skl, key_valid, offs_d, D)
            v = _rows(v_base, offs_n, svl, key_valid, offs_d, D)
            _, ds = _score_grads(q, k, v, do, lse, delta, rel_h_ptr, rel_w_tile, offs_m, m_valid, ky, key_valid, h,
                                 scale, PRECISION)
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
            ds_rows = tl.reshape(ds, (BLOCK_M, ROWS, BLOCK_W))  # (query, key row, key column)
            rows = ky0 + offs_r
            tl.store(d_rel_h_ptr + offs_m[:, None] * h + rows[None, :], tl.sum(ds_rows, 2).to(D_REL_H.dtype.element_ty),
                     mask=m_valid[:, None] & (rows < h)[None, :])
            d_rel_w += tl.sum(ds_rows, 1)
        tl.store(DQ + bn.to(tl.int64) * L * D + offs_m[:, None] * D + offs_d[None, :],
                 (dq * scale).to(DQ.dtype.element_ty), mask=m_valid[:, None] & (offs_d < D)[None, :])
        offs_c = tl.arange(0, BLOCK_W)
        tl.store(D_REL_W + bn.to(tl.int64) * L * w + offs_m[:, None] * w + offs_c[None, :],
                 d_rel_w.to(D_REL_W.dtype.element_ty), mask=m_valid[:, None] & (offs_c < w)[None, :])

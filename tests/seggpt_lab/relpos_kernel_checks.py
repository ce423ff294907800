"""Checks of the fused relative-position attention kernel (`seggpt_lab.relpos_attention`) against the eager
reference: on a CUDA device when there is one, else on CPU in Triton's interpreter. Collected through
test_relpos_attention.py, which runs this file in a process with TRITON_INTERPRET=1 where there is no GPU
(the interpreter must be chosen before triton is imported)."""

from __future__ import annotations

import pytest
import torch

from seggpt_lab.relpos_attention import BLOCK_M, interpreting, relpos_attention
from tests.seggpt_lab.test_model import _eager_and, assert_agrees_with_eager

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def eager(q, k, v, rel_h, rel_w, scale):
    """The explicit reference: the (L, L) bias rel_h[i, ky] + rel_w[i, kx], float64."""
    B, n, L, _ = q.shape
    h, w = rel_h.shape[-1], rel_w.shape[-1]
    q, k, v, rel_h, rel_w = (t.double() for t in (q, k, v, rel_h, rel_w))
    bias = (rel_h.view(B, n, L, h, 1) + rel_w.view(B, n, L, 1, w)).reshape(B, n, L, L)
    return ((q * scale) @ k.transpose(-2, -1) + bias).softmax(-1) @ v


def operands(B, n, h, w, d, dtype, seed=0):
    """q, k, v as the model makes them (strided views of one qkv tensor), the two bias tables, all leaves."""
    g = torch.Generator().manual_seed(seed)
    L = h * w
    qkv = torch.randn(B, L, 3, n, d, generator=g).permute(2, 0, 3, 1, 4).to(DEVICE, dtype).requires_grad_()
    # bias tables of the size the model's q . R products have, so that they matter against q k^T
    tables = [(torch.randn(B, n, L, s, generator=g) * 2).to(DEVICE, dtype).requires_grad_() for s in (h, w)]
    return qkv, tables


def run(impl, qkv, tables, scale, grad_out):
    """Output and the gradients of qkv and both tables."""
    for t in (qkv, *tables):
        t.grad = None
    q, k, v = qkv.unbind(0)
    out = impl(q, k, v, *tables, scale)
    out.backward(grad_out.to(out.dtype))
    return [out.detach().double()] + [t.grad.double() for t in (qkv, *tables)]


# grids: h != w; w below, at and above the 16-key minimum tile; h not a multiple of the rows per tile;
# L below and above a query block; head dims that are and are not powers of two
SHAPES = [(2, 2, 5, 3, 8), (1, 1, 6, 20, 24), (1, 2, 7, 16, 16), (1, 3, 9, 33, 12)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_output_and_all_five_gradients_equal_the_eager_reference(shape):
    B, n, h, w, d = shape
    qkv, tables = operands(B, n, h, w, d, torch.float32)
    scale = d ** -0.5
    grad_out = torch.randn(B, n, h * w, d, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    got = run(relpos_attention, qkv, tables, scale, grad_out)
    want = run(eager, qkv, tables, scale, grad_out)
    for name, a, b in zip(["out", "qkv", "rel_h", "rel_w"], got, want, strict=True):
        assert b.abs().max() > 1e-3, name  # every gradient is there to compare
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_shapes_cover_several_query_blocks_and_partial_key_tiles():
    assert any(h * w > BLOCK_M for _, _, h, w, _ in SHAPES)
    assert any(h * w < BLOCK_M for _, _, h, w, _ in SHAPES)


# Triton 3.8's interpreter returns garbage from tl.dot on bfloat16 tiles (a 16 x 16 product is off by 1e10);
# compiled kernels are not affected, so bfloat16 is checked on GPUs only
BF16 = pytest.param(torch.bfloat16, marks=pytest.mark.skipif(interpreting(), reason="interpreter's bf16 tl.dot"))


@pytest.mark.parametrize("dtype", [BF16, torch.float16], ids=str)
def test_16_bit_operands_agree_with_the_float32_reference_within_their_precision(dtype):
    B, n, h, w, d = 2, 2, 6, 5, 16
    qkv, tables = operands(B, n, h, w, d, dtype)
    grad_out = torch.randn(B, n, h * w, d, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    got = run(relpos_attention, qkv, tables, d ** -0.5, grad_out)
    assert got[0].dtype == torch.float64 and qkv.grad.dtype == dtype
    want = run(eager, qkv, tables, d ** -0.5, grad_out)
    eps = torch.finfo(dtype).eps
    for name, a, b in zip(["out", "qkv", "rel_h", "rel_w"], got, want, strict=True):
        error = ((a - b).norm() / b.norm()).item()
        assert error < 4 * eps, f"{name}: relative error {error:.1e} against eps {eps:.1e}"


def test_model_with_the_fused_kernel_equals_the_eager_model_forward_and_backward():
    assert_agrees_with_eager("triton", DEVICE)


def test_mismatched_bias_tables_are_refused_in_one_line():
    qkv, (rel_h, rel_w) = operands(1, 1, 4, 3, 8, torch.float32)
    with pytest.raises(ValueError, match=r"rel_h \(1, 1, 12, 3\) and rel_w \(1, 1, 12, 3\) do not tile q"):
        relpos_attention(*qkv.unbind(0), rel_w, rel_w, 1.0)


def test_attention_dropout_is_refused_by_name():
    _, model, args = _eager_and("triton")
    for block in model.blocks:
        block.attn.attn_drop.p = 0.1
    with pytest.raises(ValueError, match="attn_impl='triton' has no attention dropout"):
        model.to(DEVICE)(*(a.to(DEVICE) for a in args))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="memory is measured on a GPU")
def test_no_dense_bias_is_formed():
    B, n, h, w, d = 8, 16, 56, 28, 64  # ViT-L's grid at 896 x 448: an (L, L) float32 bias would be 1.3 GiB
    qkv, tables = operands(B, n, h, w, d, torch.bfloat16)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    q, k, v = qkv.unbind(0)
    relpos_attention(q, k, v, *tables, d ** -0.5).sum().backward()
    torch.cuda.synchronize()
    dense_bias = B * n * (h * w) ** 2 * 2
    assert torch.cuda.max_memory_allocated() - before < dense_bias / 4

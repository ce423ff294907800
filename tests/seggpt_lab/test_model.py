from __future__ import annotations

import pytest
import torch

from seggpt_lab.canvas import make_canvas
from seggpt_lab.model import SegGPT, create_model, masked_smooth_l1, seggpt_vit_large

TINY = {"img_size": (64, 32), "patch_size": 8, "embed_dim": 32, "depth": 5, "num_heads": 4,
        "merge_index": 1, "feature_indices": (1, 3, 4), "decoder_embed_dim": 8, "pretrain_img_size": 32}


def tiny(**overrides) -> SegGPT:
    torch.manual_seed(0)
    model = SegGPT(**{**TINY, **overrides}).eval()
    with torch.no_grad():  # random everywhere, so that no parameter can be silently ignored
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def inputs(batch: int, size=(32, 32), seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    prompt, query, mask = (torch.randn(batch, 3, *size, generator=g) for _ in range(3))
    return make_canvas(prompt, query), make_canvas(mask, mask)


def test_released_vit_large_has_the_published_parameter_count():
    with torch.device("meta"):
        model = seggpt_vit_large()
    assert sum(p.numel() for p in model.parameters()) == 370_723_203
    assert model.blocks[0].attn.rel_pos_h.shape == (111, 64)
    assert model.blocks[0].attn.rel_pos_w.shape == (55, 64)


@pytest.mark.parametrize("name", ["seggpt_vit_base", "seggpt_vit_small", "seggpt_vit_tiny"])
def test_presets_run_on_any_canvas_of_patch_multiples(name):
    model = create_model(name, img_size=(64, 32), patch_size=16, depth=3, feature_indices=(2,)).eval()
    image, target = inputs(2)
    out = model(image, target, model.query_mask(2), torch.tensor([0, 1]))
    assert out.shape == (2, 3, 64, 32)
    assert model.blocks[0].attn.rel_pos_h.shape[0] == 2 * 4 - 1


def test_bad_sizes_are_rejected_with_a_message():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        SegGPT(**{**TINY, "img_size": (60, 32)})
    with pytest.raises(ValueError, match="merge_index"):
        SegGPT(**{**TINY, "merge_index": 3})
    with pytest.raises(ValueError, match="unknown SegGPT preset"):
        create_model("seggpt_vit_huge")


def test_initialisations_scale_the_linears_as_documented():
    torch.manual_seed(0)
    official, xavier = SegGPT(**TINY), SegGPT(**TINY, init="xavier")
    for name in ("blocks.0.attn.qkv.weight", "blocks.4.mlp.fc2.weight", "decoder_embed.weight"):
        a, b = official.get_parameter(name), xavier.get_parameter(name)
        fan_out, fan_in = b.shape
        assert a.std().item() == pytest.approx(0.02, rel=0.1)  # timm cuts at +-2 absolute: a plain normal here
        assert b.std().item() == pytest.approx((2 / (fan_in + fan_out)) ** 0.5, rel=0.1)  # Glorot's variance
        assert b.abs().max() <= (6 / (fan_in + fan_out)) ** 0.5
    assert torch.equal(xavier.blocks[0].attn.qkv.bias, torch.zeros(3 * 32))
    with pytest.raises(ValueError, match="init must be"):
        SegGPT(**TINY, init="kaiming")


def test_query_mask_covers_exactly_the_bottom_half():
    model = tiny()
    mask = model.query_mask(3)
    assert mask.shape == (3, 32)
    assert mask[:, :16].sum() == 0 and mask[:, 16:].all()


def test_seg_type_selects_the_type_token_per_sample():
    model = tiny()
    image, target = inputs(2)
    image, target = image[:1].expand(2, -1, -1, -1), target[:1].expand(2, -1, -1, -1)
    with torch.no_grad():
        out = model(image, target, model.query_mask(2), torch.tensor([0, 1]))
        sem = model(image[:1], target[:1], model.query_mask(1), torch.tensor([0]))
        ins = model(image[:1], target[:1], model.query_mask(1), torch.tensor([1]))
    torch.testing.assert_close(out[0], sem[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[1], ins[0], rtol=0, atol=1e-5)
    assert (sem - ins).abs().max() > 1e-3


def test_masked_target_content_is_ignored_but_visible_target_matters():
    model = tiny()
    image, target = inputs(1)
    other = target.clone()
    other[:, :, 32:] = torch.randn_like(other[:, :, 32:])  # change only the masked query half
    seg = torch.tensor([1])
    with torch.no_grad():
        a = model(image, target, model.query_mask(1), seg)
        b = model(image, other, model.query_mask(1), seg)
        c = model(image, other, torch.zeros(1, 32, dtype=torch.bool), seg)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3


def _eager_and(impl: str):
    # a non-square grid (h != w), so that a swapped row/column term or a wrong one-hot code shows
    shape = {"img_size": (64, 48), "drop_path_rate": 0.0}
    image, target = inputs(2, size=(32, 48))
    reference, model = tiny(attn_impl="eager", **shape).train(), tiny(attn_impl=impl, **shape).train()
    return reference, model, (image, target, torch.rand(2, reference.num_patches) < 0.5, torch.tensor([0, 1]))


def assert_agrees_with_eager(impl: str, device: torch.device | str = "cpu") -> None:
    """A tiny model with attention `impl` gives the eager model's output and parameter gradients."""
    reference, model, args = _eager_and(impl)
    outputs, grads = [], []
    for m in (reference.to(device), model.to(device)):
        out = m(*(a.to(device) for a in args))
        (out * torch.linspace(-1, 1, out.numel(), device=device).view_as(out)).sum().backward()
        outputs.append(out.detach())
        grads.append({n: p.grad for n, p in m.named_parameters()})
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=1e-5)
    for name in ("blocks.0.attn.rel_pos_h", "blocks.0.attn.rel_pos_w", "blocks.3.attn.qkv.weight"):
        assert grads[0][name].abs().max() > 0
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", ["sdpa", "augmented"])
def test_attention_implementations_agree_with_the_eager_reference_forward_and_backward(impl):
    assert_agrees_with_eager(impl)


def test_flex_attention_agrees_with_the_eager_reference():
    # forward only: FlexAttention has no backward on CPU (benchmarks/gpu_train_speed.py checks its gradients on GPU)
    reference, model, args = _eager_and("flex")
    with torch.no_grad():
        torch.testing.assert_close(model(*args), reference(*args), rtol=0, atol=1e-5)


def test_unknown_attention_implementation_is_refused_by_name():
    with pytest.raises(ValueError, match="attn_impl must be one of .*'flash'"):
        tiny(attn_impl="flash")
    with pytest.raises(ValueError, match="attn_impl must be one of"):
        tiny().set_attn_impl("dense")
    model = tiny()
    model.blocks[0].attn.attn_impl = "dense"  # set on the attribute, as benchmarks do
    with pytest.raises(ValueError, match="attn_impl must be one of .*'dense'"):
        model(*inputs(1), model.query_mask(1), torch.tensor([0]))


def test_attention_bias_chunks_agree_with_one_chunk(monkeypatch):
    import seggpt_lab.model as model_module

    model = tiny()
    image, target = inputs(2)
    args = (image, target, model.query_mask(2), torch.tensor([0, 1]))
    with torch.no_grad():
        whole = model(*args)
        monkeypatch.setattr(model_module, "BIAS_CHUNK_BYTES", 1)  # one patch row per chunk
        chunked = model(*args)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


def test_official_ensemble_of_identical_prompts_is_the_single_prompt_output():
    model = tiny()
    image, target = inputs(1)
    seg = torch.tensor([1])
    with torch.no_grad():
        single = model(image, target, model.query_mask(1), seg, feature_ensemble=True)
        for n in (2, 3, 4):
            many = model(image.expand(n, -1, -1, -1), target.expand(n, -1, -1, -1), model.query_mask(n),
                         seg.expand(n), feature_ensemble=True)
            assert torch.equal(many[0], single[0]), n


def test_ensemble_averages_the_query_half_over_prompts():
    model = tiny()
    image, target = inputs(3)
    query = image[:1, :, 32:].expand(3, -1, -1, -1)
    image = torch.cat([image[:, :, :32], query], dim=2)
    args = (image, target, model.query_mask(3), torch.ones(3, dtype=torch.long))
    with torch.no_grad():
        off = model(*args, feature_ensemble=True)
        model.ensemble_mode = "huggingface"
        hf = model(*args, feature_ensemble=True)
        plain = model(*args)
    # every prompt now sees the same query features: predictions agree below the boundary row
    for out in (off, hf):
        torch.testing.assert_close(out[1:, :, 33:], out[:1, :, 33:].expand(2, -1, -1, -1), rtol=0, atol=1e-5)
    assert (plain[0, :, 33:] - plain[1, :, 33:]).abs().max() > 1e-3
    assert (off - hf).abs().max() > 1e-4  # the two semantics differ at the merge block


def test_huggingface_mode_mixes_streams_even_with_one_prompt():
    model = tiny()
    image, target = inputs(1)
    args = (image, target, model.query_mask(1), torch.tensor([0]))
    with torch.no_grad():
        plain = model(*args)
        torch.testing.assert_close(model(*args, feature_ensemble=True), plain, rtol=0, atol=0)
        model.ensemble_mode = "huggingface"
        assert (model(*args, feature_ensemble=True) - plain).abs().max() > 1e-4


def test_loss_is_the_mean_over_masked_patches_and_channels():
    torch.manual_seed(0)
    pred, gt = torch.randn(2, 3, 64, 32), torch.randn(2, 3, 64, 32)
    mask = torch.zeros(2, 8, 4, dtype=torch.bool)
    mask[0, 5, 1] = True
    mask[1, 6:, :] = True
    per_pixel = torch.nn.functional.smooth_l1_loss(pred, gt, reduction="none", beta=0.01)
    expected = torch.cat([per_pixel[0, :, 40:48, 8:16].flatten(), per_pixel[1, :, 48:, :].flatten()]).mean()
    torch.testing.assert_close(masked_smooth_l1(pred, gt, mask.flatten(1), 8), expected)


def test_loss_broadcasts_a_single_mask_over_the_batch():
    torch.manual_seed(0)
    pred, gt = torch.randn(4, 3, 64, 32), torch.randn(4, 3, 64, 32)
    mask = torch.rand(1, 32) < 0.5
    torch.testing.assert_close(masked_smooth_l1(pred, gt, mask, 8), masked_smooth_l1(pred, gt, mask.expand(4, -1), 8))


def test_loss_valid_weights_drop_pixels_from_numerator_and_denominator():
    torch.manual_seed(0)
    pred, gt = torch.randn(1, 3, 64, 32), torch.randn(1, 3, 64, 32)
    mask = torch.ones(1, 32, dtype=torch.bool)
    valid = torch.zeros(1, 1, 64, 32)
    valid[..., :10, :] = 1
    per_pixel = torch.nn.functional.smooth_l1_loss(pred, gt, reduction="none", beta=0.01)
    torch.testing.assert_close(masked_smooth_l1(pred, gt, mask, 8, valid), per_pixel[..., :10, :].mean())


def test_gradient_checkpointing_gives_the_same_gradients():
    plain, ckpt = tiny(drop_path_rate=0.0), tiny(drop_path_rate=0.0, grad_checkpointing=True)
    image, target = inputs(2)
    grads = []
    for model in (plain, ckpt):
        model.train()
        loss, _ = model.forward_loss(image, target, model.query_mask(2), torch.tensor([0, 1]), target)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)
    assert grads[0].abs().sum() > 0


def test_drop_path_acts_in_training_only():
    model = tiny(drop_path_rate=0.5)
    image, target = inputs(2)
    args = (image, target, model.query_mask(2), torch.tensor([0, 1]))
    with torch.no_grad():
        a, b = model(*args), model(*args)
        model.train()
        torch.manual_seed(0)
        c = model(*args)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-4


def test_eval_predictions_do_not_depend_on_batch_mates():
    model = tiny()
    image, target = inputs(3)
    seg = torch.tensor([0, 1, 1])
    with torch.no_grad():
        batched = model(image, target, model.query_mask(3), seg)
        for i in range(3):
            alone = model(image[i : i + 1], target[i : i + 1], model.query_mask(1), seg[i : i + 1])
            assert torch.equal(batched[i], alone[0]), i


@pytest.mark.parametrize("impl", ["auto", "augmented"])
def test_compiled_blocks_agree_with_eager_forward_and_backward(impl):
    # "aot_eager" traces the blocks with dynamo and AOTAutograd as inductor would, without a C++ toolchain
    reference, model, args = _eager_and(impl)
    reference.set_attn_impl(impl)
    model.compile_blocks(backend="aot_eager", dynamic=False)
    for m in (reference, model):
        m(*args).square().mean().backward()
    assert all(block._compiled_call_impl is not None for block in model.blocks)
    for (name, a), b in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_the_query_prediction_depends_on_the_prompt_target():
    """No defect cuts the prompt off: with the query half masked, the query's prediction changes when only the
    prompt's target changes, and its loss has a gradient with respect to every prompt target patch's pixels."""
    model = tiny()
    image, target = inputs(1)
    mask, seg = model.query_mask(1), torch.tensor([0])
    other = target.clone()
    other[:, :, :32] = torch.randn_like(other[:, :, :32])  # another prompt mask, same images
    with torch.no_grad():
        a, b = model(image, target, mask, seg), model(image, other, mask, seg)
    assert (a[..., 32:, :] - b[..., 32:, :]).abs().max() > 1e-3
    prompt_target = target.clone().requires_grad_(True)
    pred = model(image, prompt_target, mask, seg)
    pred[..., 32:, :].square().sum().backward()
    per_patch = prompt_target.grad[0, :, :32].abs().sum(0).unfold(0, 8, 8).unfold(1, 8, 8).sum((-1, -2))
    assert (per_patch > 0).all()  # (4, 4) prompt patches, each one read

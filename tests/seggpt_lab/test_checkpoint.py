"""Parity with transformers' SegGPT and checkpoint interchange; reference models are random, nothing downloaded."""

from __future__ import annotations

import logging
import pickle

import pytest
import torch

from seggpt_lab.canvas import make_canvas
from seggpt_lab.checkpoint import (
    CheckpointError,
    export_huggingface,
    hf_key_map,
    initialize_from,
    load_pretrained,
    save_checkpoint,
)

transformers = pytest.importorskip("transformers")

TINY_HF = {"hidden_size": 32, "num_hidden_layers": 6, "num_attention_heads": 4, "image_size": [64, 32],
           "patch_size": 8, "pretrain_image_size": 32, "decoder_hidden_size": 8, "merge_index": 1,
           "intermediate_hidden_state_indices": [1, 3, 5], "mlp_dim": 64}


def random_hf(config: dict, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.SegGptForImageSegmentation(transformers.SegGptConfig(**config)).eval()
    with torch.no_grad():  # perturb every tensor, layer norms included, so that a swapped name shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def pair_inputs(batch: int, side: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, side, side, generator=g) for _ in range(4)]  # query, prompt, mask, label


def check_parity(hf, ours, side: int, batch: int, atol: float) -> None:
    query, prompt, mask, label = pair_inputs(batch, side)
    image, target, gt = make_canvas(prompt, query), make_canvas(mask, mask), make_canvas(mask, label)
    g = torch.Generator().manual_seed(2)
    random_mask = torch.rand(batch, ours.num_patches, generator=g) < 0.75
    for embedding_type, seg_type in (("instance", 1), ("semantic", 0)):
        seg = torch.full((batch,), seg_type)
        with torch.no_grad():  # the default query mask on one pair; random per-sample masks on the batch
            theirs = hf(pixel_values=query[:1], prompt_pixel_values=prompt[:1], prompt_masks=mask[:1],
                        embedding_type=embedding_type).pred_masks
            mine = ours(image[:1], target[:1], ours.query_mask(1), seg[:1])
            assert (theirs - mine).abs().max() <= atol, embedding_type

            out = hf(pixel_values=query, prompt_pixel_values=prompt, prompt_masks=mask, labels=label,
                     bool_masked_pos=random_mask, embedding_type=embedding_type)
            loss, mine = ours.forward_loss(image, gt, random_mask, seg, gt)
        assert (out.pred_masks - mine).abs().max() <= atol, embedding_type
        torch.testing.assert_close(loss, out.loss, rtol=1e-5, atol=0)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    hf = random_hf(TINY_HF)
    path = tmp_path_factory.mktemp("hf_tiny")
    hf.save_pretrained(path)
    return hf, path


def test_tiny_transformers_model_parity(tiny_pair):
    hf, path = tiny_pair
    ours = load_pretrained(path).eval()
    assert ours.config["feature_indices"] == (1, 3, 5) and ours.config["merge_index"] == 1
    check_parity(hf, ours, side=32, batch=3, atol=1e-4)


@pytest.mark.slow
def test_vit_large_transformers_model_parity(tmp_path):
    hf = random_hf({})
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path).eval()
    assert sum(p.numel() for p in ours.parameters()) == 370_723_203
    check_parity(hf, ours, side=448, batch=2, atol=1e-4)


def test_load_pretrained_overrides_the_attention_implementation(tiny_pair):
    """The runtime option `load_pretrained`'s docstring names is `attn_impl` (there is no `fused_attn`)."""
    _, path = tiny_pair
    ours = load_pretrained(path, attn_impl="eager")
    assert {block.attn.attn_impl for block in ours.blocks} == {"eager"}
    with pytest.raises(TypeError, match="fused_attn"):
        load_pretrained(path, fused_attn=True)


def test_feature_ensemble_matches_transformers_in_huggingface_mode(tiny_pair):
    hf, path = tiny_pair
    ours = load_pretrained(path, ensemble_mode="huggingface").eval()
    query, prompt, mask, _ = pair_inputs(3, 32)
    query = query[:1].expand(3, -1, -1, -1)  # one query, three prompts
    with torch.no_grad():
        theirs = hf(pixel_values=query, prompt_pixel_values=prompt, prompt_masks=mask,
                    feature_ensemble=True).pred_masks
        mine = ours(make_canvas(prompt, query), make_canvas(mask, mask), ours.query_mask(3),
                    torch.ones(3, dtype=torch.long), feature_ensemble=True)
        official = load_pretrained(path).eval()(make_canvas(prompt, query), make_canvas(mask, mask),
                                                ours.query_mask(3), torch.ones(3, dtype=torch.long),
                                                feature_ensemble=True)
    assert (theirs - mine).abs().max() <= 1e-4
    assert (theirs - official).abs().max() > 1e-4


def official_state(hf_model, ours_keys) -> dict:
    """An official-named state dict made from a transformers model through the published rename table."""
    inverse = {v: k for k, v in hf_key_map(ours_keys).items()}
    return {inverse[k]: v for k, v in hf_model.state_dict().items()}


def test_official_to_ours_to_huggingface_round_trip(tiny_pair, tmp_path):
    hf, path = tiny_pair
    keys = list(load_pretrained(path).state_dict())
    torch.save({"model": official_state(hf, keys)}, tmp_path / "seggpt_official.pth")
    ours = load_pretrained(tmp_path / "seggpt_official.pth").eval()
    export_huggingface(ours, tmp_path / "exported")
    back, info = transformers.SegGptForImageSegmentation.from_pretrained(tmp_path / "exported",
                                                                          output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    query, prompt, mask, _ = pair_inputs(2, 32)
    with torch.no_grad():
        a = hf(pixel_values=query, prompt_pixel_values=prompt, prompt_masks=mask).pred_masks
        b = back.eval()(pixel_values=query, prompt_pixel_values=prompt, prompt_masks=mask).pred_masks
        c = ours(make_canvas(prompt, query), make_canvas(mask, mask), ours.query_mask(2), torch.ones(2).long())
    assert torch.equal(a, b)
    assert (a - c).abs().max() <= 1e-4


def test_own_checkpoint_round_trip_keeps_architecture(tiny_pair, tmp_path):
    _, path = tiny_pair
    ours = load_pretrained(path)
    save_checkpoint(ours, tmp_path / "ours.pt")
    again = load_pretrained(tmp_path / "ours.pt")
    assert again.config == ours.config
    for (k, a), b in zip(ours.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_initialize_from_a_timm_vit_and_from_a_seggpt_checkpoint(tiny_pair, tmp_path):
    from safetensors.torch import save_file
    from timm.models.vision_transformer import VisionTransformer

    from seggpt_lab.model import SegGPT

    ours = load_pretrained(tiny_pair[1])
    fresh = SegGPT(**ours.config)
    vit = VisionTransformer(img_size=48, patch_size=8, embed_dim=32, depth=6, num_heads=4, mlp_ratio=2.0)
    save_file({f"encoder.{k}": v.contiguous() for k, v in vit.state_dict().items()}, tmp_path / "vit.safetensors")
    report = initialize_from(fresh, tmp_path / "vit.safetensors")  # a prefix and a 6 x 6 position grid
    assert torch.equal(fresh.blocks[5].mlp.fc2.weight, vit.blocks[5].mlp.fc2.weight)
    assert torch.equal(fresh.patch_embed.proj.weight, vit.patch_embed.proj.weight)
    assert "pos_embed" in report["loaded"] and fresh.pos_embed.shape == (1, 4 * 4 + 1, 32)  # resampled to 4 x 4
    assert "blocks.0.attn.rel_pos_h" in report["missing"] and "decoder_embed.weight" in report["missing"]
    assert "cls_token" in report["unexpected"] and "head.weight" in report["unexpected"]
    again = SegGPT(**ours.config)
    report = initialize_from(again, tiny_pair[1])  # an official-format SegGPT checkpoint: everything fits
    assert not report["missing"] and not report["unexpected"] and not report["mismatched"]
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values(),
                                                  strict=True))
    torch.save({"model": {"weight": torch.zeros(2)}}, tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="neither a SegGPT checkpoint nor a ViT state dict"):
        initialize_from(again, tmp_path / "junk.pt")


def test_lightning_checkpoint_loads_from_its_state_dict(tiny_pair, tmp_path):
    _, path = tiny_pair
    ours = load_pretrained(path)
    state = {f"model.{k}": v for k, v in ours.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "last.ckpt")
    again = load_pretrained(tmp_path / "last.ckpt")
    assert torch.equal(again.decoder_embed.weight, ours.decoder_embed.weight)


def test_painter_checkpoint_gets_fresh_type_tokens_and_a_warning(tiny_pair, tmp_path, caplog):
    hf, path = tiny_pair
    state = official_state(hf, list(load_pretrained(path).state_dict()))
    del state["type_token_cls"], state["type_token_ins"]
    torch.save({"model": state}, tmp_path / "painter.pth")
    with caplog.at_level(logging.WARNING):
        model = load_pretrained(tmp_path / "painter.pth")
    assert "Painter checkpoint" in caplog.text
    assert torch.equal(model.mask_token, state["mask_token"])
    assert model.type_token_cls.abs().sum() > 0


def test_bare_segggpt_model_directory_loads_backbone(tiny_pair, tmp_path, caplog):
    hf, _ = tiny_pair
    hf.model.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        model = load_pretrained(tmp_path)
    assert "decoder head is freshly initialised" in caplog.text
    assert torch.equal(model.pos_embed, hf.model.embeddings.position_embeddings)


def test_mismatched_checkpoint_lists_every_bad_key(tiny_pair, tmp_path):
    hf, path = tiny_pair
    state = official_state(hf, list(load_pretrained(path).state_dict()))
    del state["norm.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["mask_token"] = torch.zeros(1, 1, 1, 7)
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_pretrained(tmp_path / "bad.pth")
    message = str(err.value)
    assert "bad.pth" in message and "norm.weight" in message and "extra.weight" in message
    assert "mask_token: checkpoint (1, 1, 1, 7) vs model (1, 1, 1, 32)" in message


class _Exploit:
    def __reduce__(self):
        import os

        return os.system, ("touch /tmp/seggpt_lab_pwned",)


def test_checkpoints_cannot_run_code(tmp_path):
    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"model": _Exploit()}, protocol=2))
    with pytest.raises(CheckpointError, match="evil.pth: refused: the checkpoint holds pickled objects"):
        load_pretrained(bad)
    import os

    assert not os.path.exists("/tmp/seggpt_lab_pwned")


def test_missing_paths_and_foreign_directories_say_what_is_wrong(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_pretrained(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="without config.json"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "vit"}')
    with pytest.raises(CheckpointError, match="model_type is 'vit'"):
        load_pretrained(tmp_path)


def test_unsupported_hf_options_are_refused(tiny_pair, tmp_path):
    hf, _ = tiny_pair
    hf.config.hidden_act = "relu"
    try:
        hf.save_pretrained(tmp_path)
    finally:
        hf.config.hidden_act = "gelu"
    with pytest.raises(CheckpointError, match="unsupported SegGptConfig values {'hidden_act': 'relu'}"):
        load_pretrained(tmp_path)


def test_single_mask_broadcast_is_normalised_per_batch_unlike_transformers(tiny_pair):
    hf, path = tiny_pair
    ours = load_pretrained(path).eval()
    query, prompt, mask, label = pair_inputs(4, 32)
    one_mask = torch.rand(1, ours.num_patches, generator=torch.Generator().manual_seed(3)) < 0.5
    gt = make_canvas(mask, label)
    with torch.no_grad():
        theirs = hf(pixel_values=query, prompt_pixel_values=prompt, prompt_masks=mask, labels=label,
                    bool_masked_pos=one_mask).loss
        loss, _ = ours.forward_loss(make_canvas(prompt, query), gt, one_mask, torch.ones(4).long(), gt)
        per_sample, _ = ours.forward_loss(make_canvas(prompt, query), gt, one_mask.expand(4, -1),
                                          torch.ones(4).long(), gt)
    torch.testing.assert_close(loss, per_sample)
    torch.testing.assert_close(loss * 4, theirs, rtol=1e-5, atol=0)  # theirs divides by one sample's count

"""The pretraining DataModule: sources, on-demand conversion, batches, pairing and mix-context rates, seeding."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.augment import PairTransform, finish_batch
from datamodules.convert import convert
from datamodules.pairing import PairSampler
from datamodules.pretrain import PretrainDataModule, ShardSource
from datamodules.schema import decode_png16 as _decode_png16
from datamodules.shards import sample_stream
from datamodules.sources.synthetic import Synthetic

SIZE = (32, 32)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 synthetic train scenes (32 px) in 3 shards, 40 val scenes in 1."""
    out = tmp_path_factory.mktemp("pretrain")
    convert(Synthetic(None, "train", samples=120, size=32), out, shard_size=40, progress=False)
    convert(Synthetic(None, "val", samples=40, size=32), out, shard_size=40, progress=False)
    return out / "synthetic"


def _transform(**kw) -> PairTransform:
    return PairTransform(**{"size": SIZE, "patch_size": 8, "on_device": True, **kw})


def _data(shards: Path, transform: dict | None = None, sampler: dict | None = None, **kw) -> PretrainDataModule:
    kw = {"batch_size": 4, "num_workers": 0, "batches_per_epoch": 5, **kw}
    source = {"path": str(shards), **kw.pop("source", {})}
    data = PretrainDataModule([ShardSource(**source)], _transform(**(transform or {})),
                              PairSampler(**{"seed": kw.get("seed", 0), **(sampler or {})}), **kw)
    data.setup("fit")
    return data


def _examples(data: PretrainDataModule, n: int) -> list[dict]:
    """The stream's first `n` examples as `PairTransform` made them (numpy arrays, seg_type an int), each with the
    running counts (`stats`) as they were when it was made: the stream batched one example a batch, unstacked."""
    data.dataset.batch_size = 1
    return [{k: v if k == "stats" else v[0].item() if v.dim() == 1 else v[0].numpy() for k, v in batch.items()}
            for batch in islice(iter(data.dataset), n)]


def test_batches_have_the_documented_types(shards: Path) -> None:
    data = _data(shards, val=ShardSource(str(shards), split="val"), val_episodes=6)
    batches = list(data.train_dataloader())
    assert len(batches) == 5
    batch = batches[0]
    # jitter and painting are left to the accelerator (on_after_batch_transfer)
    assert batch["jitter"].shape == (4, 2, 3, 7) and batch["palette"].shape[::2] == (4, 4)
    assert batch["label_canvas"].shape == (4, 1, 64, 32) and batch["label_canvas"].dtype == torch.int16
    assert batch["flip"].shape == (4, 2) and batch["flip"].dtype == torch.bool
    batch = finish_batch(batch)
    assert batch["image_canvas"].shape == (4, 3, 64, 32) and batch["image_canvas"].dtype == torch.uint8
    assert batch["target_canvas"].shape == (4, 3, 64, 32) and batch["target_canvas"].dtype == torch.uint8
    assert batch["valid"].shape == (4, 1, 64, 32) and batch["valid"].dtype == torch.uint8
    assert batch["bool_masked_pos"].shape == (4, 32) and batch["bool_masked_pos"].dtype == torch.bool
    assert batch["seg_type"].shape == (4,) and set(batch["seg_type"].tolist()) <= {0, 1}
    assert batch["stats"]["data/examples"] >= 4 and "skipped/synthetic" in batch["stats"]
    episodes = list(data.val_dataloader())
    assert len(episodes) == 6 and set(data.class_ids) >= {e["class_id"] for e in episodes}


def test_training_steps_get_jittered_canvases(shards: Path) -> None:
    """Lightning calls the DataModule's `on_after_batch_transfer`: the step sees jittered canvases, not the maps."""
    from lightning.pytorch import LightningModule, Trainer

    class Probe(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight, self.batches = torch.nn.Parameter(torch.zeros(())), []

        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            self.batches.append(batch)
            return self.weight * batch["image_canvas"].float().mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    probe, data = Probe(), _data(shards)
    raw = next(iter(data.train_dataloader()))
    data.train_dataloader().load_state_dict({"passes": 0})  # the fit replays the same pass
    Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False).fit(probe, datamodule=data)
    (batch,) = probe.batches
    assert "jitter" not in batch and batch["image_canvas"].dtype == torch.uint8
    assert {"jitter", "flip", "label_canvas", "palette"}.isdisjoint(batch)
    finished = finish_batch(dict(raw))  # the same batch, finished
    for key in ("image_canvas", "target_canvas", "valid"):
        torch.testing.assert_close(batch[key], finished[key], rtol=0, atol=0)


def test_realised_partner_rate_follows_self_prob(shards: Path) -> None:
    data = _data(shards, source={"task": "semantic"}, sampler={"self_prob": 0.5}, mix_prob=0.0)
    stats = _examples(data, 600)[-1]["stats"]
    semantic = stats["pairs/self"] + stats["pairs/partner"] + stats["pairs/fallback"]
    assert semantic == 600 and stats["pairs/instance"] == 0
    assert 0.42 <= stats["pairs/partner_rate"] <= 0.58  # 1 - self_prob, less a few cold-buffer fallbacks
    only_self = _data(shards, source={"task": "semantic"}, sampler={"self_prob": 1.0})
    assert _examples(only_self, 50)[-1]["stats"]["pairs/partner"] == 0


def test_task_override_pairs_panoptic_data_as_instances(shards: Path) -> None:
    data = _data(shards, source={"task": "instance"})
    examples = _examples(data, 40)
    assert all(e["seg_type"] == 1 for e in examples)
    assert examples[-1]["stats"]["pairs/self"] == 0


def test_only_the_label_map_a_pair_colours_is_decoded(shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream keeps label maps encoded: instance self-pairs of panoptic samples decode ins.png once each, never
    sem.png (before, every sample's two maps were decoded as it was read)."""
    import datamodules.schema as schema

    decoded = []
    monkeypatch.setattr(schema, "decode_png16", lambda data: decoded.append(data) or _decode_png16(data))
    data = _data(shards, source={"task": "instance"}, transform={"on_device": False})
    examples = _examples(data, 30)
    pairs = examples[-1]["stats"]["pairs/pairs"]
    assert pairs >= 30 and len(decoded) == pairs  # one map per pair: the query's, shared by both views
    # what the stream yields (and the partner buffer holds): PNG bytes, decoded on use
    samples = list(islice(sample_stream(data.dataset.streams[0].urls, 0, lazy_labels=True), 5))
    assert all(s.sem is None and s.ins is None and set(s.encoded) == {"sem", "ins"} for s in samples)
    assert all(np.array_equal(s.label("ins"), _decode_png16(s.encoded["ins"])) for s in samples)


def test_mix_context_rate_and_shared_colours(shards: Path) -> None:
    data = _data(shards, source={"task": "semantic"}, mix_prob=0.5, mix_pairs=2,
                 transform={"max_ids": 1, "on_device": False})
    examples = _examples(data, 300)
    stats = examples[-1]["stats"]
    # a mixed example consumes mix_pairs pairs: with p = 0.5 and 2 pairs each, a third of the examples are mixed
    assert 0.25 <= stats["data/mixed"] / stats["data/examples"] <= 0.42
    for e in examples:  # one colour mapping per example, mixed or not: with max_ids 1, one colour at most
        target = e["target_canvas"].reshape(3, -1).T
        colours = {tuple(c) for c in np.unique(target, axis=0).tolist()} - {(0, 0, 0)}
        assert len(colours) <= 1


def test_a_source_crops_at_its_own_scale(shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ShardSource.scale` (the paper's extra cropping of high-resolution sources) reaches every crop of that source,
    mixed or not; a source without one crops at the transform's `scale`."""
    import datamodules.augment as augment

    scales, crop_box = [], augment.crop_box

    def recorded(height: int, width: int, rng: np.random.Generator, scale: tuple[float, float], *args) -> tuple:
        scales.append(scale)
        return crop_box(height, width, rng, scale, *args)

    monkeypatch.setattr(augment, "crop_box", recorded)
    small, whole = (0.05, 0.1), (0.9, 1.0)
    _examples(_data(shards, source={"task": "semantic", "scale": list(small)}, transform={"scale": whole},
                    mix_prob=0.5), 30)
    assert len(scales) >= 60 and set(scales) == {small}
    scales.clear()
    data = PretrainDataModule([ShardSource(str(shards), name="a", scale=small), ShardSource(str(shards), name="b")],
                              _transform(scale=whole), PairSampler(), num_workers=0)
    data.setup("fit")
    _examples(data, 40)
    assert set(scales) == {small, whole} and 0.25 < scales.count(small) / len(scales) < 0.75  # weights 1:1
    with pytest.raises(ValueError, match="scale must satisfy"):
        ShardSource(str(shards), scale=(0.5, 0.2))


def test_jitter_settings_reach_the_views(shards: Path) -> None:
    """Painter's jitter (hue, p) set on the data module's transform: p = 0 leaves every view's colour map the
    identity."""
    maps = {}
    for p in (0.0, 1.0):
        data = _data(shards, transform={"jitter": [0.4, 0.4, 0.2, 0.1], "jitter_prob": p})
        batch = next(iter(data.train_dataloader()))
        maps[p] = batch["jitter"].flatten(0, 1)  # (B * 2, 3, 7)
    identity = torch.eye(3, 7, dtype=maps[0.0].dtype)
    assert all(torch.equal(m, identity) for m in maps[0.0]) and not any(torch.equal(m, identity) for m in maps[1.0])


def test_stream_is_deterministic_by_seed_and_pass(shards: Path) -> None:
    first = next(iter(_data(shards, seed=3).train_dataloader()))
    again = next(iter(_data(shards, seed=3).train_dataloader()))
    other = next(iter(_data(shards, seed=4).train_dataloader()))
    assert torch.equal(first["image_canvas"], again["image_canvas"])
    assert not torch.equal(first["image_canvas"], other["image_canvas"])
    loader = _data(shards, seed=3).train_dataloader()
    list(loader)
    second_pass = next(iter(loader))  # pass 1: seeded differently from pass 0
    assert loader.state_dict() == {"passes": 2}
    assert not torch.equal(first["image_canvas"], second_pass["image_canvas"])
    resumed = _data(shards, seed=3).train_dataloader()
    resumed.load_state_dict({"passes": 1})  # what a checkpoint saved after the first pass restores
    assert torch.equal(next(iter(resumed))["image_canvas"], second_pass["image_canvas"])


class RankTrainer:
    """What `PretrainDataModule.setup` reads of a trainer: rank `rank` of 2."""

    world_size = 2

    def __init__(self, rank: int) -> None:
        self.global_rank = rank


def test_ranks_get_disjoint_shards_and_equal_batches(shards: Path) -> None:
    urls, counts = [], []
    for rank in (0, 1):
        data = PretrainDataModule([ShardSource(str(shards))], _transform(), PairSampler(), batch_size=2, num_workers=0,
                                  batches_per_epoch=3)
        data.trainer = RankTrainer(rank)
        data.setup("fit")
        urls.append(set(data.dataset.streams[0].urls))
        counts.append(len(list(data.train_dataloader())))
    assert urls[0].isdisjoint(urls[1]) and len(urls[0] | urls[1]) == 3  # 3 shards: 2 + 1
    assert counts == [3, 3]


def test_configuration_errors_name_the_problem(tmp_path: Path, shards: Path) -> None:
    transform, sampler = _transform(), PairSampler()
    with pytest.raises(ValueError, match=r"sources\[0\].*weight must be > 0"):
        PretrainDataModule([ShardSource(str(shards), weight=0)], transform, sampler)
    with pytest.raises(ValueError, match="at least one shard source"):
        PretrainDataModule([], transform, sampler)
    missing = PretrainDataModule([ShardSource(str(tmp_path / "nothing"))], transform, sampler, num_workers=0)
    with pytest.raises(FileNotFoundError, match=r"nothing/train-index.json does not exist; convert"):
        missing.setup("fit")
    pattern = PretrainDataModule([ShardSource(str(tmp_path / "x-{000000..000002}.tar"))], transform, sampler,
                                 num_workers=0)
    with pytest.raises(FileNotFoundError, match=r"matches no shard \(3 of 3 missing"):
        pattern.setup("fit")
    with pytest.raises(ValueError, match="mask must be"):
        PairTransform(mask="everything")


def test_url_pattern_reads_the_shards(shards: Path) -> None:
    data = _data(shards, source={"path": str(shards / "train-{000000..000002}.tar")})
    assert len(data.dataset.streams[0].urls) == 3
    assert len(_examples(data, 5)) == 5


def test_shards_without_a_convert_record_are_used_with_a_warning(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "synthetic"
    source = ShardSource(str(folder), convert={"source": "synthetic", "samples": 4, "size": 32})
    source.ensure_converted()
    (folder / "train-convert.json").unlink()  # as shards converted by hand or by an older version
    with caplog.at_level("WARNING", logger="datamodules.pretrain"):
        source.ensure_converted()
    assert "without a record of how they were made" in caplog.text
    assert (folder / "train-index.json").is_file()


def test_missing_shards_are_converted_on_demand(tmp_path: Path) -> None:
    folder = tmp_path / "synthetic"
    source = ShardSource(str(folder), convert={"source": "synthetic", "samples": 12, "size": 32})
    data = PretrainDataModule([source], _transform(), PairSampler(), batch_size=2, num_workers=0, batches_per_epoch=2)
    data.prepare_data()
    assert (folder / "train-index.json").is_file()
    data.setup("fit")
    assert len(list(data.train_dataloader())) == 2
    wrong = ShardSource(str(tmp_path / "elsewhere"), convert={"source": "synthetic"})
    with pytest.raises(ValueError, match=r"OUT/synthetic"):
        wrong.ensure_converted()
    source.ensure_converted()  # the same spec again: the shards are kept
    changed = ShardSource(str(folder), convert={"source": "synthetic", "samples": 12, "size": 32, "clouds": 0.3})
    with pytest.raises(ValueError, match=r"holds train shards converted with .*\"size\": 32}, not .*clouds.*delete"):
        changed.ensure_converted()


@pytest.fixture(scope="module")
def two_object_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 synthetic train scenes of exactly two objects (32 px), 40 val scenes of one or two."""
    out = tmp_path_factory.mktemp("two_objects")
    convert(Synthetic(None, "train", samples=80, size=32, min_objects=2, max_objects=2), out, progress=False)
    convert(Synthetic(None, "val", samples=40, size=32, max_objects=2), out, progress=False)
    return out / "synthetic"


def test_cross_image_pairs_colour_one_category_alike_in_both_halves(two_object_shards: Path) -> None:
    """The prompt-following signal itself: in partner pairs (two different scenes), the coloured category has one
    colour in the prompt's and the query's target, every other pixel is black, and the category is in both views."""
    data = _data(two_object_shards, sampler={"self_prob": 0.0}, source={"task": "semantic"}, batches_per_epoch=12,
                 transform={"max_ids": 1, "scale": (0.9, 1.0), "flip": False})
    h = SIZE[0]
    partner = both_views = 0
    for raw in data.train_dataloader():
        labels = (raw["label_canvas"][:, 0].int() & 0xFFFF).clone()
        palettes, images = raw["palette"].clone(), raw["image_canvas"].clone()
        batch = finish_batch(raw)
        for i, palette in enumerate(palettes):
            rows = palette[palette[:, 0] != 65535]
            assert len(rows) == 1  # max_ids 1: one category coloured
            category, colour = int(rows[0, 0]), rows[0, 1:].to(torch.uint8)
            on = labels[i] == category
            target = batch["target_canvas"][i]
            assert (target[:, on] == colour[:, None]).all() and (target[:, ~on] == 0).all()
            both_views += bool(on[:h].any() and on[h:].any())
            partner += not torch.equal(images[i, :, :h], images[i, :, h:])
    n = 12 * 4
    assert partner >= n - 8  # all but the first pairs of each pass, while the partner buffer is cold
    assert both_views >= 0.9 * n


def test_validation_swaps_come_from_the_val_split(two_object_shards: Path) -> None:
    data = _data(two_object_shards, val=ShardSource(str(two_object_shards), split="val"), val_episodes=4,
                 val_swap_queries=5, val_min_pixels=4)
    first, swaps = data.val_dataloader()
    assert len(list(first)) == 4 and data.swap_kinds == ["all"]
    queries = list(swaps)
    assert len(queries) == 5
    for q in queries:
        assert q["targets"].shape[0] == 2 and all((q["targets"][r] == 1).sum() >= 4 for r in (0, 1))
        assert q["key"] not in q["objects"] and len(q["prompt_images"]) == 2
    assert _data(two_object_shards, val=ShardSource(str(two_object_shards), split="val")).val_swaps is None

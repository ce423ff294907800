from __future__ import annotations

import numpy as np
import pytest

from datamodules.synthetic import CATEGORIES, HELD_OUT, SEEN, SHAPES, TEXTURES, SyntheticScenes, category_colours

IDS = {name: i for i, name in CATEGORIES.items()}


def scenes_with_layouts(scenes: SyntheticScenes, indices: range):
    """(layout, scene) pairs drawn exactly as `scene(index)` draws them."""
    for index in indices:
        rng = scenes.rng(index)
        layout = scenes.layout(rng)
        yield layout, scenes.render(layout, rng)


def test_category_table_holds_every_shape_texture_pair_and_held_out_pairs_are_unseen_combinations():
    assert len(CATEGORIES) == len(SHAPES) * len(TEXTURES) == 24
    assert sorted(CATEGORIES) == list(range(1, 25))
    assert CATEGORIES[1] == "circle-plain" and CATEGORIES[24] == "star-checker"
    assert set(SEEN) | set(HELD_OUT) == set(CATEGORIES.values()) and not set(SEEN) & set(HELD_OUT)
    assert len(HELD_OUT) == len(SHAPES)
    # compositional: every part of a held-out category is seen, only the pairing is new
    seen_shapes = {name.split("-")[0] for name in SEEN}
    seen_textures = {name.split("-")[1] for name in SEEN}
    assert seen_shapes == set(SHAPES) and seen_textures == set(TEXTURES)
    assert {name.split("-")[0] for name in HELD_OUT} == set(SHAPES)


def test_same_index_gives_identical_arrays_whatever_came_before_and_other_indices_differ():
    scenes = SyntheticScenes()
    first = scenes.scene(5)
    for other in (0, 1, 2):
        scenes.scene(other)
    again = SyntheticScenes().scene(5)
    for a, b in zip(first[:3], again[:3], strict=True):
        assert a.tobytes() == b.tobytes()
    assert first.instances == again.instances
    assert scenes.scene(scenes.rng(5)).rgb.tobytes() == first.rgb.tobytes()
    assert scenes.scene(6).rgb.tobytes() != first.rgb.tobytes()
    assert SyntheticScenes(seed=1).scene(5).rgb.tobytes() != first.rgb.tobytes()


def test_arrays_have_the_documented_shapes_and_types():
    rgb, sem, ins, instances = SyntheticScenes(size=96).scene(0)
    assert rgb.shape == (96, 96, 3) and rgb.dtype == np.uint8
    assert sem.shape == ins.shape == (96, 96) and sem.dtype == ins.dtype == np.uint16
    assert all(isinstance(k, int) and isinstance(v, int) for k, v in instances.items())


@pytest.mark.parametrize("min_objects, max_objects", [(1, 3), (2, 2), (3, 5)])
def test_labels_agree_background_is_zero_in_both_maps_and_instances_are_numbered_one_to_n(min_objects, max_objects):
    scenes = SyntheticScenes(size=64, min_objects=min_objects, max_objects=max_objects)
    counts = set()
    for index in range(60):
        _, sem, ins, instances = scenes.scene(index)
        np.testing.assert_array_equal(sem == 0, ins == 0)
        assert sorted(instances) == list(range(1, len(instances) + 1)) == sorted(set(np.unique(ins)) - {0})
        for instance, category in instances.items():
            assert set(np.unique(sem[ins == instance])) == {category}
            assert category in scenes.categories
        counts.add(len(instances))
    assert counts == set(range(min_objects, max_objects + 1))


def test_front_objects_own_overlaps_occlusion_happens_and_every_object_keeps_half_its_pixels():
    scenes = SyntheticScenes()
    occluded = 0
    for layout, scene in scenes_with_layouts(scenes, range(100)):
        expected = np.zeros_like(scene.ins)
        full = [obj.full_mask(scenes.size) for obj in layout.objects]
        for k, mask in enumerate(full):
            expected[mask] = k + 1  # painted back to front: the last object covering a pixel owns it
        np.testing.assert_array_equal(scene.ins, expected)
        for k, mask in enumerate(full):
            visible = (scene.ins == k + 1).sum()
            assert visible >= 0.5 * mask.sum()
            occluded += visible < mask.sum()
    assert occluded >= 30  # measured: 65 of 194 objects hidden in part


def test_shapes_fill_their_disc_as_their_geometry_says():
    # area / (pi r^2) of each unit shape: square of side 1.6, ring with hole 0.55, cross of bars 0.6 x 1.9,
    # equilateral triangle and 5-point star (inner radius 0.45) inscribed in the unit circle
    fill = {"circle": 1.0, "square": 1.6**2 / np.pi, "ring": 1 - 0.55**2, "cross": (2 * 0.6 * 1.9 - 0.36) / np.pi,
            "triangle": 3 * np.sqrt(3) / 4 / np.pi, "star": 10 * 0.5 * 0.45 * np.sin(np.pi / 5) / np.pi}
    names = [f"{shape}-plain" for shape in SHAPES]
    scenes = SyntheticScenes(size=256, categories=names, scale=(0.2, 0.2), max_objects=1)
    seen = set()
    for layout, _ in scenes_with_layouts(scenes, range(100)):
        obj = layout.objects[0]
        if {0, scenes.size} & set(obj.box):
            continue  # the box reaches the canvas edge, so the shape may be cut
        assert obj.mask.sum() / (np.pi * obj.radius**2) == pytest.approx(fill[obj.shape], rel=0.02), obj.shape
        seen.add(obj.shape)
    assert seen == set(SHAPES)


def test_textures_cover_the_fraction_of_each_object_their_pattern_says():
    scenes = SyntheticScenes()
    fractions: dict[str, list[float]] = {t: [] for t in TEXTURES}
    for layout, scene in scenes_with_layouts(scenes, range(150)):
        for k, obj in enumerate(layout.objects):
            pixels = scene.rgb[scene.ins == k + 1].astype(float)
            main, pattern = (np.linalg.norm(pixels - c, axis=1) for c in obj.colours)
            fractions[obj.texture].append(float((pattern < main).mean()))
    means = {t: np.mean(f) for t, f in fractions.items()}
    assert means["plain"] == 0
    assert means["stripes"] == pytest.approx(0.5, abs=0.05) and means["checker"] == pytest.approx(0.5, abs=0.05)
    assert means["dots"] == pytest.approx(np.pi * 0.32**2, abs=0.05)  # dots of radius 0.32 periods


def test_colour_does_not_identify_the_category():
    scenes = SyntheticScenes()

    colours: list[np.ndarray] = []
    categories: list[int] = []
    for index in range(600):
        rgb, _, ins, instances = scenes.scene(index)
        for instance, category in instances.items():
            colours.append(rgb[ins == instance].mean(axis=0))
            categories.append(category)
    x, y = np.array(colours), np.array(categories)
    train, test = np.arange(len(y)) < len(y) // 2, np.arange(len(y)) >= len(y) // 2
    ids = np.array(sorted(set(y)))
    assert len(ids) == len(SEEN)
    for c in ids:
        # one category's instances come in many colours: 4 levels per channel, at least 12 of 64 cells
        assert len({tuple(v) for v in (x[y == c] // 64).astype(int)}) >= 12, CATEGORIES[c]
    centroids = np.stack([x[train & (y == c)].mean(axis=0) for c in ids])
    predicted = ids[np.linalg.norm(x[test, None] - centroids[None], axis=2).argmin(axis=1)]
    assert (predicted == y[test]).mean() < 2 / len(ids)  # nearest mean colour does about as well as chance


def test_category_colours_follow_shape_and_texture_so_held_out_categories_compose_seen_colours():
    table = {name: category_colours(i) for i, name in CATEGORIES.items()}
    mains = {name.split("-")[0]: tuple(c[0]) for name, c in table.items()}
    assert len(set(mains.values())) == len(SHAPES)  # one main colour per shape, shared by its textures
    for name, (main, pattern) in table.items():
        shape, texture = name.split("-")
        assert tuple(main) == mains[shape]
        assert (tuple(pattern) == tuple(main)) == (texture == "plain")  # plain: no second colour
        if texture != "plain":
            assert np.linalg.norm(pattern - main) > 110  # the pattern stays visible
    # every held-out category's two colours are seen: its main with other textures, its pattern with other shapes
    seen = {tuple(map(tuple, table[n])) for n in SEEN}
    for name in HELD_OUT:
        main, pattern = map(tuple, table[name])
        assert any(m == main for m, _ in seen) and (name.endswith("plain") or any(p == pattern for _, p in seen))
        assert (main, pattern) not in seen


def test_category_colour_mode_names_the_shape_by_colour_keeps_objects_off_the_background_and_labels_alike():
    scenes = SyntheticScenes(size=64, colours="category", colour_jitter=20, clouds=0.3)
    mains = np.stack([category_colours(IDS[f"{s}-plain"])[0] for s in SHAPES])
    right, contrast = [], []
    for layout, scene in scenes_with_layouts(scenes, range(120)):
        for k, obj in enumerate(layout.objects):
            offset = obj.colours - category_colours(obj.category)
            assert np.abs(offset).max() <= 20 + 1e-9  # jitter bounded (clipping only shrinks it)
            pixels = scene.rgb[scene.ins == k + 1].astype(float)
            # plain objects: the nearest shape colour to the mean pixel (shading averages out) is their shape's
            if obj.texture == "plain":
                right.append(SHAPES[np.linalg.norm(mains - pixels.mean(0), axis=1).argmin()] == obj.shape)
            contrast.append(np.linalg.norm(scene.rgb[scene.sem == 0].astype(float).mean(0) - obj.colours[0]))
    assert np.mean(right) > 0.95
    assert np.median(contrast) > 80  # the background's base keeps 100 levels away from each main colour
    # the labels stay consistent: each instance's pixels carry its category in sem
    for index in range(20):
        scene = scenes.scene(index)
        for instance, category in scene.instances.items():
            assert set(np.unique(scene.sem[scene.ins == instance])) == {category}


def test_held_out_categories_never_appear_among_seen_ones_and_all_appear_when_asked_for():
    seen_ids, held_ids = {IDS[n] for n in SEEN}, {IDS[n] for n in HELD_OUT}
    drawn = {c for i in range(150) for c in SyntheticScenes(size=48).scene(i).instances.values()}
    assert drawn == seen_ids
    drawn = {c for i in range(60) for c in SyntheticScenes(size=48, categories=HELD_OUT).scene(i).instances.values()}
    assert drawn == held_ids


@pytest.mark.parametrize("kwargs, message", [
    ({"categories": ["circle-plain", "hexagon-plain"]}, "unknown categories ['hexagon-plain']"),
    ({"categories": []}, "categories is empty"),
    ({"min_objects": 3, "max_objects": 2}, "min_objects <= max_objects"),
    ({"scale": (0.3, 0.6)}, "scale must satisfy"),
    ({"min_visible": 0.0}, "min_visible must lie in (0, 1]"),
    ({"size": 8}, "size must be at least 16"),
    ({"clouds": 1.5}, "clouds must lie in [0, 1]"),
    ({"colours": "palette"}, "colours must be one of ('instance', 'category'), got 'palette'"),
    ({"colour_jitter": -1}, "colour_jitter must lie in [0, 128]"),
])
def test_bad_arguments_are_refused_with_a_message_naming_them(kwargs, message):
    with pytest.raises(ValueError) as error:
        SyntheticScenes(**kwargs)
    assert message in str(error.value)


def test_grain_changes_pixels_but_not_labels():
    plain, grainy = SyntheticScenes().scene(3), SyntheticScenes(noise=8).scene(3)
    np.testing.assert_array_equal(plain.sem, grainy.sem)
    np.testing.assert_array_equal(plain.ins, grainy.ins)
    difference = grainy.rgb.astype(float) - plain.rgb
    assert 5 < difference.std() < 10


def test_clouds_scale_the_background_mottling_and_leave_the_objects():
    default, full, flat, soft = (SyntheticScenes(**kw).scene(5) for kw in ({}, {"clouds": 1.0}, {"clouds": 0.0},
                                                                             {"clouds": 0.3}))
    np.testing.assert_array_equal(default.rgb, full.rgb)  # strength 1 is the world as it was
    np.testing.assert_array_equal(flat.sem, default.sem)
    background = flat.sem == 0
    assert len(np.unique(flat.rgb[background], axis=0)) == 1  # one flat colour
    spread = [s.rgb[background].astype(float).std(axis=0).mean() for s in (soft, default)]
    assert 0 < spread[0] < 0.5 * spread[1]

"""Procedural scenes with semantic and instance labels: the embedded default data.

A category is a SHAPE drawn with a TEXTURE ("star-dots"): six shapes x four textures, 24 categories. With
`colours="instance"` (the default) every instance's colours are drawn afresh, so only shape and texture tell
objects apart; with `colours="category"` the main colour is the shape's (`SHAPE_HUES`) and the pattern colour the
texture's (`TEXTURE_PATTERNS`), jittered per instance. A scene is a mottled background with 1-3 objects painted
back to front (occluded pixels belong to the front one), large (~25% foreground on average) because a tiny model
trained on CPU collapses to painting background when foreground is scarce. `HELD_OUT` keeps one combination per
shape out of training, every shape and texture still seen with other partners; held-out scenes put one first
among distractors of all 24, so it meets its own shape (told apart by texture) and texture (told apart by shape).

    scenes = SyntheticScenes(size=128, categories=SEEN)
    rgb, sem, ins, instances = scenes.scene(7)   # the same arrays for index 7 in any process

A sample's randomness is `default_rng([seed, index])`, whatever the worker or order (speed: BENCHMARKS.md, §7).
"""


from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image

SHAPES = ("circle", "square", "triangle", "cross", "ring", "star")
TEXTURES = ("plain", "stripes", "dots", "checker")
# {class id: "shape-texture"}, shape-major; ids never change when `HELD_OUT` or a generator's subset does
CATEGORIES: dict[int, str] = {i + 1: f"{s}-{t}" for i, (s, t) in enumerate(itertools.product(SHAPES, TEXTURES))}
# shape i is held out with texture (3 - i) mod 4: each shape loses one texture, each texture one or two shapes
HELD_OUT: tuple[str, ...] = tuple(f"{s}-{TEXTURES[(3 - i) % 4]}" for i, s in enumerate(SHAPES))
SEEN: tuple[str, ...] = tuple(name for name in CATEGORIES.values() if name not in HELD_OUT)

_IDS = {name: i for i, name in CATEGORIES.items()}
COLOUR_MODES = ("instance", "category")
# colours="category": the main colour of each shape, hues 60 degrees apart at saturation 0.75, value 0.9,
# and the grey level of each texture's pattern (plain has none): dark stripes, light dots, mid-grey checks,
# each more than 110 levels from every main colour
SHAPE_HUES: dict[str, float] = {s: i / len(SHAPES) for i, s in enumerate(SHAPES)}
TEXTURE_PATTERNS: dict[str, float | None] = {"plain": None, "stripes": 35.0, "dots": 230.0, "checker": 128.0}
_STAR_INNER = 0.45  # inner / outer radius of the five-pointed star
_RING_INNER = 0.55  # hole / outer radius of the ring
_CROSS_HALF_WIDTH = 0.3  # half the bar width of the cross, in units of its radius
_SQUARE_HALF_SIDE = 0.8  # about the circle's area (side 1.6: 2.56 against pi)
_REACH = _SQUARE_HALF_SIDE * np.sqrt(2)  # the farthest any unit shape reaches from its centre: a square's corner


class Scene(NamedTuple):
    """One generated image: rgb (H, W, 3) uint8; sem, ins (H, W) uint16; instances {instance id: class id}."""

    rgb: np.ndarray
    sem: np.ndarray
    ins: np.ndarray
    instances: dict[int, int]


@dataclass(frozen=True)
class SceneObject:
    """One placed object: where it is, how it looks, and its mask on the box `[y0:y1, x0:x1]` of the canvas."""

    category: int
    cy: float
    cx: float
    radius: float
    angle: float
    aspect: float  # sqrt of the width / height ratio: the shape is stretched by aspect one way, 1/aspect the other
    colours: np.ndarray  # (2, 3) float: the main colour, the pattern colour (unused by "plain")
    period: float  # texture period in pixels
    pattern_angle: float  # stripe direction relative to the object
    phase: np.ndarray  # (2,) texture offsets in periods
    shading: float  # brightness slope across the object, for a hint of lighting
    box: tuple[int, int, int, int]  # y0, y1, x0, x1
    mask: np.ndarray  # (y1 - y0, x1 - x0) bool

    @property
    def shape(self) -> str:
        return CATEGORIES[self.category].split("-")[0]

    @property
    def texture(self) -> str:
        return CATEGORIES[self.category].split("-")[1]

    def full_mask(self, size: int) -> np.ndarray:
        """The unoccluded mask on the whole (size, size) canvas."""
        out = np.zeros((size, size), bool)
        y0, y1, x0, x1 = self.box
        out[y0:y1, x0:x1] = self.mask
        return out


class Layout(NamedTuple):
    """What a scene will show: background (H, W, 3) float32 and objects back to front."""

    background: np.ndarray
    objects: list[SceneObject]


def _local(cy: float, cx: float, angle: float, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre offsets from (cy, cx) on the box, rotated into the object's frame: (u, v), each (h, w)."""
    y0, y1, x0, x1 = box
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
    c, s = np.cos(angle), np.sin(angle)
    return c * dx + s * dy, c * dy - s * dx


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in unit coordinates (radius 1; only the square's corners reach past the unit circle)."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= _SQUARE_HALF_SIDE
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= _RING_INNER**2)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= _CROSS_HALF_WIDTH) & (av <= 0.95)) | ((av <= _CROSS_HALF_WIDTH) & (au <= 0.95))
    if shape == "triangle":
        # equilateral, vertices on the unit circle: inside all three edges at distance 1/2 from the centre
        inside = np.ones(u.shape, bool)
        for a in (np.pi / 2, np.pi * 7 / 6, np.pi * 11 / 6):
            inside &= u * np.cos(a) + v * np.sin(a) >= -0.5
        return inside
    # star: fold the angle into [0, pi/5] (outer vertex at 0, inner at pi/5), then compare the radius with
    # where the ray meets the edge from (1, 0) to the inner vertex
    t = np.mod(np.arctan2(v, u), 2 * np.pi / 5)
    t = np.minimum(t, 2 * np.pi / 5 - t)
    dx, dy = _STAR_INNER * np.cos(np.pi / 5) - 1.0, _STAR_INNER * np.sin(np.pi / 5)  # the edge's direction
    edge = dy / (np.cos(t) * dy - np.sin(t) * dx)  # |(1, 0) x d| / |u(t) x d|
    return u * u + v * v <= edge * edge


def _pattern(obj: SceneObject, u: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    """Where the pattern colour goes (bool, box-sized), in pixel units in the object's frame; None for plain."""
    texture, p = obj.texture, obj.period
    if texture == "plain":
        return None
    if texture == "stripes":
        s = u * np.cos(obj.pattern_angle) + v * np.sin(obj.pattern_angle)
        return np.mod(s / p + obj.phase[0], 1.0) < 0.5
    if texture == "dots":
        a, b = np.mod(u / p + obj.phase[0], 1.0) - 0.5, np.mod(v / p + obj.phase[1], 1.0) - 0.5
        return a * a + b * b <= 0.32**2
    return (np.floor(u / p + obj.phase[0]) + np.floor(v / p + obj.phase[1])).astype(np.int64) % 2 == 1  # checker


def _distinct_colour(rng: np.random.Generator, other: np.ndarray, distance: float) -> np.ndarray:
    """A uniformly random RGB colour at least `distance` from `other` ((3,) or (k, 3): from each), or the
    farthest of 16 draws if none is."""
    candidates = rng.uniform(0, 255, (16, 3))
    d = np.linalg.norm(candidates[:, None] - np.reshape(other, (-1, 3))[None], axis=2).min(axis=1)
    far = np.flatnonzero(d >= distance)
    return candidates[far[0] if far.size else int(d.argmax())]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (each in [0, 1]) as RGB in [0, 255]."""
    rgb = Image.new("HSV", (1, 1), (round(h * 255) % 256, round(s * 255), round(v * 255))).convert("RGB")
    return np.asarray(rgb, np.float64).reshape(3)


def category_colours(category: int) -> np.ndarray:
    """(2, 3): the main and pattern colour of `category` when colour follows shape and texture."""
    shape, texture = CATEGORIES[category].split("-")
    main, grey = _hsv(SHAPE_HUES[shape], 0.75, 0.9), TEXTURE_PATTERNS[texture]
    return np.stack([main, main if grey is None else np.full(3, grey)])


class SyntheticScenes:
    """Generator of labelled scenes; `scene(index)` is a pure function of (seed, index).

    Args:
        size: side of the square image in pixels (128: four times the pixels of a CPU demo's 64 px canvases, so
            downscaling keeps textures crisp).
        min_objects: fewest objects per scene.
        max_objects: most objects per scene.
        categories: names from `CATEGORIES` that objects are drawn from (uniformly), e.g. `SEEN` or `HELD_OUT`.
        distractors: names that the objects after a scene's first are drawn from instead; None: `categories`.
        scale: range of object radii as fractions of `size`.
        min_visible: the fraction of its pixels each object keeps after the objects in front of it are painted
            (a placement that would hide more is redrawn).
        clouds: strength of the background's gradient and colour clouds (0: one flat colour, an easier world for
            models trained from scratch in minutes).
        colours: "instance" (every object's colours drawn afresh) or "category" (`category_colours` plus a
            per-instance offset of up to `colour_jitter` levels; the background keeps away from the main colours).
        colour_jitter: that offset's bound, in 8-bit levels ("category" only).
        noise: standard deviation of per-pixel grain, in 8-bit levels; off by default, since downscaling averages
            it away and it doubles PNG sizes (BENCHMARKS.md, section 7): augmentation can add it instead.
        seed: the seed combined with each index.
    """

    tries = 20  # placements tried per object before it is left out

    def __init__(self, size: int = 128, min_objects: int = 1, max_objects: int = 3,
                 categories: Sequence[str] = SEEN, scale: tuple[float, float] = (0.18, 0.33),
                 min_visible: float = 0.5, clouds: float = 1.0, noise: float = 0.0, seed: int = 0,
                 distractors: Sequence[str] | None = None, colours: str = "instance",
                 colour_jitter: float = 20.0) -> None:
        unknown = [c for c in [*categories, *(distractors or ())] if c not in _IDS]
        if unknown:
            raise ValueError(f"unknown categories {unknown}; choose from {list(_IDS)}")
        if not categories:
            raise ValueError("categories is empty")
        if not 1 <= min_objects <= max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
        if not 0 < scale[0] <= scale[1] <= 0.5:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 0.5, got {scale}")
        if not 0 < min_visible <= 1:  # above 0, every object keeps pixels, so every instance id is in ins
            raise ValueError(f"min_visible must lie in (0, 1], got {min_visible}")
        if not 0 <= clouds <= 1:
            raise ValueError(f"clouds must lie in [0, 1], got {clouds}")
        if colours not in COLOUR_MODES:
            raise ValueError(f"colours must be one of {COLOUR_MODES}, got {colours!r}")
        if not 0 <= colour_jitter <= 128:
            raise ValueError(f"colour_jitter must lie in [0, 128] levels, got {colour_jitter}")
        if size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {size}")
        self.size, self.min_objects, self.max_objects = size, min_objects, max_objects
        self.categories = tuple(_IDS[c] for c in categories)
        self.distractors = self.categories if distractors is None else tuple(_IDS[c] for c in distractors)
        if not self.distractors:
            raise ValueError("distractors is empty")
        self.scale, self.min_visible, self.noise, self.seed = scale, min_visible, noise, seed
        self.clouds, self.colours, self.colour_jitter = clouds, colours, colour_jitter

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index])

    def scene(self, index_or_rng: int | np.random.Generator) -> Scene:
        """Sample `index` (or one drawn from the given generator): the layout first, then the pixels."""
        rng = self.rng(index_or_rng) if isinstance(index_or_rng, int | np.integer) else index_or_rng
        return self.render(self.layout(rng), rng)

    def layout(self, rng: np.random.Generator) -> Layout:
        """The background, then objects back to front, each leaving those behind it `min_visible` of their pixels
        (colours="category" draws the categories first, so that the background keeps away from their colours)."""
        chosen: list[int] = []
        if self.colours == "category":
            count = int(rng.integers(self.min_objects, self.max_objects + 1))
            chosen = [self._category(rng, k) for k in range(count)]
            background = self._background(rng, avoid=np.stack([category_colours(c)[0] for c in chosen]))
        else:
            background = self._background(rng)
            count = int(rng.integers(self.min_objects, self.max_objects + 1))
        objects: list[SceneObject] = []
        ins = np.zeros((self.size, self.size), np.int32)
        areas: list[int] = []
        for k in range(count):
            category = chosen[k] if chosen else self._category(rng, k)
            for _ in range(self.tries):
                obj = self._place(rng, category, background)
                y0, y1, x0, x1 = obj.box
                trial = ins.copy()
                trial[y0:y1, x0:x1][obj.mask] = len(objects) + 1
                visible = np.bincount(trial.ravel(), minlength=len(objects) + 2)[1:]
                if visible[-1] and all(visible[j] >= self.min_visible * areas[j] for j in range(len(objects))):
                    objects.append(obj)
                    areas.append(int(visible[-1]))
                    ins = trial
                    break
        return Layout(background, objects)

    def _category(self, rng: np.random.Generator, k: int) -> int:
        """The category of a scene's k-th object: the first from `categories`, the others from `distractors`."""
        return int(rng.choice(self.distractors if k else self.categories))

    def _place(self, rng: np.random.Generator, category: int, background: np.ndarray) -> SceneObject:
        """One candidate placement, its main colour kept away from the background it covers."""
        radius = rng.uniform(*self.scale) * self.size
        aspect = float(np.sqrt(rng.uniform(0.75, 1.33)))
        reach = _REACH * radius * max(aspect, 1 / aspect)
        # the centre stays at least half a radius inside the canvas, so no object is mostly cut off
        cy, cx = rng.uniform(0.5 * radius, self.size - 0.5 * radius, 2)
        angle = rng.uniform(0, 2 * np.pi)
        box = (max(0, int(cy - reach)), min(self.size, int(np.ceil(cy + reach)) + 1),
               max(0, int(cx - reach)), min(self.size, int(np.ceil(cx + reach)) + 1))
        u, v = _local(cy, cx, angle, box)
        shape = CATEGORIES[category].split("-")[0]
        mask = _shape_mask(shape, u / (radius * aspect), v * aspect / radius)
        if self.colours == "category":
            colours = np.clip(category_colours(category) + rng.uniform(-1, 1, (2, 3)) * self.colour_jitter, 0, 255)
        else:
            covered = background[box[0]:box[1]:4, box[2]:box[3]:4].reshape(-1, 3).mean(axis=0)  # every 4th pixel
            main = _distinct_colour(rng, covered, 80)
            colours = np.stack([main, _distinct_colour(rng, main, 110)])
        return SceneObject(
            category=category, cy=cy, cx=cx, radius=radius, angle=angle, aspect=aspect, colours=colours,
            period=max(4.0, radius * rng.uniform(0.3, 0.45)), pattern_angle=rng.uniform(0, np.pi),
            phase=rng.uniform(0, 1, 2), shading=rng.uniform(-0.15, 0.15), box=box, mask=mask)

    def render(self, layout: Layout, rng: np.random.Generator) -> Scene:
        """Paint the objects in order over the background, then add grain; instance k + 1 is `objects[k]`."""
        size, objects = self.size, layout.objects
        rgb = layout.background.copy()
        sem = np.zeros((size, size), np.uint16)
        ins = np.zeros((size, size), np.uint16)
        for k, obj in enumerate(objects):
            y0, y1, x0, x1 = obj.box
            u, v = _local(obj.cy, obj.cx, obj.angle, obj.box)
            pattern = _pattern(obj, u, v)
            shade = (1 + obj.shading * np.clip(u / obj.radius, -1, 1))[obj.mask]
            on_pattern = pattern[obj.mask] if pattern is not None else False
            for c in range(3):  # one channel at a time: numpy is slow to broadcast over a last axis of 3
                rgb[y0:y1, x0:x1, c][obj.mask] = np.where(on_pattern, obj.colours[1, c], obj.colours[0, c]) * shade
            sem[y0:y1, x0:x1][obj.mask] = obj.category
            ins[y0:y1, x0:x1][obj.mask] = k + 1
        if self.noise:
            rgb += rng.normal(0, self.noise, rgb.shape).astype(np.float32)
        instances = {k + 1: o.category for k, o in enumerate(objects)}
        return Scene((np.clip(rgb, 0, 255) + 0.5).astype(np.uint8), sem, ins, instances)  # rounded

    def _background(self, rng: np.random.Generator, avoid: np.ndarray | None = None) -> np.ndarray:
        """(size, size, 3) float32: a base colour (with `avoid`, at least 100 levels from each of those (k, 3)
        colours), a linear gradient and colour clouds at two scales, summed on small grids and enlarged bilinearly
        in PIL's C code: fast, and unlike a BLAS product independent of a worker's thread count. Fine clouds
        mottle the background for a fraction of the PNG bytes per-pixel grain costs (BENCHMARKS.md, section 7)."""

        base = rng.uniform(0, 255, 3) if avoid is None else _distinct_colour(rng, avoid, 100)
        direction, slope = rng.uniform(0, 2 * np.pi), rng.uniform(-30, 30, 3)
        coarse, fine = int(rng.integers(3, 7)), int(rng.integers(12, 24))
        t = np.linspace(-1, 1, coarse)
        gradient = np.cos(direction) * t[None, :] + np.sin(direction) * t[:, None]  # (coarse, coarse)
        c = self.clouds  # the draws are the same whatever the strength, so scenes differ only in their background
        grid = base + c * slope * gradient[..., None] + c * rng.uniform(-40, 40, (coarse, coarse, 3))  # c=1: as before
        grid = _enlarge(grid, fine) + c * rng.uniform(-20, 20, (fine, fine, 3))
        return _enlarge(grid, self.size).astype(np.float32)


def _enlarge(grid: np.ndarray, size: int) -> np.ndarray:
    """(g, g, 3) values in [0, 255] -> (size, size, 3) uint8 by bilinear interpolation."""
    image = Image.fromarray(np.clip(grid, 0, 255).round().astype(np.uint8))
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))

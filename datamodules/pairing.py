"""In-context pair sampling from a stream of samples (SegGPT section 4.1, appendix A).

Each sample becomes at most one `Pair`: the sample is the query, and the prompt is either another view
of the same image (`same_image`, to be cropped differently by the augmentation step) or another image
sharing a category with it (a partner). The rules, per the sample's `meta["task"]`:

    semantic   with probability `self_prob` two views of the sample; otherwise one of its present
               categories is drawn uniformly and a partner holding it is drawn from a buffer of recent
               samples of the same source, keyed by class. With no partner in the buffer yet (a cold
               buffer, or a rare class), two views of the sample instead, counted as a fallback.
               label "sem", task "semantic".
    instance   always two views; ids = the non-crowd instance ids present. label "ins", task "instance".
    panoptic   with probability `instance_prob` paired as instance data on ins.png, otherwise as semantic
               data on sem.png, so one panoptic source serves both type tokens. A panoptic sample that
               has only one kind of label is paired by that kind without a draw. The default 0.5 is our
               choice (no source gives one): the paper trains on COCO panoptic as semantic data and on COCO
               instance as its own source (appendix A), with no mixed rule.

Category presence is read from `meta["classes"]` and instances from `meta["instances"]`, so no label map
is decoded here. A sample with nothing to colour (no classes for semantic data, no non-crowd instance
for instance data) is skipped and counted. Crowd instances are left out of `ids`: one crowd region is
several objects, so it cannot be one instance colour.

The sampler is one pass over a stream in bounded memory, deterministic given its seed and the input
order, and picklable: each DataLoader worker carries its own copy, made with `fresh` and its worker's seed
(`shards.worker_seed`).
Buffered samples are shared between pairs, so later stages must not modify a Sample in place.

The bounded buffer is our choice (no source gives one), as are its sizes (256 samples, 16 per class): the paper
draws "another image" sharing a category, presumably from the whole dataset; a streaming reader holds only
recent samples, so partners come from the last few hundred samples of the source.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Literal, NamedTuple

from datamodules.schema import Sample


class Pair(NamedTuple):
    """A prompt and a query to colour alike.

    `ids` are the label ids, in the map named by `label`, that the colouring step may choose from: for
    two views of one image every id present, for a semantic partner pair the categories both images hold.
    """

    prompt: Sample
    query: Sample
    ids: list[int]
    label: Literal["sem", "ins"]
    same_image: bool
    task: Literal["semantic", "instance"]  # the model's type token


def source_of(sample: Sample) -> str:
    """The source a sample comes from: the part of its key before `__` (`schema.make_key`)."""
    return sample.key.split("__", 1)[0]


def class_ids(sample: Sample) -> list[int]:
    """The category ids present in the sample, from its metadata (0 and void are never listed)."""
    return sorted(int(c) for c in sample.meta.get("classes", {}))


def instance_ids(sample: Sample) -> list[int]:
    """The non-crowd instance ids present in the sample, from its metadata."""
    return sorted(int(i) for i, inst in sample.meta.get("instances", {}).items() if not inst["iscrowd"])


class PairSampler:
    """Turns a stream of samples into a stream of pairs; see the module docstring for the rules.

    Args:
        self_prob: probability that a semantic sample is paired with a view of itself (paper: 0.5).
        buffer_size: most samples held for partner search, counted once per class that holds them (default 256:
            our choice, no source gives one).
        seed: seeds every draw of this sampler used on its own; `PretrainDataModule` gives each DataLoader worker a
            `fresh` copy seeded from its own `seed`, so there this one is not read.
        instance_prob: probability that a panoptic sample is paired as instance data rather than semantic (default
            0.5: our choice, no source gives one).
        per_class: most samples held for one class, so frequent classes do not crowd out the rest (default 16: our
            choice, no source gives one).
    """

    # buffer_size 256, instance_prob 0.5 and per_class 16: our choice (no source gives one)
    def __init__(self, self_prob: float = 0.5, buffer_size: int = 256, seed: int = 0, instance_prob: float = 0.5,
                 per_class: int = 16) -> None:
        for name, p in (("self_prob", self_prob), ("instance_prob", instance_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {p}")
        if buffer_size < 1 or per_class < 1:
            raise ValueError(f"buffer_size and per_class must be positive, got {buffer_size} and {per_class}")
        self.self_prob, self.instance_prob = self_prob, instance_prob
        self.buffer_size, self.per_class, self.seed = buffer_size, per_class, seed
        self.rng = random.Random(seed)
        # (source, class id) -> recent samples holding it, oldest first: ids are per source (id 3 of one dataset
        # is not id 3 of another), so a partner always comes from the query's own source
        self.buffer: dict[tuple[str, int], deque[Sample]] = {}
        self.buffered = 0  # entries over all classes
        self.counts = {"pairs": 0, "self": 0, "partner": 0, "fallback": 0, "instance": 0, "skipped": 0}

    def fresh(self, seed: int) -> PairSampler:
        """A fresh sampler (empty buffer, zero counts) with the same settings and seed `seed`."""
        return PairSampler(self.self_prob, self.buffer_size, seed, self.instance_prob, self.per_class)

    def pairs(self, samples: Iterable[Sample]) -> Iterator[Pair]:
        """One pair per usable sample, in input order. Buffer and counts carry over between calls."""
        for sample in samples:
            pair = self.pair(sample)
            if pair is not None:
                yield pair

    def pair(self, sample: Sample) -> Pair | None:
        """The pair for one sample (None when it has nothing to colour, counted as skipped); the sample then joins
        the buffer."""
        task = sample.meta["task"]
        classes = class_ids(sample) if task != "instance" else []
        instances = instance_ids(sample) if task != "semantic" else []
        if instances and (not classes or self.rng.random() < self.instance_prob):
            pair: Pair | None = Pair(sample, sample, instances, "ins", True, "instance")
            self.counts["instance"] += 1
        elif classes:
            pair = self._semantic(sample, classes)
        else:
            pair = None
        if classes:
            self._remember(sample, classes)
        self.counts["pairs" if pair is not None else "skipped"] += 1
        return pair

    def discard(self, *samples: Sample) -> None:
        """Take samples out of the partner buffer (one whose image turned out unreadable must not be drawn again)."""
        keys = {s.key for s in samples}
        for c in list(self.buffer):
            held = self.buffer[c]
            kept = deque(s for s in held if s.key not in keys)
            self.buffered -= len(held) - len(kept)
            if kept:
                self.buffer[c] = kept
            else:
                del self.buffer[c]

    def _semantic(self, sample: Sample, classes: list[int]) -> Pair:
        if self.rng.random() < self.self_prob:
            self.counts["self"] += 1
            return Pair(sample, sample, classes, "sem", True, "semantic")
        category = self.rng.choice(classes)
        candidates = [s for s in self.buffer.get((source_of(sample), category), ()) if s.key != sample.key]
        if not candidates:
            self.counts["fallback"] += 1
            return Pair(sample, sample, classes, "sem", True, "semantic")
        prompt = self.rng.choice(candidates)
        self.counts["partner"] += 1
        shared = sorted(set(classes).intersection(class_ids(prompt)))
        return Pair(prompt, sample, shared, "sem", False, "semantic")

    def _remember(self, sample: Sample, classes: list[int]) -> None:
        source = source_of(sample)
        for c in classes:
            held = self.buffer.setdefault((source, c), deque())
            held.append(sample)
            self.buffered += 1
            if len(held) > self.per_class:
                held.popleft()
                self.buffered -= 1
        while self.buffered > self.buffer_size:
            # evict the oldest entry of the fullest class (the first such in insertion order), so that
            # rare classes keep their partners while frequent ones cycle
            fullest = max(self.buffer, key=lambda k: len(self.buffer[k]))
            self.buffer[fullest].popleft()
            self.buffered -= 1
            if not self.buffer[fullest]:
                del self.buffer[fullest]

    def stats(self) -> dict[str, float]:
        """Counts so far, for logging, plus `partner_rate`: partner pairs / semantic pairs (self + partner +
        fallback), which approaches 1 - self_prob once the buffer is warm; 0.0 before any semantic pair."""
        semantic = self.counts["self"] + self.counts["partner"] + self.counts["fallback"]
        return {**self.counts, "buffered": self.buffered,
                "partner_rate": self.counts["partner"] / semantic if semantic else 0.0}

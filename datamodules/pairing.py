"""In-context pairs from a stream of samples (SegGPT, Wang et al. 2023, §4.1 and appendix A).

Each sample is the query of at most one `Pair`, whose prompt is a second view of it or a partner image sharing a
category, by the sample's `meta["task"]` (`PairSampler.pair`). Partners come from a bounded buffer of the source's
recent samples (our choice: the paper draws "another image", but a stream holds no whole dataset). Buffered samples
are shared between pairs: later stages must not modify a Sample in place."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Literal, NamedTuple

from datamodules.schema import Sample


class Pair(NamedTuple):
    """A prompt and a query to colour alike; `ids`: the ids of their `label` maps that colouring may choose from."""

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
    """The non-crowd instance ids present, from the metadata (a crowd region is several objects, not one)."""
    return sorted(int(i) for i, inst in sample.meta.get("instances", {}).items() if not inst["iscrowd"])


class PairSampler:
    """Samples -> pairs in one pass, in bounded memory, deterministic given its seed and the input order; picklable.

    Args:
        self_prob: probability that a semantic sample is paired with a view of itself (paper: 0.5).
        buffer_size: most samples held for partner search, counted once per class holding them (our choice).
        seed: seeds this sampler used alone; `PretrainDataModule` seeds each worker's `fresh` copy from data.seed.
        instance_prob: probability that a panoptic sample is paired as instance data, else semantic (our choice).
        per_class: most samples held for one class, so frequent classes do not crowd out the rest (our choice).
    """

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
        """The pair of one sample, which then joins the buffer; None (counted) when it has nothing to colour."""
        # instance data: always two views (paper: probability 1.0); semantic data: `_semantic`; panoptic data, with
        # both kinds, as instance data with probability instance_prob (the paper pairs COCO panoptic as semantic data
        # and COCO instance as its own source, with no mixed rule), and by its one kind of label when it has only one
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
        # a view of itself with probability self_prob (paper: 0.5), else a partner holding one of its categories
        # drawn uniformly; a second view (a fallback) while the buffer has none, cold or for a rare class
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
        """Counts so far, and `partner_rate`: partner / semantic pairs, near 1 - self_prob once warm."""
        semantic = self.counts["self"] + self.counts["partner"] + self.counts["fallback"]
        return {**self.counts, "buffered": self.buffered,
                "partner_rate": self.counts["partner"] / semantic if semantic else 0.0}

"""Decoded samples kept in memory, so that a data set that fits is read and decoded once (``data.memory_cache_mb``).

Streaming from shards is for data sets far larger than memory. The demo's 20,000 toy images are not one: the toy
CLIP's recipe reads them seven times, and reading a tar and decoding its JPEGs cost a fifth of its steps. With the
cache on, each shard that a stream has read whole is kept as the *outcomes* of decoding its samples, in order:
the decoded item or the skip it raised, and what decoding counted (e.g. ``upscaled``). Later passes replay those
outcomes instead of reading and decoding again, until the budget is spent; shards that do not fit are read as
before.

Replaying yields the same batches as decoding. The shuffle buffer reorders outcomes exactly as it reorders raw
samples (the order depends on the number of elements and the seed, not on what they hold), and the counts are
replayed when a sample is consumed, where decoding would have counted them. Only decoders whose output depends on
the sample alone are cached (``deterministic = True``: images); video decoding draws its clip at random on every
read and never is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from datamodules.skips import SkipCounter, SkipSample

CountEvent = tuple[str, str, str, bool]  # SkipCounter.count's arguments: reason, key, detail, warn


class _RecordingCounter:
    """Stands in for the stream's :class:`SkipCounter` while a sample is decoded ahead of its use."""

    def __init__(self) -> None:
        self.events: list[CountEvent] = []

    def count(self, reason: str, key: str, detail: str = "", warn: bool = True) -> None:
        self.events.append((reason, key, detail, warn))


@dataclass(frozen=True)
class Outcome:
    """What decoding one raw sample gave: an item, or the skip it raised; and what it counted on the way."""

    key: str
    item: dict[str, Any] | None
    skip: tuple[str, str] | None  # the SkipSample's reason and detail (raised afresh on every replay)
    events: tuple[CountEvent, ...]

    def replay(self, counter: SkipCounter) -> dict[str, Any]:
        """Count what decoding counted; return the item, or raise the sample's skip."""
        for event in self.events:
            counter.count(*event)
        if self.skip is not None:
            raise SkipSample(*self.skip)
        assert self.item is not None
        return self.item

    def nbytes(self) -> int:
        """About what the outcome holds in memory (tensors shared between entries counted once)."""
        if self.item is None:
            return 256
        tensors = {id(v): v for v in self.item.values() if isinstance(v, torch.Tensor)}
        text = sum(len(v) for v in self.item.values() if isinstance(v, str))
        return 256 + text + sum(t.element_size() * t.nelement() for t in tensors.values())


def decode_outcome(decoder: Any, sample: dict[str, Any], rng: np.random.Generator) -> Outcome:
    recorder = _RecordingCounter()
    key = str(sample.get("__key__"))
    try:
        item = decoder.decode(sample, rng, recorder)
    except SkipSample as skip:
        return Outcome(key, None, (skip.reason, skip.detail), tuple(recorder.events))
    return Outcome(key, item, None, tuple(recorder.events))


class ShardCache:
    """Outcomes of whole shards, up to ``budget_mb`` MB per process (one per stream and loader process)."""

    def __init__(self, budget_mb: float) -> None:
        self.budget = int(budget_mb * 2**20)
        self.used = 0
        self._shards: dict[tuple, tuple[Outcome, ...]] = {}
        self.full = False  # a shard did not fit: from now on some reads go to the tar

    def __len__(self) -> int:
        return len(self._shards)

    def read(self, key: tuple, samples: Iterator[dict[str, Any]], decoder: Any,
             rng: np.random.Generator) -> Iterator[Outcome]:
        """The outcomes of ``samples`` (one shard's share), from memory when that shard was read whole before;
        otherwise decoded as they are read, and kept when the shard ends and the budget allows."""
        cached = self._shards.get(key)
        if cached is not None:
            yield from cached
            return
        outcomes: list[Outcome] | None = []
        size = 0
        for sample in samples:  # an abandoned or failing read never reaches the end: nothing kept
            outcome = decode_outcome(decoder, sample, rng)
            if outcomes is not None:
                size += outcome.nbytes()
                if self.used + size <= self.budget:
                    outcomes.append(outcome)
                else:  # this shard cannot be kept: stop holding what was decoded of it
                    outcomes, self.full = None, True
            yield outcome
        if outcomes is not None:
            self._shards[key] = tuple(outcomes)
            self.used += size

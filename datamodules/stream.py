"""An endless, seeded, per-slot WebDataset stream cut into fixed-length epochs of ready-made batches.

Each dataloader worker of each rank (a *slot*, see :mod:`datamodules.sharding`) reads its own disjoint share
of the shards, cycles them forever (reshuffling the shard order every pass), shuffles samples in a buffer,
decodes them (bad samples are skipped and counted), and yields whole batches. A rank's epoch is
``batches_per_epoch`` batches split across its workers, so every rank yields the same number of batches.

Seeds come from ``(seed, stream tag, rank, worker, start)`` where ``start`` is the number of batches the
training loop had consumed when the iteration began (a shared-memory scalar written by the main process, see
:class:`datamodules.loader.StreamPosition`): every epoch, and every resumed run, gets a fresh permutation.
"""

from __future__ import annotations

import random
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import IterableDataset
from webdataset.filters import shuffle as wds_shuffle

from datamodules.memory_cache import ShardCache
from datamodules.sharding import SlotPlan, current_worker, iter_tar_samples, plan_slot, shard_label
from datamodules.skips import SkipCounter, SkipSample


class SampleDecoder(Protocol):
    """Turns a raw WebDataset sample into tensors, or raises :class:`SkipSample`."""

    reasons: tuple[str, ...]
    deterministic: bool  # the same sample always decodes to the same item (then it may be memory-cached)

    def decode(
        self, sample: dict[str, Any], rng: np.random.Generator, counter: SkipCounter
    ) -> dict[str, Any]: ...

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class StreamSpec:
    """What a :class:`ShardStream` reads and how (all per rank)."""

    shards: tuple[str, ...]
    batch_size: int
    batches_per_epoch: int | None  # None: endless (a secondary stream zipped to another one)
    shuffle: bool
    shuffle_buffer: int
    seed: int
    rank: int
    world_size: int
    tag: int = 0  # separates the seeds of streams that share (seed, rank, worker)
    skip_prefix: str = ""
    memory_cache_mb: float = 0  # > 0: keep decoded shards in memory (datamodules.memory_cache), for decoders
    # whose output depends on the sample alone (``deterministic = True``)


SHARD_ORDER, SAMPLE_ORDER, DECODE = 0, 1, 2  # purposes of derived seeds


def _derive_seed(entropy: tuple[int, ...], *extra: int) -> int:
    # SeedSequence wants non-negative ints; a negative data.seed wraps around.
    words = [value & 0xFFFFFFFFFFFFFFFF for value in (*entropy, *extra)]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0])


def worker_batches(total: int, start: int, worker: int, num_workers: int) -> int:
    """Batches this worker yields when the rank's epoch has ``total`` batches and ``start`` were consumed."""
    remaining = total - start % total
    return remaining // num_workers + int(worker < remaining % num_workers)


class ShardStream(IterableDataset):
    """Batches from a slot's share of the shards; see the module docstring. Yields dicts with ``skips``."""

    def __init__(self, spec: StreamSpec, decoder: SampleDecoder, start: torch.Tensor | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.decoder = decoder
        self.start = start
        self._counter: SkipCounter | None = None
        cacheable = spec.memory_cache_mb > 0 and getattr(decoder, "deterministic", False)
        self.cache = ShardCache(spec.memory_cache_mb) if cacheable else None

    def __len__(self) -> int:
        if self.spec.batches_per_epoch is None:
            raise TypeError("an endless stream has no length")
        return self.spec.batches_per_epoch

    @property
    def counter(self) -> SkipCounter:
        """This process's cumulative skip counter (one per worker process)."""
        if self._counter is None:
            self._counter = SkipCounter(self.decoder.reasons, prefix=self.spec.skip_prefix)
        return self._counter

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = current_worker()
        spec = self.spec
        slot = spec.rank * num_workers + worker
        plan = plan_slot(list(spec.shards), slot, spec.world_size * num_workers)
        start = 0 if self.start is None else int(self.start)
        entropy = (spec.seed, spec.tag, spec.rank, worker, start)
        samples = self._decoded(plan, entropy, slot)
        count = (
            None
            if spec.batches_per_epoch is None
            else worker_batches(spec.batches_per_epoch, start, worker, num_workers)
        )
        produced = 0
        while count is None or produced < count:
            batch = self.decoder.collate([next(samples) for _ in range(spec.batch_size)])
            batch["skips"] = self.counter.as_ints()
            batch["worker_id"] = worker
            produced += 1
            yield batch

    def _raw(self, plan: SlotPlan, entropy: tuple[int, ...], slot: int, passes: list[int],
             decode_rng: np.random.Generator) -> Iterator[Any]:
        """Raw samples of the slot's share, shards cycled forever; a corrupt shard is counted and skipped. With
        the memory cache on, decoded :class:`~datamodules.memory_cache.Outcome` s instead of raw samples."""
        pass_index = 0
        while True:
            order = list(plan.shards)
            if self.spec.shuffle:
                random.Random(_derive_seed(entropy, SHARD_ORDER, pass_index)).shuffle(order)
            raw_in_pass = 0
            for url in order:
                samples = (sample for index, sample in enumerate(iter_tar_samples(url)) if plan.keeps(index))
                if self.cache is not None:
                    samples = self.cache.read((url, plan.offset, plan.stride), samples, self.decoder, decode_rng)
                try:
                    for sample in samples:
                        raw_in_pass += 1
                        yield sample
                except (OSError, EOFError, ValueError, tarfile.TarError) as error:  # truncated, corrupt
                    self.counter.count("corrupt_shard", shard_label(url), repr(error))
            if raw_in_pass == 0:
                share = f" (samples {plan.offset} mod {plan.stride})" if plan.stride > 1 else ""
                raise RuntimeError(
                    f"rank {self.spec.rank} slot {slot} read no samples from its shards {list(plan.shards)}"
                    f"{share}: the shards are empty or unreadable"
                )
            passes.append(raw_in_pass)
            pass_index += 1

    def _decoded(self, plan: SlotPlan, entropy: tuple[int, ...], slot: int) -> Iterator[dict[str, Any]]:
        """Decoded samples; gives up (RuntimeError) when two whole passes in a row decode nothing."""
        passes: list[int] = []
        decode_rng = np.random.default_rng(_derive_seed(entropy, DECODE))
        raw = self._raw(plan, entropy, slot, passes, decode_rng)
        if self.spec.shuffle and self.spec.shuffle_buffer > 1:
            rng = random.Random(_derive_seed(entropy, SAMPLE_ORDER))
            raw = wds_shuffle(self.spec.shuffle_buffer, initial=min(100, self.spec.shuffle_buffer), rng=rng)(
                raw
            )
        failures = 0
        for sample in raw:
            try:
                if self.cache is not None:  # decoded when read; its counts are made now, as decoding makes them
                    item = sample.replay(self.counter)
                else:
                    item = self.decoder.decode(sample, decode_rng, self.counter)
            except SkipSample as skip:
                key = sample.key if self.cache is not None else str(sample.get("__key__"))
                self.counter.count(skip.reason, key, skip.detail)
                failures += 1
                if len(passes) >= 2 and failures > 2 * max(passes) + self.spec.shuffle_buffer:
                    raise RuntimeError(
                        f"rank {self.spec.rank} slot {slot}: no sample of {list(plan.shards)} decodes "
                        f"({failures} failures in a row; counts {self.counter.counts})"
                    ) from skip
                continue
            failures = 0
            yield item

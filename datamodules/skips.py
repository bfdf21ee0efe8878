"""Counting skipped samples inside dataloader workers, and tallying them in the training process.

Every batch carries ``batch["skips"]``: reason -> int, that worker's *cumulative* count, and
``batch["worker_id"]``. :class:`SkipTally` turns those into per-rank totals. Besides real skips, a few reasons
count events that keep the sample (``fps_adjusted``: a video clip was sampled at a higher fps to fit;
``upscaled``: an image smaller than the training resolution was upscaled).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

IMAGE_REASONS = ("decode_error", "too_small", "empty_caption", "missing_field", "filtered", "corrupt_shard",
                 "below_resolution", "upscaled")
VIDEO_REASONS = (
    "decode_error",
    "too_small",
    "missing_field",
    "filtered",
    "corrupt_shard",
    "too_short",
    "vfr",
    "fps_adjusted",
)


class SkipSample(Exception):
    """Raised by a sample decoder: the sample is dropped and counted under ``reason``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SkipCounter:
    """Cumulative skip counts of one worker; logs the first ``max_warnings`` skips at WARNING level."""

    def __init__(self, reasons: Iterable[str], max_warnings: int = 5, prefix: str = "") -> None:
        self.counts: dict[str, int] = {prefix + reason: 0 for reason in reasons}
        self.max_warnings = max_warnings
        self.prefix = prefix
        self._warned = 0

    def count(self, reason: str, key: str, detail: str = "", warn: bool = True) -> None:
        name = self.prefix + reason
        self.counts[name] = self.counts.get(name, 0) + 1
        if warn and self._warned < self.max_warnings:
            self._warned += 1
            logger.warning("skipped %s (%s): %s", key, name, detail[:200])

    def as_ints(self) -> dict[str, int]:
        """Plain ints: a 0-d tensor per counter would cross from worker to trainer in a shared-memory segment
        of its own, and on a GPU be copied to the device and read back (a sync per counter per step)."""
        return dict(self.counts)


class SkipTally:
    """Per-rank skip totals from batches of several workers.

    ``update(batch)`` keeps the latest cumulative count of each worker and returns the sum over workers. A
    count that goes down means the worker restarted (non-persistent workers, a new dataloader); what it had
    counted before is kept. Feed it batches of one dataloader (train), not train and val mixed.
    """

    def __init__(self) -> None:
        self._latest: dict[int, dict[str, int]] = {}
        self._carried: dict[int, dict[str, int]] = {}

    def update(self, batch: Mapping[str, Any]) -> dict[str, int]:
        worker = int(batch["worker_id"])
        counts = {reason: int(value) for reason, value in batch["skips"].items()}
        latest = self._latest.setdefault(worker, {})
        carried = self._carried.setdefault(worker, {})
        for reason, value in counts.items():
            previous = latest.get(reason, 0)
            if value < previous:
                carried[reason] = carried.get(reason, 0) + previous
        self._latest[worker] = counts
        return self.totals()

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for source in (*self._latest.values(), *self._carried.values()):
            for reason, value in source.items():
                totals[reason] = totals.get(reason, 0) + value
        return totals

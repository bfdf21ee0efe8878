"""Shard specs, the (rank, worker) slot plan, and raw sample iteration over WebDataset tars.

A *slot* is one (DDP rank, dataloader worker) pair: ``slot = rank * num_workers + worker``. Every slot reads a
disjoint part of the data:

- at least as many shards as slots: shard ``i`` belongs to slot ``i % num_slots`` (whole shards, no waste);
- fewer shards than slots: slot ``j`` reads shard ``j % num_shards`` and keeps the raw samples whose index in
  that shard is ``j // num_shards`` modulo the number of slots sharing the shard (a deterministic split).
"""

from __future__ import annotations

import glob
import logging
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import braceexpand
import torch
from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys, tar_file_iterator

logger = logging.getLogger(__name__)

REMOTE_PREFIXES = ("pipe:", "http://", "https://", "s3://", "gs://", "ais://", "sftp://", "scp://", "file:")


def _split_top_level(spec: str) -> list[str]:
    """Split on commas that are not inside ``{...}`` (brace alternatives keep their commas)."""
    parts, depth, current = [], 0, []
    for char in spec:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _expand_item(item: str) -> list[str]:
    """One comma-free item: a remote URL pattern, a directory, a glob, or a local brace pattern."""
    if item.startswith(REMOTE_PREFIXES):
        return list(braceexpand.braceexpand(item))
    expanded: list[str] = []
    missing: list[str] = []
    for path in braceexpand.braceexpand(os.path.expanduser(item)):
        if os.path.isdir(path):
            expanded.extend(sorted(glob.glob(os.path.join(path, "*.tar"))))
        elif any(char in path for char in "*?["):
            expanded.extend(sorted(glob.glob(path)))
        elif os.path.isfile(path):
            expanded.append(path)
        else:
            missing.append(path)
    if missing and expanded:
        logger.warning(
            "%d of %d shards of %s do not exist (first: %s)",
            len(missing),
            len(missing) + len(expanded),
            item,
            missing[0],
        )
    return expanded


def expand_shards(spec: str | None, field: str = "data.shards") -> list[str]:
    """Expand a shard spec into a list of shard URLs.

    ``spec`` is a brace pattern (``/x/{00000..00099}.tar``), a comma-separated list of patterns, a directory
    (all its ``*.tar``), or a glob. Local files that do not exist are dropped; remote URLs (``pipe:``,
    ``http://``, ...) are kept as given. Raises ``ValueError`` naming ``field`` when nothing is left.
    """
    if spec is None or not str(spec).strip():
        raise ValueError(f"{field} is empty: pass a shard pattern such as '/data/{{00000..00099}}.tar'")
    urls: list[str] = []
    for item in _split_top_level(str(spec)):
        urls.extend(_expand_item(item))
    if not urls:
        raise ValueError(f"{field}={spec!r} matches no shard files")
    return urls


def resolve_rank_world() -> tuple[int, int]:
    """(rank, world_size) from torch.distributed when initialised, else env RANK/WORLD_SIZE, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world:
        raise ValueError(f"RANK {rank} must be in [0, WORLD_SIZE {world})")
    return rank, world


def current_worker() -> tuple[int, int]:
    """(worker id, number of workers) of the current dataloader worker process, (0, 1) in the main process."""
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


@dataclass(frozen=True)
class SlotPlan:
    """What one slot reads: these shards, and of each the raw samples with ``index % stride == offset``."""

    shards: tuple[str, ...]
    stride: int = 1
    offset: int = 0

    def keeps(self, index: int) -> bool:
        return index % self.stride == self.offset


def plan_slot(shards: list[str], slot: int, num_slots: int) -> SlotPlan:
    """The disjoint share of ``shards`` for ``slot`` out of ``num_slots`` (see the module docstring)."""
    if not 0 <= slot < num_slots:
        raise ValueError(f"slot {slot} must be in [0, {num_slots})")
    num_shards = len(shards)
    if num_shards >= num_slots:
        return SlotPlan(shards=tuple(shards[slot::num_slots]))
    shard = slot % num_shards
    sharing = len(range(shard, num_slots, num_shards))
    return SlotPlan(shards=(shards[shard],), stride=sharing, offset=slot // num_shards)


class _TailReader:
    """Read-only file wrapper remembering whether EOF was reached and the last 512 bytes read."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.hit_eof = False
        self.tail = b""

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        if size is None or size < 0 or len(data) < size:
            self.hit_eof = True
        self.tail = (self.tail + data)[-512:]
        return data


def _tar_files(url: str, reader: _TailReader) -> Iterator[dict[str, Any]]:
    for item in tar_file_iterator(reader):
        yield {**item, "__url__": url}
    # tarfile takes a file cut at a header boundary for a whole archive; a real one ends in zero blocks.
    if reader.hit_eof and reader.tail.strip(b"\0"):
        raise tarfile.ReadError(f"{url}: truncated tar (ends without the end-of-archive blocks)")


def iter_tar_samples(url: str) -> Iterator[dict[str, Any]]:
    """Raw samples (``__key__``, ``__url__`` and one bytes entry per extension) of one tar, in order.

    A corrupt or truncated tar raises (``tarfile.ReadError``) before its incomplete last sample is yielded;
    the caller counts it and moves on.
    """
    stream = gopen(url, "rb")
    try:
        yield from group_by_keys(_tar_files(url, _TailReader(stream)))
    finally:
        stream.close()


def shard_label(url: str) -> str:
    """Short name of a shard for log lines."""
    return Path(url).name if not url.startswith(REMOTE_PREFIXES) else url

"""Precomputed CLIP embeddings in the clip-retrieval layout, for the prior P.

Layout (what clip-retrieval writes and LAION publishes; rows aligned across the three files of a part ``i``)::

    ROOT/img_emb/img_emb_{i}.npy     (rows, d) float16/float32 image embeddings
    ROOT/text_emb/text_emb_{i}.npy   (rows, d) text embeddings
    ROOT/metadata/metadata_{i}.parquet  at least ``caption``; ``key`` where present

Why not ``embedding-reader``: it reads pieces in file order for one consumer and has no notion of our slots
(rank × dataloader worker) or of a resume position, and needs pandas; ours is a few numpy memory maps.

Order and sharding: the rows (less the last ``val_samples``, which are validation) are cut into blocks of
``BLOCK_ROWS`` contiguous rows inside a part. Slot ``s`` of ``S = world × workers`` owns blocks ``s, s + S, ...``
(disjoint across ranks and workers). A slot reads its blocks in a seeded order that changes every pass, and
batch ``j`` of a slot is raw rows ``[j·B, (j+1)·B)`` of that sequence, so seeking to any batch is arithmetic.
Rows with non-finite embeddings or empty captions are dropped from their batch and counted.

Resume: the datamodule's ``state_dict`` holds the batches the rank's training loop consumed (as for the shard
streams); a resumed loader's worker ``w`` continues exactly where the interrupted run's worker ``(c + w) % W``
was, so a resumed run reads the very batches the uninterrupted one would have read.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from lightning.pytorch import LightningDataModule
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import IterableDataset
from typing_extensions import override

from datamodules.loader import StreamLoader, StreamPosition, make_loader
from datamodules.sharding import current_worker, resolve_rank_world
from datamodules.skips import SkipCounter
from datamodules.stream import _derive_seed, worker_batches
from mav_train.config.schema import DataConfig

BLOCK_ROWS = 256
EMBEDDING_REASONS = ("non_finite", "empty_caption")
_PART = re.compile(r"^img_emb_(\d+)\.npy$")


@dataclass(frozen=True)
class EmbeddingPart:
    """One part ``i`` of the folder: three aligned files and their row count."""

    index: int
    img: Path
    text: Path
    meta: Path
    rows: int
    dim: int


def part_paths(root: Path, index: int) -> tuple[Path, Path, Path]:
    return (root / "img_emb" / f"img_emb_{index}.npy", root / "text_emb" / f"text_emb_{index}.npy",
            root / "metadata" / f"metadata_{index}.parquet")


def scan_embedding_folder(root: str | Path) -> list[EmbeddingPart]:
    """The parts of a clip-retrieval folder, checked: the three files exist and agree on rows and width."""
    root = Path(root)
    if not (root / "img_emb").is_dir():
        raise ValueError(f"data.embeddings={root} has no img_emb/ folder (clip-retrieval layout: img_emb/, "
                         "text_emb/, metadata/)")
    indices = sorted(int(m.group(1)) for p in (root / "img_emb").iterdir() if (m := _PART.match(p.name)))
    if not indices:
        raise ValueError(f"no img_emb_*.npy in {root / 'img_emb'}")
    parts = []
    for index in indices:
        img, text, meta = part_paths(root, index)
        for path in (text, meta):
            if not path.is_file():
                raise ValueError(f"{img} has no partner {path}")
        img_shape = np.load(img, mmap_mode="r").shape
        text_shape = np.load(text, mmap_mode="r").shape
        meta_rows = pq.read_metadata(meta).num_rows
        if len(img_shape) != 2 or len(text_shape) != 2:
            raise ValueError(f"{img} {img_shape} and {text} {text_shape} must both be (rows, dim) arrays")
        if img_shape[0] != text_shape[0]:
            raise ValueError(f"row counts disagree: {img} has {img_shape[0]} rows, {text} has {text_shape[0]}")
        if img_shape[0] != meta_rows:
            raise ValueError(f"row counts disagree: {img} has {img_shape[0]} rows, {meta} has {meta_rows}")
        if img_shape[1] != text_shape[1]:
            raise ValueError(f"widths disagree: {img} is {img_shape[1]}-d, {text} is {text_shape[1]}-d")
        parts.append(EmbeddingPart(index, img, text, meta, img_shape[0], img_shape[1]))
    return parts


@dataclass(frozen=True)
class Block:
    part: int  # position in the parts list
    start: int
    stop: int


def make_blocks(parts: list[EmbeddingPart], first: int, last: int, block_rows: int = BLOCK_ROWS) -> list[Block]:
    """Blocks covering global rows ``[first, last)`` (parts concatenated in index order)."""
    blocks, offset = [], 0
    for i, part in enumerate(parts):
        lo, hi = max(first - offset, 0), min(last - offset, part.rows)
        for start in range(lo, hi, block_rows):
            blocks.append(Block(i, start, min(start + block_rows, hi)))
        offset += part.rows
    return blocks


class PartReader:
    """Memory-mapped rows of the parts (opened lazily in each worker); captions/keys of the last parts read."""

    def __init__(self, parts: list[EmbeddingPart]) -> None:
        self.parts = parts
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._meta: dict[int, tuple[list, list | None]] = {}

    def arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i not in self._arrays:
            part = self.parts[i]
            self._arrays[i] = (np.load(part.img, mmap_mode="r"), np.load(part.text, mmap_mode="r"))
        return self._arrays[i]

    def meta(self, i: int) -> tuple[list, list | None]:
        if i not in self._meta:
            if len(self._meta) >= 2:
                self._meta.pop(next(iter(self._meta)))
            names = pq.read_schema(self.parts[i].meta).names
            columns = [c for c in ("caption", "key") if c in names]
            table = pq.read_table(self.parts[i].meta, columns=columns)
            captions = table.column("caption").to_pylist() if "caption" in columns else [None] * table.num_rows
            keys = table.column("key").to_pylist() if "key" in columns else None
            self._meta[i] = (captions, keys)
        return self._meta[i]

    def read(self, i: int, rows: np.ndarray) -> dict[str, Any]:
        img, text = self.arrays(i)
        captions, keys = self.meta(i)
        index = self.parts[i].index
        return {
            "image_emb": np.asarray(img[rows], dtype=np.float32),
            "text_emb": np.asarray(text[rows], dtype=np.float32),
            "caption": [captions[r] for r in rows],
            "key": [str(keys[r]) if keys is not None else f"{index}:{r}" for r in rows],
        }


class SlotOrder:
    """The endless raw row sequence of one slot: its blocks in a seeded order per pass (rows within a block in
    a seeded order too when shuffling). ``window(start, n)`` -> [(part, rows)] for raw rows [start, start + n)."""

    def __init__(self, blocks: list[Block], shuffle: bool, entropy: tuple[int, ...]) -> None:
        if not blocks:
            raise ValueError("slot has no blocks")
        self.blocks = blocks
        self.shuffle = shuffle
        self.entropy = entropy
        self.pass_rows = sum(b.stop - b.start for b in blocks)
        self._pass: tuple[int, list[Block], list[int]] | None = None

    def _layout(self, p: int) -> tuple[list[Block], list[int]]:
        if self._pass is None or self._pass[0] != p:
            order = list(self.blocks)
            if self.shuffle:
                perm = np.random.default_rng(_derive_seed(self.entropy, p)).permutation(len(order))
                order = [order[i] for i in perm]
            ends = list(np.cumsum([b.stop - b.start for b in order]))
            self._pass = (p, order, ends)
        return self._pass[1], self._pass[2]

    def _rows_of(self, block: Block, p: int) -> np.ndarray:
        rows = np.arange(block.start, block.stop)
        if self.shuffle:
            np.random.default_rng(_derive_seed(self.entropy, p, block.part, block.start)).shuffle(rows)
        return rows

    def window(self, start: int, n: int) -> list[tuple[int, np.ndarray]]:
        out: list[tuple[int, np.ndarray]] = []
        position, end = start, start + n
        while position < end:
            p, offset = divmod(position, self.pass_rows)
            order, ends = self._layout(p)
            k = bisect.bisect_right(ends, offset)
            block_start = ends[k] - (order[k].stop - order[k].start)
            rows = self._rows_of(order[k], p)[offset - block_start:]
            take = rows[: end - position]
            out.append((order[k].part, np.sort(take)))
            position += len(take)
        return out


class EmbeddingStream(IterableDataset):
    """Batches ``{"image_emb", "text_emb": (b, d) float32, "caption", "key", "skips", "worker_id"}`` of one
    rank; see the module docstring for the order, the slots and resume."""

    def __init__(self, parts: list[EmbeddingPart], blocks: list[Block], batch_size: int, batches_per_epoch: int,
                 shuffle: bool, seed: int, tag: int, start: torch.Tensor | None = None,
                 rank_world: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.parts, self.blocks = parts, blocks
        self.batch_size, self.batches_per_epoch = batch_size, batches_per_epoch
        self.shuffle, self.seed, self.tag = shuffle, seed, tag
        self.start = start
        self.rank_world = rank_world
        self._counter: SkipCounter | None = None

    def __len__(self) -> int:
        return self.batches_per_epoch

    def slot_blocks(self, slot: int, num_slots: int) -> list[Block]:
        blocks = self.blocks[slot::num_slots]
        if not blocks:
            raise ValueError(f"{len(self.blocks)} blocks of {BLOCK_ROWS} rows cannot feed {num_slots} slots "
                             "(ranks x data.num_workers): lower data.num_workers or add embeddings")
        return blocks

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = current_worker()
        rank, world = self.rank_world or resolve_rank_world()
        start = 0 if self.start is None else int(self.start)
        role = (start + worker) % num_workers  # the worker of the interrupted run this one continues
        first = (start + worker) // num_workers
        slot = rank * num_workers + role
        order = SlotOrder(self.slot_blocks(slot, world * num_workers), self.shuffle, (self.seed, self.tag, slot))
        if self._counter is None:
            self._counter = SkipCounter(EMBEDDING_REASONS)
        reader = PartReader(self.parts)
        count = worker_batches(self.batches_per_epoch, start, worker, num_workers)
        j = first
        for _ in range(count):
            batch = None
            while batch is None:  # a window of only bad rows yields nothing: take the next one
                batch = self._batch(reader, order.window(j * self.batch_size, self.batch_size))
                j += 1
            batch["skips"] = self._counter.as_ints()
            batch["worker_id"] = worker
            yield batch

    def _batch(self, reader: PartReader, window: list[tuple[int, np.ndarray]]) -> dict[str, Any] | None:
        pieces = [reader.read(part, rows) for part, rows in window]
        img = np.concatenate([p["image_emb"] for p in pieces])
        text = np.concatenate([p["text_emb"] for p in pieces])
        captions = [c for p in pieces for c in p["caption"]]
        keys = [k for p in pieces for k in p["key"]]
        keep = np.isfinite(img).all(axis=1) & np.isfinite(text).all(axis=1)
        for i in np.flatnonzero(~keep):
            self._counter.count("non_finite", keys[i], "non-finite embedding row")
        for i, caption in enumerate(captions):
            if keep[i] and (not isinstance(caption, str) or not caption.strip()):
                keep[i] = False
                self._counter.count("empty_caption", keys[i])
        if not keep.any():
            return None
        return {"image_emb": torch.from_numpy(img[keep]), "text_emb": torch.from_numpy(text[keep]),
                "caption": [c.strip() for c, k in zip(captions, keep, strict=True) if k],
                "key": [key for key, k in zip(keys, keep, strict=True) if k]}


class EmbeddingLookup:
    """Precomputed image embeddings of an embedding folder by sample key (the decoder's ``data.embeddings``): the
    decoder reads them instead of running the CLIP image tower. The key index (every part's ``key`` column) is
    built on first use in each worker; it holds every key of the folder in memory, so point it at the folder of
    the shards being read (``embed`` writes one per shard set), not at all of LAION."""

    def __init__(self, root: str | Path) -> None:
        self.parts = scan_embedding_folder(root)
        for part in self.parts:
            if "key" not in pq.read_schema(part.meta).names:
                raise ValueError(f"{part.meta} has no key column: the decoder joins embeddings to shards by key")
        self._index: dict[str, tuple[int, int]] | None = None
        self._reader = PartReader(self.parts)

    def _lookup(self) -> dict[str, tuple[int, int]]:
        if self._index is None:
            self._index = {}
            for i, part in enumerate(self.parts):
                keys = pq.read_table(part.meta, columns=["key"]).column("key").to_pylist()
                self._index.update({str(k): (i, r) for r, k in enumerate(keys)})
        return self._index

    def image_emb(self, key: str) -> torch.Tensor:
        """The image embedding ``(d,)`` float32 of ``key``; a key that is not there, or a non-finite row, skips the
        sample (``missing_field``)."""
        from datamodules.skips import SkipSample

        where = self._lookup().get(key)
        if where is None:
            raise SkipSample("missing_field", f"no precomputed embedding for key {key}")
        img, _ = self._reader.arrays(where[0])
        row = np.array(img[where[1]], dtype=np.float32)  # a copy: the part is memory-mapped read-only
        if not np.isfinite(row).all():
            raise SkipSample("missing_field", f"non-finite precomputed embedding for key {key}")
        return torch.from_numpy(row)


class EmbeddingDataModule(LightningDataModule):
    """``data.embeddings=DIR`` (clip-retrieval layout) → batches for the prior. The last ``data.val_samples`` rows
    are validation (never trained on); ``data.epoch_samples`` rows per rank make an epoch."""

    def __init__(self, cfg: DataConfig) -> None:
        super().__init__()
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_object(cfg)
        if cfg.embeddings is None:
            raise ValueError("EmbeddingDataModule needs data.embeddings")
        if cfg.batch_size < 1 or cfg.epoch_samples < cfg.batch_size:
            raise ValueError(f"need 1 <= data.batch_size ({cfg.batch_size}) <= data.epoch_samples "
                             f"({cfg.epoch_samples})")
        self.cfg = cfg
        self.parts = scan_embedding_folder(cfg.embeddings)  # bad folders fail now, before any training
        total = sum(p.rows for p in self.parts)
        self.val_rows = min(cfg.val_samples, total // 10)
        self.position = StreamPosition()

    @property
    def total_rows(self) -> int:
        return sum(p.rows for p in self.parts)

    def check_embed_dim(self, expected: int, what: str) -> None:
        """Fail naming the file and the configured width when the embeddings are of another width."""
        for part in self.parts:
            if part.dim != expected:
                raise ValueError(f"{part.img} holds {part.dim}-d embeddings, but {what} is {expected}")

    def _stream(self, train: bool, start: torch.Tensor | None) -> EmbeddingStream:
        cfg, total = self.cfg, self.total_rows
        if train:
            blocks = make_blocks(self.parts, 0, total - self.val_rows)
            batches = cfg.epoch_samples // cfg.batch_size
        else:
            _, world = resolve_rank_world()
            per_rank = -(-self.val_rows // world)  # one block per rank: every rank validates
            blocks = make_blocks(self.parts, total - self.val_rows, total, block_rows=max(1, per_rank))
            batches = max(1, self.val_rows // world // cfg.batch_size)
        return EmbeddingStream(self.parts, blocks, cfg.batch_size, batches, shuffle=train, seed=cfg.seed,
                               tag=0 if train else 1, start=start)

    @override
    def train_dataloader(self) -> StreamLoader:
        return make_loader(self._stream(True, self.position.start), self.cfg.num_workers, self.position,
                           self.cfg.worker_start)

    @override
    def val_dataloader(self) -> StreamLoader | list:
        if self.val_rows == 0:
            return []
        return make_loader(self._stream(False, None), 0, None)

    def statistics_loader(self) -> StreamLoader:
        """Training batches from the start, not counted as consumed (the prior's embedding statistics)."""
        return make_loader(self._stream(True, None), 0, None)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**self.position.state_dict(), "seed": self.cfg.seed}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.position.load_state_dict(state_dict)

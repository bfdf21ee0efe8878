"""What the image-text and video datamodules share: config checks, demo data, shards, loaders, resume.

Trainer requirement: pass ``use_distributed_sampler=False`` to ``lightning.Trainer`` (the streams split data
across ranks and workers themselves; Lightning leaves iterable datasets alone anyway, this makes it explicit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from omegaconf import DictConfig, OmegaConf
from typing_extensions import override

from datamodules.demo import DemoPaths, default_cache_dir, ensure_demo_data
from datamodules.filters import parse_filters
from datamodules.loader import WORKER_STARTS, StreamLoader, StreamPosition, make_loader
from datamodules.sharding import expand_shards, resolve_rank_world
from datamodules.stream import StreamSpec
from datamodules.transforms import batch_pixels_to_float
from mav_train.config.schema import DataConfig

TRAIN_TAG, VAL_TAG, IMAGE_TAG = 0, 1, 2  # seed separation of the streams


def validate_data_config(cfg: DataConfig) -> None:
    """Raise ValueError (naming the field and value) for settings no datamodule can run with."""
    positive = {
        "batch_size": cfg.batch_size,
        "resolution": cfg.resolution,
        "epoch_samples": cfg.epoch_samples,
        "min_image_size": cfg.min_image_size,
        "num_frames": cfg.num_frames,
        "demo_samples": cfg.demo_samples,
    }
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"data.{name} must be >= 1, got {value}")
    for name in ("num_workers", "val_samples", "shuffle_buffer", "image_batch_size"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"data.{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.clip_resolution is not None and cfg.clip_resolution < 1:
        raise ValueError(f"data.clip_resolution must be >= 1 or null, got {cfg.clip_resolution}")
    if cfg.epoch_samples < cfg.batch_size:
        raise ValueError(
            f"data.epoch_samples {cfg.epoch_samples} must be >= data.batch_size {cfg.batch_size}"
        )
    if cfg.short_clip not in ("adjust", "skip"):
        raise ValueError(f"data.short_clip must be 'adjust' or 'skip', got {cfg.short_clip!r}")
    if cfg.cond_frame not in ("first", "middle", "random"):
        raise ValueError(f"data.cond_frame must be 'first', 'middle' or 'random', got {cfg.cond_frame!r}")
    if cfg.worker_start not in WORKER_STARTS:
        raise ValueError(f"data.worker_start must be one of {', '.join(WORKER_STARTS)}, got {cfg.worker_start!r}")
    parse_filters(list(cfg.filters))


class ShardDataModule(LightningDataModule):
    """Base of the WebDataset datamodules. ``cache_dir`` is where demo data goes (default: the user cache)."""

    kind: str = ""
    demo_recipe: str = ""

    def __init__(self, cfg: DataConfig, cache_dir: str | Path | None = None) -> None:
        super().__init__()
        if isinstance(cfg, DictConfig):
            # The decode path reads config fields per sample; an OmegaConf attribute read costs ~100x a
            # dataclass one (bench/bench_video_data.py), so the workers get the plain dataclass.
            cfg = OmegaConf.to_object(cfg)
        if cfg.kind != self.kind:
            raise ValueError(f"{type(self).__name__} needs data.kind={self.kind!r}, got {cfg.kind!r}")
        validate_data_config(cfg)
        if cfg.shards is None and not cfg.demo:
            raise ValueError(
                f"data.shards is not set: pass data.shards='/path/{{00000..00099}}.tar' or use a demo recipe "
                f"(recipe={self.demo_recipe})"
            )
        self.cfg = cfg
        self.filters = parse_filters(list(cfg.filters))
        self.demo_root = Path(cache_dir) / "demo" if cache_dir is not None else default_cache_dir() / "demo"
        self.position = StreamPosition()
        self._demo: DemoPaths | None = None

    @property
    def clip_resolution(self) -> int:
        return self.cfg.clip_resolution or self.cfg.resolution

    def demo_kinds(self) -> tuple[str, ...]:
        """Which demo sets this datamodule reads (``images``, ``videos``)."""
        raise NotImplementedError

    def demo_paths(self) -> DemoPaths:
        """The demo set (generated on first use; cheap afterwards)."""
        if self._demo is None:
            self._demo = ensure_demo_data(self.demo_root, num_samples=self.cfg.demo_samples,
                                          kinds=self.demo_kinds())
        return self._demo

    @override
    def prepare_data(self) -> None:
        if self.cfg.shards is None:
            self.demo_paths()

    def train_shard_spec(self) -> str:
        """The ``data.shards`` pattern, or the demo set's."""
        raise NotImplementedError

    def stream_spec(self, train: bool) -> StreamSpec:
        """Train: shuffled, ``epoch_samples // batch_size`` batches per rank. Val: in order, from the start,
        ``val_samples`` spread over the ranks (at least one batch per rank), from ``val_shards`` or else the
        first samples of the training shards (a monitoring slice that is *not* held out of training)."""
        rank, world = resolve_rank_world()
        cfg = self.cfg
        if train:
            shards = expand_shards(self.train_shard_spec(), "data.shards")
            batches = cfg.epoch_samples // cfg.batch_size
        else:
            source = cfg.val_shards if cfg.val_shards is not None else self.train_shard_spec()
            shards = expand_shards(source, "data.val_shards" if cfg.val_shards is not None else "data.shards")
            batches = max(1, cfg.val_samples // world // cfg.batch_size)
        return StreamSpec(
            shards=tuple(shards),
            batch_size=cfg.batch_size,
            batches_per_epoch=batches,
            shuffle=train,
            shuffle_buffer=cfg.shuffle_buffer,
            seed=cfg.seed,
            rank=rank,
            world_size=world,
            tag=TRAIN_TAG if train else VAL_TAG,
            memory_cache_mb=cfg.memory_cache_mb if train else 0,
        )

    @override
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 pixels (what the loaders ship: 4x less traffic than float32) -> float32 in [-1, 1], on the
        batch's device; every other entry unchanged."""
        return batch_pixels_to_float(batch)

    def loader(self, dataset: Any, train: bool) -> StreamLoader:
        return make_loader(dataset, self.cfg.num_workers, self.position if train else None, self.cfg.worker_start)

    @override
    def state_dict(self) -> dict[str, Any]:
        """``batches_consumed`` by this rank's training loop (guarantee: see :mod:`datamodules.loader`)."""
        return {**self.position.state_dict(), "seed": self.cfg.seed}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.position.load_state_dict(state_dict)

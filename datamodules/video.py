"""Unlabeled video clips from video2dataset shards for D^t, ↑F and SR_l^t (captions are ignored)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import IterableDataset
from typing_extensions import override

from datamodules.base import ShardDataModule
from datamodules.curriculum import FpsCurriculum
from datamodules.image_text import endless_image_stream, sample_meta
from datamodules.loader import StreamLoader
from datamodules.skips import VIDEO_REASONS, SkipCounter, SkipSample
from datamodules.stream import ShardStream
from datamodules.transforms import square_frames_uint8
from datamodules.video_decode import (
    VIDEO_EXTENSIONS,
    clip_indices,
    is_variable_frame_rate,
    native_fps,
    open_video,
)
from mav_train.config.schema import DataConfig


class VideoSampleDecoder:
    """Raw sample -> ``video`` (3, T, R, R), ``fps`` (the fps used), ``clip_image`` (3, C, C), ``key``;
    pixels uint8 (see :mod:`datamodules.transforms`).

    The target fps is drawn from the curriculum at the step held in ``step`` (a shared-memory scalar, so the
    training process can move it while workers run), capped at the native fps; only the clip's frames are
    decoded. The conditioning frame (first, middle or random frame of the clip) is cut from the native frame.
    """

    reasons = VIDEO_REASONS
    deterministic = False  # every read draws its clip (start, fps) at random: never memory-cached

    def __init__(self, cfg: DataConfig, clip_resolution: int, step: torch.Tensor) -> None:
        self.cfg = cfg
        self.clip_resolution = clip_resolution
        self.curriculum = FpsCurriculum(cfg.curriculum)
        self.step = step

    def _cond_index(self, rng: np.random.Generator) -> int:
        if self.cfg.cond_frame == "first":
            return 0
        if self.cfg.cond_frame == "middle":
            return self.cfg.num_frames // 2
        return int(rng.integers(self.cfg.num_frames))

    def decode(
        self, sample: dict[str, Any], rng: np.random.Generator, counter: SkipCounter
    ) -> dict[str, Any]:
        key = str(sample["__key__"])
        extension = next((ext for ext in VIDEO_EXTENSIONS if ext in sample), None)
        if extension is None:
            raise SkipSample("missing_field", f"no video among {VIDEO_EXTENSIONS}, has {sorted(sample)}")
        meta = sample_meta(sample)
        reader = open_video(sample[extension])
        fps_native = native_fps(meta, reader)
        if is_variable_frame_rate(reader):
            raise SkipSample("vfr", "non-uniform frame timestamps")
        target = self.curriculum.sample(rng, int(self.step))
        indices, fps, adjusted = clip_indices(
            len(reader), fps_native, target, self.cfg.num_frames, self.cfg.short_clip, rng,
            integer_stride=self.cfg.integer_stride,
        )
        try:
            frames = reader.get_batch(indices.tolist()).asnumpy()
        except Exception as error:  # a file that opens but whose frames do not decode
            raise SkipSample("decode_error", repr(error)[:200]) from error
        if min(frames.shape[1:3]) < self.cfg.min_image_size:
            raise SkipSample("too_small", f"{frames.shape[2]}x{frames.shape[1]} < {self.cfg.min_image_size}")
        if adjusted:
            counter.count("fps_adjusted", key, f"{target:.2f} -> {fps:.2f} fps", warn=False)
        cond = self._cond_index(rng)
        return {
            "video": square_frames_uint8(frames, self.cfg.resolution),
            "fps": fps,
            "clip_image": square_frames_uint8(frames[cond : cond + 1], self.clip_resolution)[:, 0],
            "key": key,
        }

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "video": torch.stack([item["video"] for item in items]),
            "fps": torch.tensor([item["fps"] for item in items], dtype=torch.float32),
            "clip_image": torch.stack([item["clip_image"] for item in items]),
            "key": [item["key"] for item in items],
        }


class JointStream(IterableDataset):
    """Video batches, each with an image batch from an endless image stream: ``images``, ``images_clip``."""

    def __init__(self, videos: ShardStream, images: ShardStream) -> None:
        super().__init__()
        self.videos = videos
        self.images = images

    def __len__(self) -> int:
        return len(self.videos)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        images = iter(self.images)
        for batch in self.videos:
            extra = next(images)
            batch["images"], batch["images_clip"] = extra["image"], extra["clip_image"]
            batch["skips"] = {**batch["skips"], **extra["skips"]}
            yield batch


class VideoDataModule(ShardDataModule):
    """video2dataset shards -> ``{"video": (b,3,T,R,R), "fps": (b,), "clip_image": (b,3,C,C),
    "key": list[str], "skips": {reason: int}, "worker_id": int}``, plus ``images``
    (bi,3,R,R) and ``images_clip`` (bi,3,C,C) when ``data.image_batch_size`` > 0 (from ``data.image_shards``,
    or the demo images for demo data). The loaders yield the pixels as uint8 in [0, 255];
    :meth:`on_after_batch_transfer` makes them float32 in [-1, 1] for the training step.

    ``data.filters`` are image filters: they apply to the joint image stream (an error without one).
    Validation clips use the end-of-curriculum fps distribution with fixed seeds, so every validation run sees
    the same clips. Call :meth:`set_step` every training batch (the fps curriculum callback does).
    """

    kind = "video"
    demo_recipe = "demo/temporal_decoder"

    def __init__(self, cfg: DataConfig, cache_dir: str | Path | None = None) -> None:
        super().__init__(cfg, cache_dir)
        if cfg.image_batch_size > 0 and cfg.image_shards is None and not cfg.demo:
            raise ValueError(
                f"data.image_batch_size is {cfg.image_batch_size} but data.image_shards is not set"
            )
        if cfg.image_shards is not None and cfg.image_batch_size == 0:
            raise ValueError(f"data.image_shards={cfg.image_shards!r} needs data.image_batch_size > 0")
        if cfg.filters and cfg.image_batch_size == 0:
            raise ValueError(
                f"data.filters {list(cfg.filters)} filter images, but this video config has no "
                "image stream (data.image_shards / data.image_batch_size)"
            )
        self.curriculum = FpsCurriculum(cfg.curriculum)
        self.step = torch.zeros((), dtype=torch.long).share_memory_()
        self._val_step = torch.full((), cfg.curriculum.steps, dtype=torch.long)

    def set_step(self, step: int) -> None:
        """The global training step the fps curriculum follows (seen by running workers)."""
        self.step.fill_(int(step))

    @override
    def demo_kinds(self) -> tuple[str, ...]:
        return ("videos", "images") if self.cfg.image_batch_size > 0 else ("videos",)

    @override
    def train_shard_spec(self) -> str:
        return self.cfg.shards if self.cfg.shards is not None else self.demo_paths().videos

    def image_shard_spec(self) -> str:
        return self.cfg.image_shards if self.cfg.image_shards is not None else self.demo_paths().images

    @override
    def train_dataloader(self) -> StreamLoader:
        decoder = VideoSampleDecoder(self.cfg, self.clip_resolution, self.step)
        videos = ShardStream(self.stream_spec(train=True), decoder, start=self.position.start)
        if self.cfg.image_batch_size == 0:
            return self.loader(videos, train=True)
        images = endless_image_stream(
            self,
            self.image_shard_spec(),
            "data.image_shards",
            self.cfg.image_batch_size,
            start=self.position.start,
        )
        return self.loader(JointStream(videos, images), train=True)

    @override
    def val_dataloader(self) -> StreamLoader | list:
        if self.cfg.val_samples == 0:
            return []
        decoder = VideoSampleDecoder(self.cfg, self.clip_resolution, self._val_step)
        return self.loader(ShardStream(self.stream_spec(train=False), decoder), train=False)

    @override
    def state_dict(self) -> dict[str, Any]:
        """Batches consumed, the curriculum step, and the curriculum itself (so a checkpoint records it)."""
        curriculum = self.cfg.curriculum  # a dataclass, or a DictConfig when the config stayed in OmegaConf
        as_dict = asdict(curriculum) if is_dataclass(curriculum) else OmegaConf.to_container(curriculum)
        return {**super().state_dict(), "step": int(self.step), "curriculum": as_dict}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.set_step(int(state_dict.get("step", 0)))

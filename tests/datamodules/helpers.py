"""Builders of tiny shards (good and deliberately broken samples) for the datamodule tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.demo import ffprobe_metadata
from datamodules.mp4 import encode_mp4
from datamodules.shard_writer import ShardRecord, write_shard
from mav_train.config.schema import CurriculumConfig, DataConfig

LEVEL_STEP = 4  # the level videos: frame i is uniformly grey at LEVEL_STEP * i


def encode_image(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def solid_jpg(size: int = 40, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    return encode_image(Image.new("RGB", (size, size), color))


def image_record(
    key: str, image_bytes: bytes | None, caption: str = "a red square", ext: str = "jpg", **meta: object
) -> ShardRecord:
    files = {"txt": caption.encode()}
    if image_bytes is not None:
        files[ext] = image_bytes
    return ShardRecord(
        key=key, files=files, meta={"caption": caption, "key": key, "status": "success", **meta}
    )


def level_frames(num_frames: int, size: int = 32) -> list[np.ndarray]:
    return [np.full((size, size, 3), LEVEL_STEP * i, dtype=np.uint8) for i in range(num_frames)]


def level_video_record(
    key: str, num_frames: int, fps: int = 30, with_json: bool = True, pts: list[int] | None = None
) -> ShardRecord:
    mp4 = encode_mp4(level_frames(num_frames), fps, pts=pts)
    meta = {
        "caption": "grey",
        "key": key,
        "status": "success",
        "yt_meta_dict": None,
        "video_metadata": ffprobe_metadata(32, 32, num_frames, fps, len(mp4)),
    }
    return ShardRecord(
        key=key, files={"mp4": mp4, "txt": b"ignored caption"}, meta=meta, write_json=with_json
    )


def frame_indices(video: np.ndarray) -> np.ndarray:
    """Frame indices of a level video clip ``c t h w`` of uint8 pixels, as the loader yields it (from each
    frame's grey level)."""
    levels = video.astype(np.float64).mean(axis=(0, 2, 3))
    return np.rint(levels / LEVEL_STEP).astype(int)


def write_truncated_shard(out_dir: Path, shard: int, record: ShardRecord, keep_bytes: int = 700) -> Path:
    """A shard whose tar is cut inside its first sample."""
    path = write_shard(out_dir, shard, [record], {"count": 1})
    path.write_bytes(path.read_bytes()[:keep_bytes])
    return path


def pattern(out_dir: Path, num_shards: int) -> str:
    return str(out_dir / f"{{00000..{num_shards - 1:05d}}}.tar")


def data_config(shards: str | None, **overrides: object) -> DataConfig:
    base = dict(
        kind="image_text",
        shards=shards,
        batch_size=2,
        num_workers=0,
        resolution=16,
        clip_resolution=8,
        epoch_samples=8,
        val_samples=4,
        shuffle_buffer=4,
        min_image_size=16,
        seed=0,
    )
    base.update(overrides)
    return DataConfig(**base)


def fixed_fps(fps: float) -> CurriculumConfig:
    return CurriculumConfig(fps_min=fps, fps_max=fps, steps=10)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())

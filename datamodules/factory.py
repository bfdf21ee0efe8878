"""The datamodule a config's ``data.kind`` names."""

from __future__ import annotations

from pathlib import Path

from datamodules.base import ShardDataModule
from datamodules.image_text import ImageTextDataModule
from datamodules.video import VideoDataModule
from mav_train.config.schema import DataConfig


def build_datamodule(cfg: DataConfig, cache_dir: str | Path | None = None) -> ShardDataModule:
    """``ImageTextDataModule`` for kind image_text, ``VideoDataModule`` for kind video."""
    if cfg.kind == "image_text":
        return ImageTextDataModule(cfg, cache_dir)
    if cfg.kind == "video":
        return VideoDataModule(cfg, cache_dir)
    raise ValueError(f"data.kind must be 'image_text' or 'video', got {cfg.kind!r}")

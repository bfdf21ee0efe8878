"""The datamodule a config's ``data.kind`` names."""

from __future__ import annotations

from pathlib import Path

from datamodules.base import ShardDataModule
from datamodules.embeddings import EmbeddingDataModule
from datamodules.image_text import ImageTextDataModule
from datamodules.video import VideoDataModule
from mav_train.config.schema import DataConfig


def build_datamodule(cfg: DataConfig, cache_dir: str | Path | None = None,
                     component: str | None = None) -> ShardDataModule | EmbeddingDataModule:
    """``ImageTextDataModule`` for kind image_text, ``VideoDataModule`` for kind video; for the prior with
    ``data.embeddings`` set, ``EmbeddingDataModule`` (precomputed CLIP embeddings)."""
    if cfg.embeddings == "demo":
        raise ValueError("data.embeddings=demo is resolved by `fit`, which computes the demo shards' embeddings into "
                         "the cache (mav_train.components.demo_embeddings); pass an embedding folder here")
    if cfg.embeddings is not None and component == "prior":
        return EmbeddingDataModule(cfg)
    if cfg.embeddings is not None and component not in (None, "decoder"):
        raise ValueError(f"data.embeddings is read by the prior (training data) and the decoder (precomputed image "
                         f"embeddings joined by key), not by {component}")
    if cfg.kind == "image_text":
        return ImageTextDataModule(cfg, cache_dir)
    if cfg.kind == "video":
        return VideoDataModule(cfg, cache_dir)
    raise ValueError(f"data.kind must be 'image_text' or 'video', got {cfg.kind!r}")

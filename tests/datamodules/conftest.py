"""Fixtures: tiny demo-writer shards in tmp directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.demo import write_image_shards, write_video_shards


@pytest.fixture(scope="module")
def image_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 shards x 8 toy-world images (32 px)."""
    out = tmp_path_factory.mktemp("images")
    write_image_shards(out, num_samples=24, samples_per_shard=8, resolution=32, seed=3)
    return out


@pytest.fixture(scope="module")
def video_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 shards x 3 toy-world videos (32 px, 1 s at 30 fps)."""
    out = tmp_path_factory.mktemp("videos")
    write_video_shards(
        out, num_samples=6, samples_per_shard=3, resolution=32, num_seconds=1.0, fps=30, seed=3
    )
    return out

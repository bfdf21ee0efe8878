"""WebDataset datamodules (img2dataset / video2dataset layouts) and the built-in toy-world demo data."""

from datamodules.curriculum import FpsCurriculum
from datamodules.demo import (
    DemoPaths,
    default_cache_dir,
    ensure_demo_data,
    write_image_shards,
    write_video_shards,
)
from datamodules.factory import build_datamodule
from datamodules.image_text import ImageTextDataModule
from datamodules.skips import SkipTally
from datamodules.video import VideoDataModule

__all__ = [
    "DemoPaths",
    "FpsCurriculum",
    "ImageTextDataModule",
    "SkipTally",
    "VideoDataModule",
    "build_datamodule",
    "default_cache_dir",
    "ensure_demo_data",
    "write_image_shards",
    "write_video_shards",
]

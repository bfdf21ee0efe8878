"""WebDataset datamodules (img2dataset / video2dataset layouts) and the built-in toy-world demo data.

The names below are imported on first use (PEP 562), so that ``import datamodules.toy_world`` (the judge, ``prepare``,
``evaluate toy``) does not pull in Lightning: importing it costs about 6 s of a CLI call on this project's 2-core CPU.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "FpsCurriculum": "datamodules.curriculum",
    "DemoPaths": "datamodules.demo",
    "default_cache_dir": "datamodules.demo",
    "ensure_demo_data": "datamodules.demo",
    "write_image_shards": "datamodules.demo",
    "write_video_shards": "datamodules.demo",
    "build_datamodule": "datamodules.factory",
    "ImageTextDataModule": "datamodules.image_text",
    "SkipTally": "datamodules.skips",
    "VideoDataModule": "datamodules.video",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'datamodules' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)

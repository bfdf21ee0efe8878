"""Where the metrics read their items: a directory of samples (``NAME.mp4`` / ``NAME.png`` with an optional
``NAME.txt`` caption, what ``sample`` and ``generate`` write) or WebDataset shards (img2dataset / video2dataset
output: ``KEY.mp4`` or ``KEY.jpg`` with ``KEY.txt`` or a json caption).

Items are read lazily, in a fixed order (names sorted; shards in the order of the spec), so a metric over 2048
clips never holds more than a batch of them. Unreadable items are skipped and counted by reason, never fatal.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi")
GRID_STEM = "samples"  # the grid ``sample`` writes beside the per-sample files; not an item


@dataclass(frozen=True)
class MediaItem:
    """One image (``pixels``: ``h w 3`` uint8) or clip (``t h w 3`` uint8) and its caption (None when absent)."""

    name: str
    pixels: np.ndarray
    caption: str | None

    @property
    def is_video(self) -> bool:
        return self.pixels.ndim == 4


@dataclass
class MediaSource:
    """An iterable of :class:`MediaItem`; ``skipped`` counts what could not be read, by reason
    (``unreadable_file``, ``no_media``, ``corrupt_shard``). Iterating again starts from the beginning."""

    spec: str
    skipped: Counter = field(default_factory=Counter)

    def __iter__(self) -> Iterator[MediaItem]:
        path = Path(self.spec).expanduser()
        if path.is_dir() and not any(path.glob("*.tar")):  # a directory of .tar files is read as shards
            return self._directory(path)
        return self._shards()

    def _directory(self, directory: Path) -> Iterator[MediaItem]:
        paths = sorted(p for p in directory.iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES and p.stem != GRID_STEM)
        for path in paths:
            try:
                pixels = decode_media(path.read_bytes(), path.suffix.lower())
            except (OSError, ValueError, av.FFmpegError):
                self.skipped["unreadable_file"] += 1
                continue
            caption_path = path.with_suffix(".txt")
            caption = caption_path.read_text(errors="replace").strip() if caption_path.is_file() else None
            yield MediaItem(path.stem, pixels, caption or None)

    def _shards(self) -> Iterator[MediaItem]:
        from datamodules.sharding import expand_shards, iter_tar_samples

        for url in expand_shards(self.spec, field="real"):
            try:
                for sample in iter_tar_samples(url):
                    item = self._shard_item(sample)
                    if item is not None:
                        yield item
            except (tarfile.ReadError, OSError, ValueError):
                self.skipped["corrupt_shard"] += 1

    def _shard_item(self, sample: dict) -> MediaItem | None:
        suffix = next((s for s in VIDEO_SUFFIXES + IMAGE_SUFFIXES if s[1:] in sample), None)
        if suffix is None:
            self.skipped["no_media"] += 1
            return None
        try:
            pixels = decode_media(sample[suffix[1:]], suffix)
        except (OSError, ValueError, av.FFmpegError):
            self.skipped["unreadable_file"] += 1
            return None
        return MediaItem(str(sample["__key__"]), pixels, shard_caption(sample))


def decode_media(data: bytes, suffix: str) -> np.ndarray:
    """Image bytes → ``h w 3`` uint8; video bytes → all frames ``t h w 3`` uint8 (PyAV). ValueError when empty."""
    if not data:
        raise ValueError("zero-length file")
    if suffix in IMAGE_SUFFIXES:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    with av.open(io.BytesIO(data)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    if not frames:
        raise ValueError("no video frames")
    return np.stack(frames)


def shard_caption(sample: dict) -> str | None:
    """The ``.txt`` caption, else the json ``caption``, else None."""
    if "txt" in sample:
        return sample["txt"].decode("utf-8", errors="replace").strip() or None
    if "json" in sample:
        try:
            caption = json.loads(sample["json"]).get("caption")
        except (ValueError, AttributeError):
            return None
        return caption.strip() or None if isinstance(caption, str) else None
    return None


def check_source(spec: str | None, name: str) -> str:
    """``spec`` when it names a directory or shard files; ValueError (one line, naming ``name``) otherwise."""
    if not spec:
        raise ValueError(f"missing required value '{name}' (a directory of samples or shards like "
                         "'/data/{00000..00009}.tar')")
    path = Path(spec).expanduser()
    if path.is_dir():
        return spec
    if path.is_file() and path.suffix != ".tar":
        raise ValueError(f"{name}={spec} is a file; pass a directory of samples or .tar shards")
    from datamodules.sharding import expand_shards

    expand_shards(spec, field=name)  # raises when nothing matches
    return spec

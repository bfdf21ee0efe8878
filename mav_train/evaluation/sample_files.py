"""Reading a directory of samples for judging: ``NAME.png`` images or ``NAME.mp4`` clips, each with its caption
in ``NAME.txt``. Bad items are skipped and counted by reason, never fatal."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from PIL import Image

from mav_train.evaluation.toy_labels import parse_caption

IMAGE_SUFFIX, VIDEO_SUFFIX = ".png", ".mp4"
GRID_STEM = "samples"  # the grid `sample` writes beside the per-sample files; not an item


@dataclass
class SampleSet:
    """Decoded items (``h w 3`` images or ``t h w 3`` clips, uint8), their captions and file stems, and the
    skipped files counted by reason (``missing_caption``, ``unreadable_file``, ``not_a_toy_caption``)."""

    kind: str
    items: list[np.ndarray] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return len(self.items) + sum(self.skipped.values())


def decode_mp4(path: Path) -> np.ndarray:
    """All frames of a video file as ``t h w 3`` uint8 (PyAV). Raises ValueError when it has no frames."""
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path} has no video frames")
    return np.stack(frames)


def decode_png(path: Path) -> np.ndarray:
    """An image file as ``h w 3`` uint8."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def detect_kind(directory: Path) -> str:
    """"image" when the directory holds .png files, "video" when it holds .mp4 files; ValueError when neither or
    both (then say ``kind=``)."""
    images, videos = any(directory.glob(f"*{IMAGE_SUFFIX}")), any(directory.glob(f"*{VIDEO_SUFFIX}"))
    if images and videos:
        raise ValueError(f"{directory} holds both {IMAGE_SUFFIX} and {VIDEO_SUFFIX} files; pass kind=image|video")
    if not (images or videos):
        raise ValueError(f"no {IMAGE_SUFFIX} or {VIDEO_SUFFIX} samples in {directory}")
    return "image" if images else "video"


def load_samples(directory: str | Path, kind: str = "auto") -> SampleSet:
    """Read every ``*.png`` (kind image) or ``*.mp4`` (kind video) in ``directory`` with its ``.txt`` caption,
    in name order, except ``samples.png`` / ``samples.mp4`` (the grid ``sample`` writes). Raises ValueError
    when the directory is missing or holds no samples of that kind."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"samples directory {directory} does not exist")
    kind = detect_kind(directory) if kind == "auto" else kind
    if kind not in ("image", "video"):
        raise ValueError(f"kind must be auto, image or video, got {kind!r}")
    suffix = IMAGE_SUFFIX if kind == "image" else VIDEO_SUFFIX
    paths = sorted(p for p in directory.glob(f"*{suffix}") if p.stem != GRID_STEM)
    if not paths:
        raise ValueError(f"no {kind} samples in {directory}")
    samples = SampleSet(kind=kind)
    for path in paths:
        caption_path = path.with_suffix(".txt")
        if not caption_path.is_file():
            samples.skipped["missing_caption"] += 1
            continue
        caption = caption_path.read_text(errors="replace").strip()
        try:
            parse_caption(caption)
        except ValueError:
            samples.skipped["not_a_toy_caption"] += 1
            continue
        try:
            item = decode_png(path) if kind == "image" else decode_mp4(path)
        except (OSError, ValueError, av.FFmpegError):
            samples.skipped["unreadable_file"] += 1
            continue
        if item.shape[-3] != item.shape[-2]:
            samples.skipped["unreadable_file"] += 1  # the judge reads square frames only
            continue
        samples.items.append(item)
        samples.captions.append(caption)
        samples.names.append(path.stem)
    return samples

"""What each metric takes from an item: ``frames`` consecutive frames of a clip (FVD, IS), or single frames
(FID, CLIPSIM). Items that do not fit are counted into their source's ``skipped`` (``not_a_video``,
``too_short``) and left out; at most ``limit`` selections are made."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from mav_train.evaluation.media_source import MediaSource


def clips(source: MediaSource, frames: int, limit: int | None, rng: np.random.Generator | None = None
          ) -> Iterator[np.ndarray]:
    """``frames`` consecutive frames (``t h w 3`` uint8) of each clip: from the first frame, or from a random
    offset drawn from ``rng`` when given (StyleGAN-V: generated clips from the start, real clips at a random
    offset). Images count as ``not_a_video``, clips shorter than ``frames`` as ``too_short``."""
    taken = 0
    for item in source:
        if limit is not None and taken >= limit:
            return
        if not item.is_video:
            source.skipped["not_a_video"] += 1
            continue
        length = item.pixels.shape[0]
        if length < frames:
            source.skipped["too_short"] += 1
            continue
        start = int(rng.integers(0, length - frames + 1)) if rng is not None else 0
        taken += 1
        yield item.pixels[start:start + frames]


def frame_indices(length: int, per_video: int | None) -> np.ndarray:
    """All ``length`` frame indices, or ``per_video`` of them evenly spaced (first and last included)."""
    if per_video is None or per_video >= length:
        return np.arange(length)
    return np.unique(np.linspace(0, length - 1, per_video).round().astype(int))


def frames(source: MediaSource, per_video: int | None, limit: int | None) -> Iterator[np.ndarray]:
    """Single frames ``h w 3`` uint8: each image, and every frame (or ``per_video`` evenly spaced frames) of
    each clip; at most ``limit`` frames."""
    taken = 0
    for item in source:
        pixels = item.pixels if item.is_video else item.pixels[None]
        for index in frame_indices(pixels.shape[0], per_video):
            if limit is not None and taken >= limit:
                return
            taken += 1
            yield pixels[index]

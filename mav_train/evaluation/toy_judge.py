"""The toy-world judge: does a generated image or video show what its caption says?

The toy world (``datamodules.toy_world``) is ours and fully labelled, so every component can be measured on it
(DESIGN.md §6, "The toy world as a measuring instrument"). This module is the public API:

- :func:`parse_caption` — caption → :class:`ToyLabel` (the ground truth)
- :func:`read_image` — one ``h w 3`` uint8 frame → :class:`Reading`
- :func:`read_video` — one ``t h w 3`` uint8 clip → :class:`VideoReading`
- :func:`score_images` / :func:`score_videos` — samples + captions → :class:`ToyScores` (accuracies)

An unreadable item (noise, a flat image, no clear single shape) counts as wrong on every attribute. Pure numpy,
PIL and torch (only to accept tensors); deterministic; about 1-2 ms per 32-64 px frame on one CPU core.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from einops import rearrange

from mav_train.evaluation.toy_labels import ToyLabel, parse_caption
from mav_train.evaluation.toy_reader import Reading, read_image
from mav_train.evaluation.toy_video import IDENTITY_LOSSES, VideoReading, identity_loss, read_video

__all__ = ["ToyLabel", "ToyScores", "Reading", "VideoReading", "parse_caption", "read_image", "read_video",
           "score_images", "score_videos", "to_uint8"]

IMAGE_ATTRIBUTES = ("background", "color", "shape", "position", "size")
VIDEO_EXTRAS = ("identity", "displacement_px", "flicker", "direction")


def to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Samples as channels-last uint8. A float tensor in [-1, 1], ``b 3 h w`` → ``b h w 3`` or ``b 3 t h w`` →
    ``b t h w 3``; a uint8 array or tensor is returned unchanged (already channels-last)."""
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.uint8:
            return x.cpu().numpy()
        pixels = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        if pixels.ndim == 4:
            return rearrange(pixels, "b c h w -> b h w c").numpy()
        if pixels.ndim == 5:
            return rearrange(pixels, "b c t h w -> b t h w c").numpy()
        raise ValueError(f"to_uint8 expects b 3 h w or b 3 t h w, got shape {tuple(x.shape)}")
    array = np.asarray(x)
    if array.dtype != np.uint8:
        raise ValueError(f"to_uint8: a numpy array must already be uint8 channels-last, got {array.dtype}")
    return array


def _items(samples: torch.Tensor | Iterable[np.ndarray]) -> list[np.ndarray]:
    if isinstance(samples, torch.Tensor):
        return list(to_uint8(samples))
    return [to_uint8(item) for item in samples]


@dataclass(frozen=True)
class ToyScores:
    """Per-attribute accuracies in [0, 1] over ``n`` items (None where the captions do not name the attribute,
    e.g. position for videos). ``counts``: correct items per attribute (for videos: correct frames for
    background/color/shape/readable). Videos add ``identity``, ``displacement_px``, ``flicker`` (0-255 levels)
    and ``direction`` (None for images)."""

    n: int
    readable: float
    background: float
    color: float
    shape: float
    position: float | None
    size: float
    counts: dict[str, int] = field(default_factory=dict)
    identity: float | None = None
    displacement_px: float | None = None
    flicker: float | None = None
    direction: float | None = None
    kind: str = "image"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"n", "background", "color", "shape", "position", "size", "readable", "counts", ...}``."""
        out: dict[str, Any] = {"n": self.n, "kind": self.kind}
        out.update({name: getattr(self, name) for name in (*IMAGE_ATTRIBUTES, "readable")})
        if self.kind == "video":
            out.update({name: getattr(self, name) for name in VIDEO_EXTRAS})
        out["counts"] = dict(self.counts)
        return out

    def table(self) -> str:
        """A two-column text table, one attribute per line."""
        rows = [(name, value) for name, value in self.as_dict().items() if name not in ("counts", "kind")]
        lines = [f"toy judge ({self.kind}s)", f"{'attribute':<16} {'score':>8}"]
        for name, value in rows:
            if value is None:
                text = "-"
            elif name in ("n",):
                text = str(value)
            elif name in ("displacement_px", "flicker"):
                text = f"{value:.2f}"
            else:
                text = f"{100 * value:.1f}%"
            lines.append(f"{name:<16} {text:>8}")
            frames = self.counts.get("frames", 0)
            if name == "identity" and frames:  # the frames that break it, by reason, as shares of all frames
                for loss in IDENTITY_LOSSES:
                    label = "  " + loss.removeprefix("identity_").replace("_", " ")
                    lines.append(f"{label:<16} {100 * self.counts.get(loss, 0) / frames:>7.1f}%")
        return "\n".join(lines)


def _labels(captions: Sequence[str], n: int) -> list[ToyLabel]:
    if len(captions) != n:
        raise ValueError(f"{n} samples but {len(captions)} captions")
    return [parse_caption(caption) for caption in captions]


def _image_hits(reading: Reading, label: ToyLabel) -> dict[str, bool]:
    hits = {name: reading.readable and getattr(reading, name) == getattr(label, name) for name in IMAGE_ATTRIBUTES}
    hits["readable"] = reading.readable
    return hits


def score_images(images: torch.Tensor | Iterable[np.ndarray], captions: Sequence[str]) -> ToyScores:
    """Judge images against their captions. ``images``: ``h w 3`` uint8 arrays, or a float tensor ``b 3 h w`` in
    [-1, 1]. Raises ValueError for a caption that is not a toy-world caption or a count mismatch."""
    items = _items(images)
    labels = _labels(captions, len(items))
    counts = dict.fromkeys((*IMAGE_ATTRIBUTES, "readable"), 0)
    for image, label in zip(items, labels, strict=True):
        for name, hit in _image_hits(read_image(image), label).items():
            counts[name] += int(hit)
    n = len(items)
    share = {name: counts[name] / n if n else 0.0 for name in counts}
    return ToyScores(n=n, readable=share["readable"], background=share["background"], color=share["color"],
                     shape=share["shape"], position=share["position"], size=share["size"], counts=counts)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def score_videos(videos: torch.Tensor | Iterable[np.ndarray], captions: Sequence[str]) -> ToyScores:
    """Judge clips against their captions. ``videos``: ``t h w 3`` uint8 arrays, or a float tensor ``b 3 t h w``
    in [-1, 1]. Background, colour and shape are per-frame accuracies averaged over all frames of all clips
    (unreadable frames are wrong); size compares the clip's median shape extent with the caption; ``direction``
    counts clips whose net horizontal motion matches "moving left/right" among clips whose caption says so."""
    from datamodules.toy_world import size_word

    items = _items(videos)
    labels = _labels(captions, len(items))
    counts = dict.fromkeys(("background", "color", "shape", "readable", "size", "direction", "frames",
                            *IDENTITY_LOSSES), 0)
    readings = [read_video(clip) for clip in items]
    directed = 0
    for reading, label in zip(readings, labels, strict=True):
        for frame in reading.frames:
            for name, hit in _image_hits(frame, label).items():
                if name in ("background", "color", "shape", "readable"):
                    counts[name] += int(hit)
            loss = identity_loss(frame, reading.color, reading.shape)  # counts: why identity is lost
            if loss:
                counts[loss] += 1
        counts["frames"] += len(reading.frames)
        counts["size"] += int(reading.size_fraction is not None and size_word(reading.size_fraction) == label.size)
        if label.direction is not None:
            directed += 1
            counts["direction"] += int(reading.direction == label.direction)
    n, frames = len(items), max(counts["frames"], 1)
    return ToyScores(
        n=n, kind="video", readable=counts["readable"] / frames, background=counts["background"] / frames,
        color=counts["color"] / frames, shape=counts["shape"] / frames, position=None,
        size=counts["size"] / n if n else 0.0, counts=counts,
        identity=float(np.mean([r.identity for r in readings])) if readings else 0.0,
        displacement_px=_mean([r.displacement_px for r in readings]),
        flicker=_mean([r.flicker for r in readings]),
        direction=counts["direction"] / directed if directed else None,
    )

"""Reading a toy-world clip frame by frame: identity across frames, motion, flicker and direction."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from mav_train.evaluation.toy_reader import Reading, read_image


@dataclass(frozen=True)
class VideoReading:
    """What one ``t h w 3`` clip shows. ``frames``: one Reading per frame. ``color``/``shape``: the majority
    over readable frames (None when no frame is readable). ``identity``: share of frames whose colour and shape
    both equal the majority (unreadable frames count as inconsistent). ``displacement_px``: mean centroid
    displacement between consecutive readable frames, ``flicker``: mean absolute change (0-255 levels) of pixels
    that are background in both of two consecutive readable frames; both None with fewer than two.
    ``dx_px``: horizontal motion from the first readable frame until the motion first reverses (a bounce),
    ``direction``: its sign as "left" / "right" (None with fewer than two readable frames or
    no motion). ``size_fraction``: median shape extent over readable frames."""

    frames: tuple[Reading, ...]
    background: str | None
    color: str | None
    shape: str | None
    size_fraction: float | None
    identity: float
    displacement_px: float | None
    flicker: float | None
    dx_px: float | None
    direction: str | None

    @property
    def readable(self) -> bool:
        return any(frame.readable for frame in self.frames)


def _majority(values: list[str]) -> str | None:
    return Counter(values).most_common(1)[0][0] if values else None


# Why a frame breaks its clip's identity, by first reason (None: it keeps it).
IDENTITY_LOSSES = ("identity_unreadable", "identity_other_color", "identity_other_shape")


def identity_loss(frame: Reading, color: str | None, shape: str | None) -> str | None:
    """Why ``frame`` does not show the clip's majority ``color`` and ``shape``: unreadable, another colour, or the
    same colour but another shape (one of :data:`IDENTITY_LOSSES`); None when it shows both."""
    if not frame.readable:
        return "identity_unreadable"
    if frame.color != color:
        return "identity_other_color"
    if frame.shape != shape:
        return "identity_other_shape"
    return None


BACKGROUND_MASK_BELOW = 0.02  # a pixel is background when its soft shape mask is below this


def _flicker(frames: np.ndarray, readings: tuple[Reading, ...]) -> float | None:
    """Mean absolute change of pixels that are background in two consecutive readable frames."""
    changes = []
    for t in range(len(frames) - 1):
        a, b = readings[t], readings[t + 1]
        if not (a.readable and b.readable):
            continue
        both = (a.mask < BACKGROUND_MASK_BELOW) & (b.mask < BACKGROUND_MASK_BELOW)
        if both.any():
            delta = np.abs(frames[t + 1].astype(np.float32) - frames[t].astype(np.float32))
            changes.append(float(delta[both].mean()))
    return float(np.mean(changes)) if changes else None


STILL_PX = 0.05  # a horizontal step smaller than this (pixels) neither sets nor reverses the direction


def initial_dx(readings: tuple[Reading, ...]) -> float | None:
    """Horizontal motion in pixels from the first readable frame until the motion first reverses (the toy world
    moves a shape at constant velocity and reflects it off the walls, so a reversal is a bounce and later motion
    no longer says which way the caption's shape moves). None with fewer than two readable frames."""
    readable = [r for r in readings if r.readable]
    if len(readable) < 2:
        return None
    dx, sign = 0.0, 0.0
    for a, b in zip(readable[:-1], readable[1:], strict=True):
        step = b.centroid[0] - a.centroid[0]
        if abs(step) >= STILL_PX:
            if sign and np.sign(step) != sign:
                break
            sign = float(np.sign(step))
        dx += step
    return dx


def read_video(frames: np.ndarray) -> VideoReading:
    """Read a ``t h w 3`` uint8 clip (see :class:`VideoReading`)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"read_video expects t h w 3 frames, got shape {tuple(frames.shape)}")
    readings = tuple(read_image(frame) for frame in frames)
    readable = [r for r in readings if r.readable]
    color = _majority([r.color for r in readable])
    shape = _majority([r.shape for r in readable])
    identity = sum(identity_loss(r, color, shape) is None for r in readings) / len(readings)
    steps = [np.hypot(b.centroid[0] - a.centroid[0], b.centroid[1] - a.centroid[1])
             for a, b in zip(readings[:-1], readings[1:], strict=True) if a.readable and b.readable]
    dx = initial_dx(readings)
    return VideoReading(
        frames=readings,
        background=_majority([r.background for r in readable]),
        color=color,
        shape=shape,
        size_fraction=float(np.median([r.size_fraction for r in readable])) if readable else None,
        identity=identity,
        displacement_px=float(np.mean(steps)) if steps else None,
        flicker=_flicker(frames, readings),
        dx_px=dx,
        direction=None if not dx else ("right" if dx > 0 else "left"),
    )

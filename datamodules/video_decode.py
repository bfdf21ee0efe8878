"""Video probing and clip selection: native fps, variable frame rate, which frame indices to decode."""

from __future__ import annotations

import io
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import decord
import numpy as np

from datamodules.skips import SkipSample

VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "mov", "avi")
MIN_SANE_FPS, MAX_SANE_FPS = 1.0, 240.0
# A file is variable-frame-rate when more than VFR_OUTLIER_FRACTION of its frame intervals differ from the
# median interval by more than VFR_TOLERANCE of it. Timestamp rounding (33/34 ms at 29.97 fps) stays well
# inside 25 %, and a handful of dropped frames stays under 10 % of the intervals.
VFR_TOLERANCE = 0.25
VFR_OUTLIER_FRACTION = 0.10


def open_video(data: bytes) -> decord.VideoReader:
    """A decord reader over the bytes; undecodable bytes (garbage, an HTML page, empty) raise SkipSample."""
    if not data:
        raise SkipSample("decode_error", "zero-length video")
    try:
        return decord.VideoReader(io.BytesIO(data), num_threads=1)
    except Exception as error:  # decord raises DECORDError / RuntimeError
        raise SkipSample("decode_error", repr(error)[:200]) from error


def _parse_rate(rate: Any) -> float | None:
    try:
        value = float(Fraction(str(rate)))
    except (ValueError, ZeroDivisionError):
        return None
    return value if MIN_SANE_FPS <= value <= MAX_SANE_FPS else None


def metadata_fps(meta: Mapping[str, Any]) -> float | None:
    """avg_frame_rate of the first video stream of video2dataset's ffprobe ``video_metadata``, when sane."""
    streams = (meta.get("video_metadata") or {}).get("streams") if isinstance(meta, Mapping) else None
    if not isinstance(streams, list):
        return None
    videos = [s for s in streams if isinstance(s, Mapping) and s.get("codec_type", "video") == "video"]
    return _parse_rate(videos[0].get("avg_frame_rate")) if videos else None


def native_fps(meta: Mapping[str, Any], reader: decord.VideoReader) -> float:
    """fps from the metadata when present and sane, else decord's average fps; SkipSample when neither is."""
    fps = metadata_fps(meta)
    if fps is None:
        fps = _parse_rate(reader.get_avg_fps())
    if fps is None:
        raise SkipSample("decode_error", f"no usable frame rate (decord says {reader.get_avg_fps()})")
    return fps


def is_variable_frame_rate(reader: decord.VideoReader) -> bool:
    """Strongly non-uniform frame intervals (see VFR_TOLERANCE, VFR_OUTLIER_FRACTION)."""
    count = len(reader)
    if count < 3:
        return False
    starts = reader.get_frame_timestamp(np.arange(count))[:, 0]
    intervals = np.diff(starts)
    median = float(np.median(intervals))
    if median <= 0:
        return True
    outliers = np.abs(intervals - median) > VFR_TOLERANCE * median
    return float(outliers.mean()) > VFR_OUTLIER_FRACTION


def clip_indices(
    total: int, native: float, target_fps: float, num_frames: int, short_clip: str, rng: np.random.Generator,
    integer_stride: bool = False,
) -> tuple[np.ndarray, float, bool]:
    """Frame indices of a ``num_frames`` clip at ``target_fps`` (capped at ``native``) with a random start.

    Returns (indices, fps actually used, adjusted). When the video is too short at that fps, ``short_clip``
    "adjust" uses the lowest fps that fits (the largest stride) and reports adjusted=True; "skip" raises
    SkipSample("too_short"), as does a video with fewer than ``num_frames`` frames. With ``integer_stride`` the
    stride is a whole number of source frames (the nearest to ``native / target_fps``, at least 1), so the
    frames are evenly spaced real frames and the fps is ``native / stride`` (↑F: every keyframe and in-between
    is a source frame at its true time).
    """
    if total < num_frames:
        raise SkipSample("too_short", f"{total} frames < num_frames {num_frames}")
    fps = min(target_fps, native)
    stride = native / fps
    if integer_stride:
        stride = max(1, round(stride))
        fps = native / stride
    adjusted = False
    if num_frames > 1 and round((num_frames - 1) * stride) > total - 1:
        if short_clip != "adjust":
            raise SkipSample("too_short", f"{total} frames cannot give {num_frames} frames at {fps:.2f} fps")
        stride = (total - 1) / (num_frames - 1)
        if integer_stride:
            stride = (total - 1) // (num_frames - 1)  # >= 1: total >= num_frames
        fps, adjusted = native / stride, True
    offsets = np.rint(np.arange(num_frames) * stride).astype(np.int64)
    start = int(rng.integers(0, total - int(offsets[-1])))
    return start + offsets, fps, adjusted

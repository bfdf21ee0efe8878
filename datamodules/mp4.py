"""Encode RGB frames to H.264 mp4 bytes with PyAV (libx264; yuv420p, or yuv444p on request)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np

PIX_FMTS = ("yuv420p", "yuv444p")


def encode_mp4(
    frames: Sequence[np.ndarray], fps: int, pts: Sequence[int] | None = None, crf: int = 18,
    pix_fmt: str = "yuv420p",
) -> bytes:
    """``frames``: uint8 ``h w c`` arrays (even h, w). ``pts``: optional frame times in units of 1/(fps*10)
    seconds; irregular values make a variable-frame-rate file. ``pix_fmt``: ``yuv420p`` (what video2dataset
    shards hold) or ``yuv444p`` (full-resolution colour; see ``datamodules.heldout``). Returns the mp4 bytes,
    identical for identical arguments in any process (single-threaded libx264 without mbtree)."""
    if not frames:
        raise ValueError("encode_mp4 needs at least one frame, got 0")
    if pix_fmt not in PIX_FMTS:
        raise ValueError(f"pix_fmt must be one of {PIX_FMTS}, got {pix_fmt!r}")
    height, width = frames[0].shape[:2]
    time_base = Fraction(1, fps * 10)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        # Same frames, same bytes: x264's macroblock-tree rate control (mbtree) gave different bitstreams for
        # identical frames in different processes (2-5 of 12 toy clips), even with threads=1; without it the
        # output is reproducible (tests/datamodules/test_mp4_determinism.py encodes in two processes).
        stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}
        for index, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            frame.pts = index * 10 if pts is None else int(pts[index])
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()

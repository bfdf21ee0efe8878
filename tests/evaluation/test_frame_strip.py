"""Frame strips of generated videos (the README's picture of a toy video): which frames, in which order."""

from __future__ import annotations

import torch

from mav_train.media import frame_strip


def clip_of_levels(t: int, size: int = 4) -> torch.Tensor:
    """``3 t size size``: frame i is flat at a grey level that names it."""
    levels = torch.linspace(-1, 1, t)
    return levels.view(1, t, 1, 1).expand(3, t, size, size).clone()


def test_strip_spreads_frames_from_first_to_last():
    strip = frame_strip(clip_of_levels(29), frames=8)
    assert strip.shape == (4, 8 * 4, 3)
    shown = strip[0, ::4, 0].astype(int)
    expected = ((torch.linspace(-1, 1, 29)[torch.linspace(0, 28, 8).round().long()] + 1) * 127.5).round().int()
    assert shown.tolist() == expected.tolist()
    assert shown[0] == 0 and shown[-1] == 255  # the first and the last frame


def test_a_short_clip_shows_every_frame_once():
    strip = frame_strip(clip_of_levels(3), frames=8)
    assert strip.shape == (4, 3 * 4, 3)
    assert strip[0, ::4, 0].tolist() == [0, 128, 255]

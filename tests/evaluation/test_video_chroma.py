"""Small videos keep full-resolution colour: at 32 px yuv420p halves a toy shape's outline in the colour planes."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from datamodules.mp4 import encode_mp4
from datamodules.toy_world import Scene, caption_of, draw_scene
from mav_train.evaluation.toy_judge import score_videos
from mav_train.media import FULL_CHROMA_BELOW, read_video, to_uint8, write_mp4

# Red on purple, green on red, purple on blue, yellow on orange: pairs whose outline lies mostly in the colour
# planes (with yuv420p these four clips read shape 72%, identity 78%).
SCENES = [Scene(shape=shape, color=color, background=background, size=0.23, x=0.4, y=0.5, vx=0.3)
          for shape, color, background in (("triangle", 0, 4), ("cross", 1, 0), ("square", 4, 2),
                                           ("diamond", 3, 5))]


def frames_of(scene: Scene, resolution: int, n: int = 8) -> list[np.ndarray]:
    return [np.asarray(draw_scene(scene, resolution, t / 30)) for t in range(n)]


def pix_fmt_of(data: bytes) -> str:
    with av.open(io.BytesIO(data)) as container:
        return container.streams.video[0].codec_context.pix_fmt


@pytest.mark.parametrize("resolution, expected", [(32, "yuv444p"), (FULL_CHROMA_BELOW, "yuv420p")])
def test_write_mp4_chooses_chroma_by_size(tmp_path, resolution, expected):
    path = tmp_path / "clip.mp4"
    write_mp4(frames_of(SCENES[0], resolution), path, 30)
    assert pix_fmt_of(path.read_bytes()) == expected


def test_small_toy_clips_read_back_with_their_shapes(tmp_path):
    videos = []
    for i, scene in enumerate(SCENES):
        write_mp4(frames_of(scene, 32), tmp_path / f"{i}.mp4", 30)
        video, fps = read_video(tmp_path / f"{i}.mp4")
        assert fps == 30 and video.shape == (8, 3, 32, 32)
        videos.append(to_uint8(video.permute(0, 2, 3, 1)))
    scores = score_videos(videos, [caption_of(s) for s in SCENES]).as_dict()
    assert scores["shape"] == 1.0 and scores["identity"] == 1.0


def test_encode_mp4_pix_fmt():
    frames = frames_of(SCENES[1], 32)
    assert pix_fmt_of(encode_mp4(frames, 30)) == "yuv420p"
    assert pix_fmt_of(encode_mp4(frames, 30, pix_fmt="yuv444p")) == "yuv444p"
    with pytest.raises(ValueError, match="pix_fmt"):
        encode_mp4(frames, 30, pix_fmt="rgb24")

"""↑F reads clips with a whole number of source frames between output frames (``data.integer_stride``), so that
keyframes and in-betweens are evenly spaced real frames; short clips fall back to a smaller stride (counted
``fps_adjusted``) or are skipped (counted ``too_short``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datamodules.shard_writer import write_shard
from datamodules.skips import SkipSample
from datamodules.video import VideoDataModule
from datamodules.video_decode import clip_indices
from tests.datamodules.helpers import data_config, fixed_fps, frame_indices, level_video_record


def test_integer_stride_indices():
    rng = np.random.default_rng(0)
    indices, fps, adjusted = clip_indices(90, 30.0, 7.0, 11, "adjust", rng, integer_stride=True)
    assert np.diff(indices).tolist() == [4] * 10 and fps == 7.5 and not adjusted  # 30 / 7 = 4.3 -> 4
    indices, fps, adjusted = clip_indices(90, 24.0, 10.0, 11, "adjust", rng, integer_stride=True)
    assert np.diff(indices).tolist() == [2] * 10 and fps == 12.0  # 2.4 -> 2
    indices, fps, adjusted = clip_indices(25, 30.0, 10.0, 11, "adjust", rng, integer_stride=True)
    assert np.diff(indices).tolist() == [2] * 10 and fps == 15.0 and adjusted  # 3 does not fit: 24 // 10 = 2
    with pytest.raises(SkipSample, match="too_short"):
        clip_indices(25, 30.0, 10.0, 11, "skip", rng, integer_stride=True)
    with pytest.raises(SkipSample, match="too_short"):
        clip_indices(10, 30.0, 30.0, 11, "adjust", rng, integer_stride=True)
    fractional, _, _ = clip_indices(90, 30.0, 12.0, 11, "adjust", np.random.default_rng(0))
    assert set(np.diff(fractional).tolist()) == {2, 3}  # D^t's rounding: uneven spacing


@pytest.mark.parametrize("short_clip", ["adjust", "skip"])
def test_integer_stride_clips_from_shards(tmp_path: Path, short_clip: str) -> None:
    write_shard(tmp_path, 0, [level_video_record("000000000", 60), level_video_record("000000001", 16),
                              level_video_record("000000002", 60)], {})
    cfg = data_config(str(tmp_path / "00000.tar"), kind="video", num_frames=6, batch_size=1, epoch_samples=4,
                      val_samples=3 if short_clip == "adjust" else 2, short_clip=short_clip,
                      integer_stride=True, curriculum=fixed_fps(7.0))
    batches = list(VideoDataModule(cfg).val_dataloader())
    for batch in batches:
        steps = np.diff(frame_indices(batch["video"][0].numpy())).tolist()
        if batch["key"][0] == "000000001":  # 16 frames cannot hold 6 at stride 4: stride 3 (10 fps)
            assert steps == [3] * 5 and float(batch["fps"][0]) == 10.0
        else:
            assert steps == [4] * 5 and float(batch["fps"][0]) == 7.5
    skips = batches[-1]["skips"]
    assert [b["key"][0] for b in batches] == (["000000000", "000000001", "000000002"] if short_clip == "adjust"
                                             else ["000000000", "000000002"])
    assert (skips["fps_adjusted"], skips["too_short"]) == ((1, 0) if short_clip == "adjust" else (0, 1))

"""VideoDataModule: clips at the drawn fps, the right frames, dirty videos, curriculum, step sharing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.curriculum import FpsCurriculum
from datamodules.shard_writer import ShardRecord, write_shard
from datamodules.video import VideoDataModule
from mav_train.config.schema import CurriculumConfig
from tests.datamodules.helpers import (
    data_config,
    fixed_fps,
    frame_indices,
    level_video_record,
    pattern,
    write_truncated_shard,
)


def video_config(shards: str | None, **overrides: object):
    base = dict(kind="video", num_frames=8, resolution=16, clip_resolution=8, batch_size=2, epoch_samples=4)
    base.update(overrides)
    return data_config(shards, **base)


def test_batch_shapes_and_fps(video_shards: Path) -> None:
    dm = VideoDataModule(video_config(pattern(video_shards, 2), epoch_samples=12))
    batches = list(dm.train_dataloader())
    assert len(batches) == 6
    batch = batches[0]
    assert batch["video"].shape == (2, 3, 8, 16, 16) and batch["video"].dtype == torch.uint8
    assert batch["clip_image"].shape == (2, 3, 8, 8) and batch["clip_image"].dtype == torch.uint8
    assert batch["fps"].shape == (2,) and batch["fps"].dtype == torch.float32
    converted = dm.on_after_batch_transfer(dict(batch), 0)  # what training_step receives
    assert converted["video"].dtype == converted["clip_image"].dtype == torch.float32
    assert -1.0 <= converted["video"].min() and converted["video"].max() <= 1.0
    fps = torch.cat([b["fps"] for b in batches])
    assert fps.min() >= 1.0 and fps.max() <= 30.0
    assert set(batch["skips"]) >= {"decode_error", "too_short", "vfr", "corrupt_shard", "fps_adjusted"}
    assert "caption" not in batch  # captions are ignored at video time


@pytest.fixture
def level_shards(tmp_path: Path) -> Path:
    """Frame i of every video is grey level 4 * i, so a clip tells which frames were decoded."""
    irregular = list(np.cumsum([0] + [5 if i % 2 else 20 for i in range(39)]))
    shard0 = [
        level_video_record("000000000", 60),
        ShardRecord("000000001", {"mp4": bytes(range(256)) * 20, "txt": b"x"}),  # garbage: decode_error
        ShardRecord(
            "000000002", {"mp4": b"<html><body><h1>404 Not Found</h1></body></html>"}
        ),  # decode_error
        ShardRecord("000000003", {"mp4": b"", "txt": b"x"}),  # zero-length: decode_error
        level_video_record("000000004", 1),  # one frame: too_short
        level_video_record("000000005", 12),  # too short at 10 fps: adjusted (or skipped)
        level_video_record("000000006", 40, with_json=False, pts=irregular),  # vfr
        ShardRecord("000000007", {"txt": b"no video", "m4a": b"\x00" * 64}),  # missing_field
        level_video_record("000000008", 60, with_json=False),  # fps from decord
    ]
    write_shard(tmp_path, 0, shard0, {})
    write_truncated_shard(tmp_path, 1, level_video_record("000010000", 60))  # corrupt_shard
    write_shard(tmp_path, 2, [level_video_record(f"00002000{i}", 60) for i in range(2)], {})
    return tmp_path


@pytest.mark.parametrize("short_clip", ["adjust", "skip"])
def test_dirty_videos_counted_exactly(level_shards: Path, short_clip: str) -> None:
    kept = 5 if short_clip == "adjust" else 4
    cfg = video_config(
        pattern(level_shards, 3),
        batch_size=1,
        val_samples=kept,
        short_clip=short_clip,
        curriculum=fixed_fps(10.0),
    )
    batches = list(VideoDataModule(cfg).val_dataloader())
    keys = [b["key"][0] for b in batches]
    expected = ["000000000", "000000005", "000000008", "000020000", "000020001"]
    assert keys == (expected if short_clip == "adjust" else [k for k in expected if k != "000000005"])
    skips = {reason: int(value) for reason, value in batches[-1]["skips"].items()}
    assert skips == {
        "decode_error": 3,
        "too_small": 0,
        "missing_field": 1,
        "filtered": 0,
        "corrupt_shard": 1,
        "too_short": 1 if short_clip == "adjust" else 2,
        "vfr": 1,
        "fps_adjusted": 1 if short_clip == "adjust" else 0,
    }


def test_decoded_frames_are_the_requested_ones(level_shards: Path) -> None:
    cfg = video_config(pattern(level_shards, 3), batch_size=1, val_samples=5, curriculum=fixed_fps(10.0))
    for batch in VideoDataModule(cfg).val_dataloader():
        indices = frame_indices(batch["video"][0].numpy())
        fps = float(batch["fps"][0])
        if batch["key"][0] == "000000005":  # 12 frames: stretched to the largest stride that fits
            assert fps == pytest.approx(30.0 * 7 / 11)
            assert indices.tolist() == [0, 2, 3, 5, 6, 8, 9, 11]
        else:  # 10 fps out of 30: every third frame from a random start
            assert fps == pytest.approx(10.0)
            assert np.diff(indices).tolist() == [3] * 7 and 0 <= indices[0] <= 60 - 22
        cond = batch["clip_image"][0].float().mean() / 4
        assert round(float(cond)) == indices[0]  # conditioning frame = the clip's first frame


def test_fps_capped_at_native(tmp_path: Path) -> None:
    write_shard(tmp_path, 0, [level_video_record(f"00000000{i}", 40, fps=15) for i in range(2)], {})
    cfg = video_config(str(tmp_path / "00000.tar"), val_samples=2, curriculum=fixed_fps(30.0))
    batch = next(iter(VideoDataModule(cfg).val_dataloader()))
    assert batch["fps"].tolist() == [15.0, 15.0]
    assert np.diff(frame_indices(batch["video"][0].numpy())).tolist() == [1] * 7


def test_cond_frame_middle(level_shards: Path) -> None:
    cfg = video_config(
        str(level_shards / "00002.tar"), val_samples=2, cond_frame="middle", curriculum=fixed_fps(10.0)
    )
    batch = next(iter(VideoDataModule(cfg).val_dataloader()))
    indices = frame_indices(batch["video"][0].numpy())
    assert round(float(batch["clip_image"][0].float().mean() / 4)) == indices[4]


def test_curriculum_moves_from_high_to_low_fps() -> None:
    curriculum = FpsCurriculum(
        CurriculumConfig(alpha_start=5.0, beta_start=1.0, alpha_end=1.0, beta_end=3.0, steps=100)
    )
    assert curriculum.params_at(0) == (5.0, 1.0) and curriculum.params_at(50) == (3.0, 2.0)
    assert curriculum.params_at(100) == curriculum.params_at(10**6) == (1.0, 3.0)
    rng = np.random.default_rng(0)
    start = np.array([curriculum.sample(rng, 0) for _ in range(4000)])
    end = np.array([curriculum.sample(rng, 100) for _ in range(4000)])
    assert start.mean() == pytest.approx(curriculum.mean_at(0), abs=0.5)  # 1 + 29 * 5/6 = 25.2
    assert end.mean() == pytest.approx(curriculum.mean_at(100), abs=0.5)  # 1 + 29 / 4 = 8.25
    assert start.min() >= 1.0 and end.max() <= 30.0
    with pytest.raises(ValueError, match="curriculum.beta_end must be > 0"):
        FpsCurriculum(CurriculumConfig(beta_end=0.0))


def test_set_step_reaches_worker_process(video_shards: Path) -> None:
    curriculum = CurriculumConfig(alpha_start=60.0, beta_start=1.0, alpha_end=1.0, beta_end=60.0, steps=100)
    cfg = video_config(
        pattern(video_shards, 2), num_workers=1, num_frames=4, epoch_samples=24, curriculum=curriculum
    )
    dm = VideoDataModule(cfg)
    iterator = iter(dm.train_dataloader())
    assert next(iterator)["fps"].min() > 20.0
    dm.set_step(100)
    fps = [next(iterator)["fps"].max().item() for _ in range(8)]
    assert fps[-1] < 5.0  # after the prefetched batches, the worker draws at the new step
    assert dm.state_dict()["step"] == 100


def test_state_dict_round_trip(video_shards: Path) -> None:
    cfg = video_config(pattern(video_shards, 2))
    dm = VideoDataModule(cfg)
    dm.set_step(42)
    list(dm.train_dataloader())
    state = dm.state_dict()
    assert state["step"] == 42 and state["batches_consumed"] == 2
    assert state["curriculum"]["alpha_start"] == cfg.curriculum.alpha_start
    other = VideoDataModule(cfg)
    other.load_state_dict(state)
    assert other.state_dict() == state and int(other.step) == 42


def test_joint_image_batches(video_shards: Path, image_shards: Path) -> None:
    cfg = video_config(
        pattern(video_shards, 2),
        image_shards=pattern(image_shards, 3),
        image_batch_size=3,
        filters=["pwatermark<0.9"],
    )
    batch = next(iter(VideoDataModule(cfg).train_dataloader()))
    assert batch["images"].shape == (3, 3, 16, 16) and batch["images_clip"].shape == (3, 3, 8, 8)
    assert batch["video"].shape == (2, 3, 8, 16, 16)
    assert "image/decode_error" in batch["skips"] and "too_short" in batch["skips"]


def test_config_errors(video_shards: Path) -> None:
    with pytest.raises(ValueError, match="recipe=demo/temporal_decoder"):
        VideoDataModule(video_config(None))
    with pytest.raises(ValueError, match="data.short_clip must be"):
        VideoDataModule(video_config(pattern(video_shards, 2), short_clip="pad"))
    with pytest.raises(ValueError, match="data.filters"):
        VideoDataModule(video_config(pattern(video_shards, 2), filters=["pwatermark<0.5"]))
    with pytest.raises(ValueError, match="needs data.kind='video'"):
        VideoDataModule(video_config(pattern(video_shards, 2), kind="image_text"))


def test_demo_videos(tmp_path: Path) -> None:
    cfg = video_config(None, demo=True, demo_samples=4, image_batch_size=2)
    dm = VideoDataModule(cfg, cache_dir=tmp_path)
    dm.prepare_data()
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (2, 3, 8, 16, 16) and batch["images"].shape == (2, 3, 16, 16)

"""Smoke tests of the benchmarks at minuscule sizes: structure and sanity of the results, never timings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.bench_fit_overhead import (
    BARE,
    CLOCKS,
    VARIANTS,
    FitBenchSettings,
    RepeatedBatch,
    format_fit_report,
    run_fit_benchmark,
    step_periods,
)
from bench.bench_video_data import (
    PLAIN,
    VideoBenchSettings,
    format_video_report,
    run_video_benchmark,
    variant_name,
)


def test_step_periods_drop_warmup() -> None:
    assert step_periods([0.0, 1.0, 3.0, 6.0], warmup=2) == [2.0, 3.0]
    with pytest.raises(ValueError, match="warmup 0"):
        step_periods([0.0, 1.0], warmup=0)


def test_repeated_batch_yields_the_same_object() -> None:
    batch = {"x": 1}
    repeated = RepeatedBatch(batch, 3)
    assert len(repeated) == 3
    assert all(item is batch for item in repeated)


def test_fit_benchmark_tiny(tmp_path: Path) -> None:
    settings = FitBenchSettings(batch_size=2, steps=2, warmup=1, repeats=2, grad_norm_calls=1)
    threads = torch.get_num_threads()
    result = run_fit_benchmark(settings, work_dir=tmp_path)
    assert torch.get_num_threads() == threads  # restored after timing with settings.threads
    for clock in CLOCKS:
        assert set(result.periods[clock]) == set(VARIANTS)
        for variant in VARIANTS:
            periods = result.periods[clock][variant]
            assert len(periods) == settings.steps * settings.repeats
            assert all(p > 0 for p in periods)
            assert len(result.repeat_medians[clock][variant]) == settings.repeats
    assert result.ratio(BARE) == pytest.approx(1.0)
    assert result.grad_norm_s > 0
    assert (tmp_path / "run").is_dir()  # build_trainer's run directory (CSV logs, last.ckpt)
    report = format_fit_report(result)
    for variant in VARIANTS:
        assert variant in report
    assert "target ratio <= 1.05" in report


def test_fit_benchmark_rejects_video_recipe(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image recipe"):
        run_fit_benchmark(FitBenchSettings(recipe="demo/temporal_decoder", steps=1, warmup=1, repeats=1),
                          work_dir=tmp_path)


def test_video_benchmark_tiny(tmp_path: Path) -> None:
    settings = VideoBenchSettings(num_videos=4, videos_per_shard=2, video_seconds=1.0, batches=2,
                                  warmup_batches=1, repeats=1, workers=(0, 1))
    result = run_video_benchmark(settings, work_dir=tmp_path)
    assert list(result.runs) == [PLAIN, variant_name(0), variant_name(1)]
    frames, size = result.data.num_frames, result.data.resolution
    for runs in result.runs.values():
        assert len(runs) == 1
        assert runs[0].clip_shape == (3, frames, size, size)
        assert runs[0].clips_per_s > 0
        assert 1.0 <= runs[0].mean_fps <= 30.0
    assert len(list((tmp_path / "videos").glob("*.tar"))) == 2
    report = format_video_report(result)
    assert "target: 1 worker / plain >= 0.9" in report
    assert "scaling" not in report  # no 2-worker run


def test_image_data_benchmark_tiny(tmp_path: Path) -> None:
    from bench.bench_image_data import format_image_report, run_image_benchmark
    from datamodules.demo import write_image_shards
    from mav_train.config.load import load_config

    write_image_shards(tmp_path, num_samples=24, samples_per_shard=8, resolution=32, seed=3)
    cfg = load_config("demo/clip", [f"data.shards={tmp_path}/{{00000..00002}}.tar", "data.num_workers=0",
                                    "data.batch_size=4", "data.epoch_samples=12", "data.shuffle_buffer=6",
                                    "data.memory_cache_mb=8"])
    result = run_image_benchmark(cfg, epochs=2)
    assert result.shards == 3 and result.same_batches
    assert list(result.rates) == ["webdataset", "datamodule", "datamodule + cache 8 MB"]
    assert all(len(rates) == 2 and min(rates) > 0 for rates in result.rates.values())
    report = format_image_report(result)
    assert "the same batches" in report and "/ webdataset" in report

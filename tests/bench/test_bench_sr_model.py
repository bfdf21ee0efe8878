"""Smoke tests of the SR model benchmark at a minuscule size (structure only; no timing assertions)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bench.bench_model import count_parameters
from bench.bench_sr_model import (
    PARAM_TOLERANCE,
    SrBenchConfig,
    SrCase,
    build_ours,
    format_case,
    imagen_candidates,
    imagen_import_error,
    json_line,
    resolve_case,
    run_case,
)

TINY = SrCase(
    "demo/sr_low",
    batch=1,
    overrides=["unet.base_channels=8", "unet.channel_mults=[1,2]", "unet.attention_levels=[2]", "unet.head_dim=8",
               "data.resolution=16", "model.low_res=8"],
)


def tiny_config() -> SrBenchConfig:
    return SrBenchConfig(cases=[TINY], warmup=0, repeats=1)


def test_resolve_case_reads_the_sr_recipe() -> None:
    setup = resolve_case(TINY)
    assert (setup.size, setup.resolution, setup.low_res) == (16, 16, 8)
    assert setup.unet.extra_in_channels == 3 and setup.unet.aug_level_cond
    assert 0 < setup.aug_max < setup.timesteps
    assert setup.label.startswith("8->16 px, batch 1 (demo/sr_low")


def test_resolve_case_rejects_a_non_sr_recipe() -> None:
    with pytest.raises(ValueError, match="not a super-resolution recipe"):
        resolve_case(SrCase("demo/decoder", 1))


def test_skipped_baseline_still_times_ours() -> None:
    cfg = tiny_config()
    result = run_case(TINY, cfg, "cannot import imagen_pytorch's Unet: ModuleNotFoundError: test")
    assert list(result.times) == ["ours"] and len(result.times["ours"]) == cfg.repeats
    assert result.baselines == [] and result.ratio() is None
    assert any("skipped: cannot import" in line for line in format_case(result))
    record = json.loads(json_line(result, cfg))
    assert record["ratio"] is None and record["target_met"] is None and record["imagen_skipped"]


@pytest.mark.skipif(imagen_import_error() is not None, reason="imagen-pytorch is not importable")
def test_imagen_baseline_is_matched_and_timed() -> None:
    cfg = tiny_config()
    setup = resolve_case(TINY)
    assert len(imagen_candidates(setup.unet, [8])) == 3 * 4  # blocks (1, 0, 2) x deepest mult 1..4
    result = run_case(TINY, cfg, None)
    with torch.device("meta"):
        assert result.ours_params == count_parameters(build_ours(setup))
    closest = result.baselines[0]
    assert closest.key == "imagen"
    assert closest.kwargs["lowres_cond"] and not closest.kwargs["cond_on_text"]
    assert closest.kwargs["layer_attns"] == (False, True)  # attention at factor 2 only, as ours
    assert abs(result.params_delta("imagen")) <= PARAM_TOLERANCE
    assert all(b.kwargs["num_resnet_blocks"] == 0 for b in result.baselines if b.key == "imagen_b0")
    assert set(result.times) == {"ours", *(b.key for b in result.baselines)}
    assert all(len(v) == cfg.repeats and min(v) > 0 for v in result.times.values())
    assert math.isfinite(result.ratio()) and result.ratio() > 0
    report = "\n".join(format_case(result))
    assert "target: ours / imagen (closest params)" in report
    record = json.loads(json_line(result, cfg))
    assert record["target"] == 0.8 and record["target_met"] == (record["ratio"] <= 0.8)
    assert record["imagen_params"] == closest.params

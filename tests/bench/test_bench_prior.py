"""Smoke tests of the prior benchmark at minuscule sizes: structure and sanity of the results, never timings."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import bench.bench_prior as bench_prior
from bench.bench_prior import PriorBenchSettings, PriorSize, make_batch, run_prior_benchmark

TINY = PriorSize("tiny", embed_dim=32, text_dim=48, text_tokens=8, dim=64, depth=1, heads=2, batch=4)
SETTINGS = PriorBenchSettings(sizes=(TINY,), warmup=1, repeats=2, num_samples=64, samples_per_shard=32,
                              image_resolution=32, batch_size=8, workers=0, steps=2, warmup_steps=1,
                              throughput_repeats=1, sample_sizes=(TINY,), sample_prompts=2, sample_steps=2,
                              sample_repeats=1)


def test_batch_padding_is_zero() -> None:
    batch = make_batch(TINY, seed=0)
    assert batch.text_states.shape == (4, 8, 48)
    assert batch.text_mask[:, :2].all()  # at least 2 tokens per caption
    assert (batch.text_states[~batch.text_mask] == 0).all()  # DALLE2 finds padding by zero rows
    torch.testing.assert_close(batch.image_emb.norm(dim=-1), torch.ones(4))


def test_prior_benchmark_tiny(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_prior_benchmark(SETTINGS, work_dir=tmp_path, echo=lines.append)
    report = "\n".join(lines)
    (step,) = result.steps
    assert len(step.times["wall"]["ours"]) == len(step.times["cpu"]["ours"]) == SETTINGS.repeats
    if step.skipped is None:  # dalle2-pytorch installed
        assert step.params_within()
        assert step.ratio("wall") > 0 and step.ratio("cpu") > 0
        assert "target: ours / DALLE2 <= 0.8" in report
    else:
        assert "cannot import dalle2_pytorch" in report
    throughput = result.throughput
    assert set(throughput.runs) == {bench_prior.EMBEDDINGS, bench_prior.SHARDS}
    assert all(run.samples_per_s > 0 for runs in throughput.runs.values() for run in runs)
    assert throughput.ratio() > 0
    assert "target: embeddings / shards >= 5x" in report
    assert (tmp_path / "embeddings" / "img_emb" / "img_emb_0.npy").is_file()
    (sample,) = result.samples
    assert set(sample.times) >= {"ours", "ours, full sequence"}
    assert sample.max_difference < 1e-4  # the text prefix changes no sampled embedding
    assert "largest difference, ours with vs without the text prefix" in report
    summary = json.loads(json.dumps(result.summary()))
    assert summary["throughput"]["target"] == 5.0
    assert summary["sample"][0]["ours_vs_full_sequence"] > 0
    assert summary["step"][0]["ours_params"] == step.params["ours"]


def test_missing_dalle2_is_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_prior, "dalle2_import_error", lambda: "cannot import dalle2_pytorch: test")
    lines: list[str] = []
    result = run_prior_benchmark(replace(SETTINGS, parts=("step",)), echo=lines.append)
    assert result.steps[0].skipped == "cannot import dalle2_pytorch: test"
    assert result.steps[0].ratio() is None
    assert result.throughput is None
    assert "skipped: cannot import dalle2_pytorch: test" in "\n".join(lines)
    assert json.loads(json.dumps(result.summary()))["step"][0]["ratio"] is None

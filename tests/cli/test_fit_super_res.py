"""A smoke `fit` of each demo super-resolution recipe through the real CLI: demo/sr_low, demo/sr_high (crops),
then demo/temporal_sr_low inflated from the demo/sr_low run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.cli.test_cli import SMOKE
from tests.conftest import run_cli

# Tiny and short: 2 steps, the session's 256-item demo sets (no new demo data), 2 sampling steps.
SR_SMOKE = [*SMOKE, "trainer.max_steps=2", "checkpoint.every_n_steps=2", "sampling.every_n_steps=2",
            "diffusion.sample_steps=2", "data.demo_samples=256", "data.batch_size=4", "logger=none"]


@pytest.fixture(scope="module")
def sr_low_run(tmp_path_factory, demo_cache) -> Path:
    cwd = tmp_path_factory.mktemp("fit_sr")
    out = run_cli(["fit", "recipe=demo/sr_low", *SR_SMOKE], cwd, demo_cache)
    assert out.returncode == 0, out.stderr[-3000:]
    return cwd / "runs" / "demo" / "sr_low"


def test_fit_demo_sr_low(sr_low_run):
    assert (sr_low_run / "last.ckpt").is_file()
    assert sorted(p.name for p in (sr_low_run / "samples").glob("*.png")) == ["step0000002.png"]
    ckpt = torch.load(sr_low_run / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 and ckpt["hyper_parameters"]["config"]["component"] == "sr_low"


def test_fit_demo_sr_high_on_crops(tmp_path, demo_cache):
    out = run_cli(["fit", "recipe=demo/sr_high", *SR_SMOKE], tmp_path, demo_cache)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "runs" / "demo" / "sr_high"
    assert (run_dir / "last.ckpt").is_file()
    from PIL import Image

    grid = Image.open(run_dir / "samples" / "step0000002.png")
    assert min(grid.size) >= 128, grid.size  # samples are full size (128 px), not crops (64 px)


def test_fit_demo_temporal_sr_low_from_sr_low(sr_low_run, tmp_path, demo_cache):
    init = sr_low_run / "last.ckpt"
    out = run_cli(["fit", "recipe=demo/temporal_sr_low", f"init.checkpoint={init}", "data.num_frames=4",
                   *SR_SMOKE, "data.batch_size=2"], tmp_path, demo_cache)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "initialised temporal_sr_low from" in out.stderr
    assert list((tmp_path / "runs" / "demo" / "temporal_sr_low" / "samples").glob("*.mp4"))

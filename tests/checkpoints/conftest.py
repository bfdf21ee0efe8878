"""A real demo decoder run (4 steps, a checkpoint every 2, every one kept), made once and copied by each test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli

# Small and fast: a checkpoint at steps 2 and 4 (best-* kept for both), no sampling, offline W&B; the CLIP image tower
# per batch (data.embeddings=null), not the 20,000 demo embeddings computed first (95 s here; tests/cli covers them),
# over 256 demo images, not the recipe's 20,000 (writing those took 23 s of the suite).
SHORT = ["trainer.max_steps=4", "data.embeddings=null", "data.demo_samples=256", "checkpoint.every_n_steps=2",
         "checkpoint.save_top_k=-1", "sampling.every_n_steps=0", "data.val_samples=4",
         "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "logger=wandb"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, demo_cache) -> Path:
    cwd = tmp_path_factory.mktemp("trained")
    run_dir = cwd / "run"
    out = run_cli(["fit", "recipe=demo/decoder", *SHORT, f"run_dir={run_dir}"], cwd, demo_cache)
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the trained run directory, free to damage."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))

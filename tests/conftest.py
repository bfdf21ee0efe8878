"""Shared fixtures: a demo-data cache made once per session, and running the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from datamodules.demo import ensure_demo_data

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding the built-in toy-world shards (written once for the whole session)."""
    cache = tmp_path_factory.mktemp("mav_cache")
    ensure_demo_data(cache / "demo")
    return cache


def cli_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WANDB_"))}
    env.update(MAV_TRAIN_CACHE=str(cache), WANDB_MODE="offline", PYTHONPATH=str(REPO), OMP_NUM_THREADS="2")
    return env


def run_cli(args: list[str], cwd: Path, cache: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m mav_train ARGS`` as a user would run it; stdout and stderr captured as text."""
    return subprocess.run([sys.executable, "-m", "mav_train", *args], cwd=cwd, env=cli_env(cache),
                          capture_output=True, text=True, timeout=timeout)

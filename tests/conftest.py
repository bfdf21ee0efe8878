"""Shared fixtures: a demo-data cache made once per session, and running the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's cache, used by every test process (``MAV_TRAIN_CACHE``): the toy-world shards are written
    into it by the first datamodule that needs them (at the sizes the demo recipes ask for), and it holds a
    stand-in for the toy CLIP (see :func:`seed_demo_clip`)."""
    cache = tmp_path_factory.mktemp("mav_cache")
    seed_demo_clip(cache)
    return cache


def seed_demo_clip(cache: Path) -> Path:
    """Write the *untrained* seeded toy CLIP where ``clip.pretrained: demo`` looks for the trained one.

    Training the real toy CLIP takes minutes; the tests that check plumbing (fit, resume, sample, DDP, SLURM,
    ...) need a fixed CLIP, not a good one. The tests where meaning matters train their own:
    ``tests/components/test_clip.py`` (the CLIP learns) and ``test_demo_clip.py`` (first-use training)."""
    from mav_train.components.demo_clip import demo_clip_path
    from mav_train.config.schema import ClipConfig
    from mav_train.nn.encoders import build_clip_model

    path = demo_clip_path(cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(build_clip_model(ClipConfig(model="toy")).state_dict(), path)
    return path


@pytest.fixture(scope="session", autouse=True)
def _session_cache(demo_cache: Path):
    """In-process tests read the same cache as the CLI runs."""
    previous = os.environ.get("MAV_TRAIN_CACHE")
    os.environ["MAV_TRAIN_CACHE"] = str(demo_cache)
    yield
    if previous is None:
        os.environ.pop("MAV_TRAIN_CACHE", None)
    else:
        os.environ["MAV_TRAIN_CACHE"] = previous


def cli_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WANDB_"))}
    env.update(MAV_TRAIN_CACHE=str(cache), WANDB_MODE="offline", PYTHONPATH=str(REPO), OMP_NUM_THREADS="2")
    return env


def run_cli(args: list[str], cwd: Path, cache: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m mav_train ARGS`` as a user would run it; stdout and stderr captured as text."""
    return subprocess.run([sys.executable, "-m", "mav_train", *args], cwd=cwd, env=cli_env(cache),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(autouse=True)
def _restore_project_loggers():
    """Verbs run in-process (``main([...])``) call ``setup_logging``, which stops our loggers propagating to the
    root logger; restore them so later tests' ``caplog`` still sees their records."""
    import logging

    saved = {name: (logging.getLogger(name).propagate, list(logging.getLogger(name).handlers),
                    logging.getLogger(name).level) for name in ("mav_train", "datamodules")}
    yield
    for name, (propagate, handlers, level) in saved.items():
        logger = logging.getLogger(name)
        logger.propagate, logger.handlers, logger.level = propagate, handlers, level

"""``pip install .`` (not editable) into a fresh venv: the installed package finds its recipes and sbatch template
(package data), and ``recipes``, ``fit recipe=demo/decoder`` and ``submit --dry-run`` work from a directory
where the checkout cannot be imported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SKIP = shutil.ignore_patterns(".git", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                              "wandb")


def run(cmd: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{cmd} exited {result.returncode}:\n{(result.stdout + result.stderr)[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv (reusing the heavy packages already installed) with the wheel built from a copy of the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    source = Path(shutil.copytree(REPO, root / "src", symlinks=True, ignore=SKIP))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", root / "dist",
         source], root)
    (wheel,) = (root / "dist").glob("mav_train-*.whl")
    run([sys.executable, "-m", "venv", "--system-site-packages", root / "venv"], root)
    python = root / "venv" / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--ignore-installed", wheel],
        root)
    return python


def env_outside(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WANDB_", "PYTHONPATH"))}
    env.update(MAV_TRAIN_CACHE=str(cache), WANDB_MODE="offline", OMP_NUM_THREADS="1")
    return env


def test_the_wheel_ships_recipes_and_template_and_runs_outside_the_checkout(installed, tmp_path, demo_cache):
    env = env_outside(demo_cache)
    where = run([installed, "-c", "import mav_train; print(mav_train.__file__)"], tmp_path, env).stdout.strip()
    assert Path(where).is_relative_to(installed.parents[1]), where  # the venv's copy, not the checkout
    recipes = run([installed, "-m", "mav_train", "recipes"], tmp_path, env).stdout
    assert {"decoder", "temporal_decoder", "demo/decoder", "demo/temporal_decoder"} <= {
        line.split()[0] for line in recipes.splitlines()}
    script = run([installed, "-m", "mav_train", "submit", "recipe=demo/decoder", "slurm.gpus_per_node=0",
                  "--dry-run"], tmp_path, env).stdout
    assert script.startswith("#!") and "#SBATCH" in script and "-m mav_train fit recipe=" in script
    user_recipe = tmp_path / "mine.yaml"
    user_recipe.write_text("base: demo/decoder\ndescription: a user's recipe file\n")
    fit = run([installed, "-m", "mav_train", "fit", f"recipe={user_recipe}", "trainer.max_steps=1", "logger=none",
               "data.embeddings=null", "data.demo_samples=256", "sampling.every_n_steps=0", "data.val_samples=0",
               "trainer.enable_progress_bar=false", f"run_dir={tmp_path / 'run'}"], tmp_path, env)
    assert "done: step 1" in fit.stdout and (tmp_path / "run" / "last.ckpt").is_file()

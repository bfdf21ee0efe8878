"""``clip.pretrained: demo``: the toy CLIP, trained by ``recipes/demo/clip.yaml`` into the cache on first use.

Training runs once per cache and recipe version, in a child process (``python -m mav_train fit recipe=demo/clip``)
with the parent's distributed and SLURM variables removed, so that a run launched by ``srun`` or under DDP
trains one plain single-process CLIP. A file lock makes concurrent first uses (several ranks, several runs) wait
for one training instead of racing. The weights file is moved into place only when training succeeded.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from datamodules.demo import default_cache_dir

log = logging.getLogger(__name__)

RECIPE = "demo/clip"
_DROP_ENV = ("SLURM_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "PL_",
             "LOCAL_WORLD_SIZE", "GROUP_RANK", "TORCHELASTIC_")


def demo_clip_path(cache_dir: str | Path | None = None, overrides: tuple[str, ...] = ()) -> Path:
    """Where the toy CLIP of the current ``recipes/demo/clip.yaml`` (with ``overrides``) lives. The file name
    hashes the recipe's text, the overrides, the toy CLIP's architecture and the demo data format version, so an
    edited recipe, architecture or toy world trains a new CLIP instead of reusing a stale one, while new schema
    fields elsewhere (other components' settings) do not invalidate it."""
    from datamodules.demo import DEMO_FORMAT_VERSION
    from mav_train.config.load import recipe_path
    from mav_train.nn.encoders import TOY_CLIP_ARCH

    text = recipe_path(RECIPE).read_text()
    key = [text, list(overrides), DEMO_FORMAT_VERSION]  # a changed toy-world generator trains a new CLIP too
    key.append(TOY_CLIP_ARCH)  # model: toy's weights would not load into another architecture
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]
    return _root(cache_dir) / f"toy_clip-{digest}.pt"


def _root(cache_dir: str | Path | None) -> Path:
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "demo_clip"


def ensure_demo_clip(cache_dir: str | Path | None = None, overrides: tuple[str, ...] = ()) -> Path:
    """The toy CLIP's open_clip weights file, trained first if this cache has none for the current recipe.
    ``overrides`` (``key=value``) change the recipe (tests train a tiny one)."""
    target = demo_clip_path(cache_dir, overrides)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            _train(target, cache_dir, overrides)
    return target


def _train(target: Path, cache_dir: str | Path | None, overrides: tuple[str, ...]) -> None:
    from mav_train.components.clip import EXPORT_NAME

    run_dir = target.parent / f"run-{target.stem}"
    shutil.rmtree(run_dir, ignore_errors=True)
    log.info("clip.pretrained=demo: training the toy CLIP on the toy world (first use of this cache, a few "
             "minutes); it is kept in %s", target)
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_ENV)}
    if cache_dir is not None:
        env["MAV_TRAIN_CACHE"] = str(cache_dir)
    args = [sys.executable, "-m", "mav_train", "fit", f"recipe={RECIPE}", f"run_dir={run_dir}", "logger=none",
            "checkpoint.resume=never", *overrides]
    if cache_dir is not None:
        args.append(f"cache_dir={cache_dir}")
    result = subprocess.run(args, env=env)
    exported = run_dir / EXPORT_NAME
    if result.returncode != 0 or not exported.is_file():
        raise RuntimeError(f"training the toy CLIP failed (exit {result.returncode}); its run directory is "
                           f"{run_dir}; rerun `python -m mav_train fit recipe={RECIPE}` to see why")
    os.replace(exported, target)

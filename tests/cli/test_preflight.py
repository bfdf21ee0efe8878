"""Weights that are not there fail before any work starts, in one line that says what to set: a pretrained CLIP
with no network (it is unreachable here; HOME points at an empty cache), a missing file, a wrong tag, and a
missing or unsafe init.checkpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from mav_train.config.load import ConfigError, load_config
from mav_train.preflight import check_checkpoint, check_clip
from tests.checkpoints.payload import write_malicious_checkpoint
from tests.conftest import cli_env


def clip(**values):
    return OmegaConf.merge(load_config("demo/decoder").clip, values)


def test_clip_weights_missing_file_and_wrong_tag():
    check_clip(clip())  # random tiny CLIP: nothing to fetch
    with pytest.raises(ConfigError, match=r"weights file not found .*clip\.pretrained=/path/to/weights"):
        check_clip(clip(pretrained="/nowhere/clip.bin"))
    with pytest.raises(ConfigError, match=r"'opnai' is not a pretrained tag of ViT-L-14 \(tags: .*openai"):
        check_clip(clip(model="ViT-L-14", pretrained="opnai"))


def test_init_checkpoint_missing_or_unsafe(tmp_path):
    with pytest.raises(ConfigError, match=r"^init\.checkpoint: checkpoint not found: .*nope\.ckpt$"):
        check_checkpoint(str(tmp_path / "nope.ckpt"), "init.checkpoint")
    marker = tmp_path / "pwned"
    evil = write_malicious_checkpoint(tmp_path / "shared.ckpt", marker)
    with pytest.raises(ConfigError, match=r"^init\.checkpoint: refused to load"):
        check_checkpoint(str(evil), "init.checkpoint")
    assert not marker.exists()


def test_paper_recipe_offline_fails_at_start_in_one_line(tmp_path, demo_cache):
    """`fit recipe=decoder` (clip.pretrained: openai) on a machine without network: one line, no Trainer."""
    env = cli_env(demo_cache) | {"HOME": str(tmp_path / "home"), "HF_HOME": str(tmp_path / "hf")}
    shards = tmp_path / "shards" / "{00000..00001}.tar"
    out = subprocess.run([sys.executable, "-m", "mav_train", "fit", "recipe=decoder", f"data.shards={shards}",
                          f"run_dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-3000:]
    assert "clip.pretrained=/path/to/weights" in lines[0] and "cannot be reached" in lines[0], lines[0]
    assert not (tmp_path / "run" / "config.yaml").exists()  # written only once the Trainer exists

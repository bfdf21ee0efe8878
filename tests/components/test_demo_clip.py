"""``clip.pretrained: demo`` trains the toy CLIP once per cache, in a child process, also when several
processes ask for it at the same time; then every process loads the same weights."""

from __future__ import annotations

import subprocess
import sys

from mav_train.components.demo_clip import demo_clip_path
from mav_train.config.schema import ClipConfig
from mav_train.nn.encoders import FrozenCLIP

TINY = ("trainer.max_steps=2", "data.demo_samples=64", "data.batch_size=16", "data.epoch_samples=32",
        "data.val_samples=16", "trainer.enable_progress_bar=false", "checkpoint.every_n_steps=2")

SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from mav_train.components.demo_clip import ensure_demo_clip
print(ensure_demo_clip(sys.argv[1], overrides=tuple(sys.argv[2:])))
"""


def test_two_processes_train_the_demo_clip_once(tmp_path):
    runs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path), *TINY], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [run.communicate(timeout=600) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err[-2000:] for _, err in outs]
    paths = {out.strip().splitlines()[-1] for out, _ in outs}
    expected = demo_clip_path(tmp_path, TINY)
    assert paths == {str(expected)} and expected.is_file()
    trained = sum("training the toy CLIP" in err for _, err in outs)
    assert trained == 1, [err[-1500:] for _, err in outs]
    clip = FrozenCLIP(ClipConfig(model="toy", pretrained=str(expected)))
    assert clip.fingerprint != FrozenCLIP(ClipConfig(model="toy")).fingerprint  # trained, not the random init
    # Another recipe (here: other overrides) is another file; the first stays.
    assert demo_clip_path(tmp_path, TINY[:-1]) != expected


def test_another_toy_clip_architecture_is_another_file(tmp_path, monkeypatch):
    """A cache trained with an earlier toy CLIP architecture (e.g. 64 px input) is not loaded into the current one."""
    import mav_train.nn.encoders as encoders

    before = demo_clip_path(tmp_path)
    changed = {**encoders.TOY_CLIP_ARCH, "vision_cfg": {**encoders.TOY_CLIP_ARCH["vision_cfg"], "image_size": 64}}
    monkeypatch.setattr(encoders, "TOY_CLIP_ARCH", changed)
    assert demo_clip_path(tmp_path) != before

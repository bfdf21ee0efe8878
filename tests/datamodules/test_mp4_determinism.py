"""The same frames give the same mp4 bytes in two separate processes (demo.py promises the same bytes). Before
x264's mbtree was turned off, 2-5 of these 12 clips differed between processes."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

ENCODE = """
import hashlib, numpy as np
from datamodules.mp4 import encode_mp4
from datamodules.toy_world import draw_scene, random_scene
rng = np.random.default_rng(3)
for _ in range(12):
    scene = random_scene(rng, moving=True)
    frames = [np.asarray(draw_scene(scene, 64, t / 30)) for t in range(48)]
    print(hashlib.sha1(encode_mp4(frames, 30)).hexdigest())
"""


def test_encode_mp4_bytes_equal_across_processes():
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    runs = [subprocess.run([sys.executable, "-c", ENCODE], cwd=REPO, capture_output=True, text=True, check=True,
                           env=env).stdout for _ in range(2)]
    assert len(runs[0].split()) == 12 and runs[0] == runs[1]

"""Held-out toy-world ground truth: ``00000.png`` + ``00000.txt`` (images) or ``00000.mp4`` + ``00000.txt``
(videos) in one directory, for conditioning ``sample`` and for the judge (``evaluate toy``).

Drawn like the demo shards (one generator per item seeded by ``(seed, kind, index)``) but with a seed other
than the training data's (0), so the items are scenes the models never saw. Deterministic: the same arguments
give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamodules.demo import IMAGE_STREAM, VIDEO_STREAM, sample_rng
from datamodules.mp4 import encode_mp4
from datamodules.toy_world import caption_of, draw_scene, random_scene

TRAINING_SEED = 0


def write_heldout(out_dir: str | Path, num: int = 64, seed: int = 1, kind: str = "image", resolution: int = 32,
                  frames: int = 16, fps: int = 30) -> list[Path]:
    """Write ``num`` held-out items into ``out_dir``; returns the media paths (``.png`` or ``.mp4``).
    Videos have ``frames`` frames drawn ``1/fps`` s apart, written at ``fps``."""
    if seed == TRAINING_SEED:
        raise ValueError(f"seed {seed} draws the training data; held-out items need another seed")
    if kind not in ("image", "video"):
        raise ValueError(f"kind must be image or video, got {kind!r}")
    if num < 1 or resolution < 8 or frames < 1 or fps < 1:
        raise ValueError(f"need num >= 1, resolution >= 8, frames >= 1, fps >= 1; got {num}, {resolution}, "
                         f"{frames}, {fps}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(num):
        rng = sample_rng(seed, IMAGE_STREAM if kind == "image" else VIDEO_STREAM, index)
        scene = random_scene(rng, moving=kind == "video")
        stem = out / f"{index:05d}"
        if kind == "image":
            path = stem.with_suffix(".png")
            draw_scene(scene, resolution).save(path, format="PNG")
        else:
            path = stem.with_suffix(".mp4")
            clip = [np.asarray(draw_scene(scene, resolution, t / fps)) for t in range(frames)]
            path.write_bytes(encode_mp4(clip, fps))
        stem.with_suffix(".txt").write_text(caption_of(scene) + "\n")
        paths.append(path)
    return paths

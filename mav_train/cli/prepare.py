"""``prepare``: write data sets, e.g. the built-in toy world."""

from __future__ import annotations

from pathlib import Path

from datamodules.demo import ensure_demo_data

HELP = """\
Write data sets to disk. Today: the built-in "toy world" demo data.

usage: python -m mav_train prepare demo [--out DIR]

Writes image-text shards (img2dataset layout) to DIR/images and unlabeled video shards (video2dataset layout,
H.264 mp4 at 30 fps) to DIR/videos. Without --out, DIR is the demo cache the demo recipes use
($MAV_TRAIN_CACHE or ~/.cache/mav_train)."""


def run(args: list[str]) -> int:
    if not args or args[0] != "demo":
        print(HELP)
        return 2
    out = None
    if "--out" in args:
        index = args.index("--out")
        if index + 1 >= len(args):
            print("prepare demo: --out needs a directory")
            return 2
        out = Path(args[index + 1])
    paths = ensure_demo_data(out) if out is not None else ensure_demo_data()
    print(f"images: {paths.images}\nvideos: {paths.videos}")
    return 0

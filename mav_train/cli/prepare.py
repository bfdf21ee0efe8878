"""``prepare``: write data sets, e.g. the built-in toy world and held-out toy-world ground truth."""

from __future__ import annotations

from pathlib import Path

from datamodules.demo import ensure_demo_data
from datamodules.heldout import write_heldout
from mav_train.config.load import ConfigError

HELP = """\
Write data sets to disk: the built-in "toy world" demo shards, or held-out toy-world ground truth.

usage: python -m mav_train prepare demo [--out DIR]
       python -m mav_train prepare heldout --out DIR [--num 64] [--seed 1] [--kind image|video]
                                           [--resolution 32] [--frames 16] [--fps 30]

demo: writes image-text shards (img2dataset layout) to DIR/images and unlabeled video shards (video2dataset
layout, H.264 mp4 at 30 fps) to DIR/videos. Without --out, DIR is the demo cache the demo recipes use
($MAV_TRAIN_CACHE or ~/.cache/mav_train).

heldout: writes NUM toy-world items the training data does not hold (seed must not be 0, the training seed) as
00000.png + 00000.txt (images) or 00000.mp4 + 00000.txt (videos, FRAMES frames at FPS), for
`sample ... image=DIR` and `evaluate toy samples=DIR`. Deterministic: the same arguments give the same bytes."""

HELDOUT_FLAGS = {"--out": None, "--num": "64", "--seed": "1", "--kind": "image", "--resolution": "32",
                 "--frames": "16", "--fps": "30"}


def flags(args: list[str], known: dict[str, str | None]) -> dict[str, str | None]:
    """``["--out", "d", "--num", "8"]`` → {"--out": "d", "--num": "8", ...defaults}. ConfigError on a bad flag."""
    values = dict(known)
    if len(args) % 2:
        raise ConfigError(f"prepare: every flag needs a value, got {' '.join(args)}")
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag not in known:
            raise ConfigError(f"prepare: unknown flag '{flag}'; expected one of {', '.join(known)}")
        values[flag] = value
    return values


def _integer(values: dict[str, str | None], flag: str) -> int:
    try:
        return int(values[flag])
    except ValueError:
        raise ConfigError(f"prepare: {flag} must be an integer, got '{values[flag]}'") from None


def heldout(args: list[str]) -> int:
    values = flags(args, HELDOUT_FLAGS)
    if not values["--out"]:
        raise ConfigError("prepare heldout: --out DIR is required")
    try:
        paths = write_heldout(values["--out"], num=_integer(values, "--num"), seed=_integer(values, "--seed"),
                              kind=values["--kind"], resolution=_integer(values, "--resolution"),
                              frames=_integer(values, "--frames"), fps=_integer(values, "--fps"))
    except ValueError as err:
        raise ConfigError(f"prepare heldout: {err}") from None
    print(f"wrote {len(paths)} held-out {values['--kind']} items to {values['--out']}")
    return 0


def demo(args: list[str]) -> int:
    values = flags(args, {"--out": None})
    paths = ensure_demo_data(Path(values["--out"])) if values["--out"] else ensure_demo_data()
    print(f"images: {paths.images}\nvideos: {paths.videos}")
    return 0


def run(args: list[str]) -> int:
    if not args or args[0] not in ("demo", "heldout"):
        print(HELP)
        return 2
    return demo(args[1:]) if args[0] == "demo" else heldout(args[1:])

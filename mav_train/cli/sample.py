"""``sample``: images (D) or videos (D^t) from a checkpoint, conditioned on the CLIP embedding of an image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mav_train.components.base import Conditions
from mav_train.components.registry import load_component
from mav_train.config.load import ConfigError
from mav_train.media import save_image_grid, save_video_grid

HELP = """\
Sample images (decoder) or videos (temporal_decoder) from a checkpoint, conditioned on an image's CLIP embedding.

usage: python -m mav_train sample checkpoint=PATH image=PATH [num=4] [fps=8] [steps=N] [guidance=S]
                                  [seed=0] [out=DIR] [ema=true]

  checkpoint  a .ckpt written by fit (or by consolidate)
  image       the image whose CLIP embedding conditions the samples (variations; for D^t, animation of it)
  fps         frames per second the video is conditioned on and written at (temporal components)
  out         where to write samples.png / samples.mp4 (default: beside the checkpoint, samples-cli/)"""

KEYS = {"checkpoint": None, "image": None, "num": "4", "fps": "8", "steps": None, "guidance": None, "seed": "0",
        "out": None, "ema": "true"}


def parse(args: list[str]) -> dict[str, str | None]:
    values = dict(KEYS)
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS:
            raise ConfigError(f"sample: unknown argument '{arg}'; expected key=value with key in {', '.join(KEYS)}")
        values[key] = value
    for required in ("checkpoint", "image"):
        if not values[required]:
            raise ConfigError(f"sample: missing required value '{required}'")
    return values


def load_image(path: str) -> torch.Tensor:
    """An image file → ``1 3 h w`` in [-1, 1]."""
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1)[None] / 127.5 - 1.0


def run(args: list[str]) -> int:
    v = parse(args)
    module = load_component(v["checkpoint"])
    if v["ema"] == "false":
        module.ema_network = None
    num = int(v["num"])
    image_emb = module.clip.encode_image(load_image(v["image"])).expand(num, -1)
    cfg = module.cfg
    if cfg.unet.temporal:
        cond = Conditions(image_emb=image_emb, fps=torch.full((num,), float(v["fps"])), always_drop_text=True)
        shape = (num, cfg.unet.out_channels, cfg.data.num_frames, cfg.data.resolution, cfg.data.resolution)
    else:
        cond = Conditions(image_emb=image_emb)
        shape = (num, cfg.unet.out_channels, cfg.data.resolution, cfg.data.resolution)
    generator = torch.Generator().manual_seed(int(v["seed"]))
    samples = module.sample(cond, shape, generator=generator, steps=int(v["steps"]) if v["steps"] else None,
                            guidance_scale=float(v["guidance"]) if v["guidance"] else None)
    out = Path(v["out"]) if v["out"] else Path(v["checkpoint"]).parent / "samples-cli"
    if samples.ndim == 5:
        path = save_video_grid(samples, out / "samples.mp4", fps=float(v["fps"]))
    else:
        path = save_image_grid(samples, out / "samples.png")
    print(f"wrote {path}")
    return 0

"""``sample``: images (D) or videos (D^t) from a checkpoint, conditioned on the CLIP embedding of an image."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from mav_train.cli.keyvalues import parse_key_values
from mav_train.components.base import Conditions
from mav_train.components.registry import load_component
from mav_train.config.load import ConfigError
from mav_train.diffusion.samplers import SAMPLERS
from mav_train.evaluation.sample_files import decode_mp4
from mav_train.media import save_image_grid, save_video_grid, to_uint8, write_mp4

HELP = """\
Sample images (decoder) or videos (temporal_decoder) from a checkpoint, conditioned on an image's CLIP embedding.

usage: python -m mav_train sample checkpoint=PATH image=PATH [num=4] [fps=8] [steps=N] [guidance=S]
                                  [sampler=ddim|ddpm|dpmpp] [seed=0] [out=DIR] [ema=true]

  checkpoint  a .ckpt written by fit (or by consolidate)
  image       the image whose CLIP embedding conditions the samples (variations; for D^t, animation of it), or
              a directory: one sample per .png/.jpg image (or per .mp4 clip, conditioned on its first frame),
              named after it, with its .txt caption copied beside the sample (num is then ignored)
  sampler     the recipe's diffusion.sampler unless given; dpmpp is DPM-Solver++(2M), good at fewer steps
  fps         frames per second the video is conditioned on and written at (temporal components)
  out         where to write samples.png / samples.mp4 (the grid) and each sample as 000.png / 000.mp4 (or
              NAME.png / NAME.mp4 for a directory) (default: beside the checkpoint, samples-cli/)

Judge toy-world samples: `prepare heldout --out H`, `sample ... image=H out=S`, `evaluate toy samples=S`."""

KEYS = {"checkpoint": None, "image": None, "num": "4", "fps": "8", "steps": None, "guidance": None, "seed": "0",
        "out": None, "ema": "true", "sampler": None}


def parse(args: list[str]) -> dict[str, str | None]:
    values = parse_key_values("sample", args, KEYS, ("checkpoint", "image"))
    if values["sampler"] is not None and values["sampler"] not in SAMPLERS:
        raise ConfigError(f"sample: unknown sampler '{values['sampler']}'; valid: {', '.join(SAMPLERS)}")
    return values


IMAGE_SUFFIXES, VIDEO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp"), (".mp4",)


def load_image(path: str | Path) -> torch.Tensor:
    """An image file, or a video file's first frame → ``1 3 h w`` in [-1, 1]."""
    if Path(path).suffix.lower() in VIDEO_SUFFIXES:
        array = decode_mp4(Path(path))[0].astype(np.float32)
    else:
        array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return rearrange(torch.from_numpy(array), "h w c -> 1 c h w") / 127.5 - 1.0


def conditioning_files(image: Path) -> list[Path]:
    """The images (or, when there are none, the .mp4 clips) in directory ``image``, in name order."""
    images = sorted(p for p in image.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    files = images or sorted(p for p in image.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise ConfigError(f"sample: no images or .mp4 clips in directory {image}")
    return files


def write_each(samples: torch.Tensor, names: list[str], out: Path, fps: float) -> None:
    """Each sample to its own file: ``out/NAME.png`` (``b c h w``) or ``out/NAME.mp4`` (``b c t h w``)."""
    out.mkdir(parents=True, exist_ok=True)
    for sample, name in zip(samples, names, strict=True):
        if sample.ndim == 4:
            write_mp4(list(to_uint8(rearrange(sample, "c t h w -> t h w c"))), out / f"{name}.mp4", fps)
        else:
            Image.fromarray(to_uint8(rearrange(sample, "c h w -> h w c"))).save(out / f"{name}.png")


def copy_captions(sources: list[Path], out: Path) -> None:
    """``SOURCE.txt`` beside each conditioning file → ``out/SOURCE.txt`` (when it exists)."""
    for source in sources:
        caption = source.with_suffix(".txt")
        if caption.is_file():
            shutil.copyfile(caption, out / caption.name)


def run(args: list[str]) -> int:
    v = parse(args)
    module = load_component(v["checkpoint"])
    if v["ema"] == "false":
        module.ema_network = None
    image = Path(v["image"])
    if image.is_dir():
        sources = conditioning_files(image)
        names, num = [p.stem for p in sources], len(sources)
        with torch.no_grad():
            image_emb = torch.cat([module.clip.encode_image(load_image(p)) for p in sources])
    else:
        sources, num = [], int(v["num"])
        names = [f"{i:03d}" for i in range(num)]
        with torch.no_grad():
            image_emb = module.clip.encode_image(load_image(image)).expand(num, -1)
    cfg = module.cfg
    if cfg.unet.temporal:
        cond = Conditions(image_emb=image_emb, fps=torch.full((num,), float(v["fps"])), always_drop_text=True)
        shape = (num, cfg.unet.out_channels, cfg.data.num_frames, cfg.data.resolution, cfg.data.resolution)
    else:
        cond = Conditions(image_emb=image_emb)
        shape = (num, cfg.unet.out_channels, cfg.data.resolution, cfg.data.resolution)
    generator = torch.Generator().manual_seed(int(v["seed"]))
    samples = module.sample(cond, shape, generator=generator, steps=int(v["steps"]) if v["steps"] else None,
                            guidance_scale=float(v["guidance"]) if v["guidance"] else None, sampler=v["sampler"])
    out = Path(v["out"]) if v["out"] else Path(v["checkpoint"]).parent / "samples-cli"
    if samples.ndim == 5:
        path = save_video_grid(samples, out / "samples.mp4", fps=float(v["fps"]))
    else:
        path = save_image_grid(samples, out / "samples.png")
    write_each(samples, names, out, fps=float(v["fps"]))
    copy_captions(sources, out)
    print(f"wrote {path} and {num} sample files in {out}")
    return 0

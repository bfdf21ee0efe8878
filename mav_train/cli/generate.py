"""``generate``: text → image through the prior P and the decoder D (the first stage of the cascade)."""

from __future__ import annotations

from pathlib import Path

import torch

from mav_train.cli.keyvalues import parse_key_values
from mav_train.components.base import Conditions
from mav_train.config.load import ConfigError
from mav_train.media import save_image_grid

HELP = """\
Generate images from text: the prior P turns each prompt into a CLIP image embedding, the decoder D draws it.

usage: python -m mav_train generate prompt=TEXT|FILE prior=PRIOR.ckpt decoder=DECODER.ckpt [num=4] [out=DIR]
                                    [seed=0] [candidates=K] [prior_steps=N] [prior_guidance=S] [steps=N]
                                    [guidance=S]

  prompt          a prompt, or a text file with one prompt per line (blank lines are ignored)
  prior, decoder  checkpoints written by fit (or consolidate); both must have been trained with the same CLIP
  num             images per prompt
  out             writes 000.png, 000.txt (its prompt), 001.png, ... and grid.png (default: generated/)
  candidates      prior samples per image, the one closest to the text embedding kept (default: the prior's
                  prior.num_candidates); prior_steps / prior_guidance: the prior's DDIM steps and guidance
  steps, guidance the decoder's DDIM steps and guidance (default: its recipe's)

Judge toy-world prompts: `generate prompt=prompts.txt ... out=S` then `evaluate toy samples=S`."""

KEYS = {"prompt": None, "prior": None, "decoder": None, "num": "4", "out": "generated", "seed": "0",
        "candidates": None, "prior_steps": None, "prior_guidance": None, "steps": None, "guidance": None}


def parse(args: list[str]) -> dict[str, str | None]:
    return parse_key_values("generate", args, KEYS, ("prompt", "prior", "decoder"), may_be_blank=("prompt",))


def read_prompts(prompt: str) -> list[str]:
    """``prompt`` itself, or the non-blank lines of the file it names; an empty prompt is an error."""
    path = Path(prompt)
    if prompt.strip() and path.is_file():
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not prompts:
            raise ConfigError(f"generate: prompt file {path} holds no prompt")
        return prompts
    if not prompt.strip():
        raise ConfigError("generate: the prompt is empty")
    return [prompt.strip()]


def load_pair(prior_path: str, decoder_path: str):
    """The prior and decoder components, refused in one line unless both were trained with the same CLIP."""
    from mav_train.components.clip_source import CLIP_FINGERPRINT_KEY, check_clip_fingerprint
    from mav_train.components.registry import load_checkpoint_file, load_component

    prior_ckpt, decoder_ckpt = load_checkpoint_file(prior_path), load_checkpoint_file(decoder_path)
    for path, ckpt, want in ((prior_path, prior_ckpt, "prior"), (decoder_path, decoder_ckpt, "decoder")):
        got = ckpt.get("hyper_parameters", {}).get("config", {}).get("component")
        if got != want:
            raise ConfigError(f"generate: {want}={path} is a {got} checkpoint, not a {want}")
    ours = prior_ckpt.get(CLIP_FINGERPRINT_KEY)
    if ours is not None:
        try:
            check_clip_fingerprint(decoder_ckpt, ours, f"decoder {decoder_path}")
        except ValueError as err:
            raise ConfigError(f"generate: {err} (the prior {prior_path})") from err
    return load_component(prior_path), load_component(decoder_path)


@torch.no_grad()
def generate_images(prior, decoder, prompts: list[str], *, seed: int = 0, candidates: int | None = None,
                    prior_steps: int | None = None, prior_guidance: float | None = None, steps: int | None = None,
                    guidance: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(b, 3, R, R)`` in [-1, 1] for ``prompts`` and the image embeddings ``(b, d)`` they came from."""
    generator = torch.Generator().manual_seed(seed)
    image_emb = prior.generate(prompts, num_candidates=candidates, steps=prior_steps,
                               guidance_scale=prior_guidance, generator=generator)
    cfg = decoder.cfg
    shape = (len(prompts), cfg.unet.out_channels, cfg.data.resolution, cfg.data.resolution)
    images = decoder.sample(Conditions(image_emb=image_emb.to(decoder.device)), shape, generator=generator,
                            steps=steps, guidance_scale=guidance)
    return images, image_emb


def run(args: list[str]) -> int:
    from PIL import Image

    from mav_train.media import to_uint8

    v = parse(args)
    prompts = read_prompts(v["prompt"])
    num = int(v["num"])
    if num < 1:
        raise ConfigError(f"generate: num must be >= 1, got {num}")
    prior, decoder = load_pair(v["prior"], v["decoder"])
    each = [p for p in prompts for _ in range(num)]
    as_int = {k: int(v[k]) if v[k] else None for k in ("candidates", "prior_steps", "steps")}
    as_float = {k: float(v[k]) if v[k] else None for k in ("prior_guidance", "guidance")}
    images, _ = generate_images(prior, decoder, each, seed=int(v["seed"]), **as_int, **as_float)
    out = Path(v["out"])
    out.mkdir(parents=True, exist_ok=True)
    for i, (image, prompt) in enumerate(zip(images, each, strict=True)):
        Image.fromarray(to_uint8(image.permute(1, 2, 0))).save(out / f"{i:03d}.png")
        (out / f"{i:03d}.txt").write_text(prompt + "\n")
    grid = save_image_grid(images, out / "grid.png")
    print(f"wrote {len(each)} images ({len(prompts)} prompt(s) x {num}) and {grid} in {out}")
    return 0

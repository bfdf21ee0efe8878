"""Can a decoder recipe's UNet learn to draw the toy world from a given conditioning? (README, decoder diagnosis.)

The recipe's UNet is trained on freshly drawn toy images, with the recipe's learning rate, EMA and condition
dropout, either as a pure renderer (``--objective renderer``: at the noisiest timestep only, t = T - 1, its x0
prediction from pure noise; its predictions for held-out scenes are judged) or as the recipe's diffusion model
(``--objective diffusion``: the recipe's timesteps and loss; samples drawn with the recipe's sampler, steps, eta and
guidance are judged), or as a denoiser at one timestep (``--objective band --band-t 600``: the held-out images noised
to that t with one fixed draw, one x0 prediction each judged; at t = 600 the noisy input shows where the blob is and
not its outline, so this isolates drawing the outline the conditioning names, the step sessions 32-34 found slow),
conditioned on

- ``attributes``: the exact scene (one-hot shape, colour and background; x, y and size), zero-padded to cond_dim;
- ``caption-attributes``: the same with x, y and size cut to what a caption says (left / centre / right, top /
  middle / bottom, small / medium / large): the most a CLIP trained on toy captions can learn about them;
- ``rotated``: the exact vector times a fixed random orthogonal matrix (every input mixes every attribute);
- ``clip``: the toy CLIP's image embedding of the image (``--clip``: an open_clip weights file, e.g. the cascade's
  ``RUN/clip/open_clip_weights.pt``);
- ``clip-whitened``: that embedding whitened (ZCA) with the mean and covariance of 4096 other toy images, so that
  every direction, shape's included, has unit variance.

Held-out scenes: seed 1. A renderer is a regression: where the conditioning leaves the exact place or size open
(``caption-attributes``, ``clip``) its best prediction is the average over them, a blurred blob, whatever the
conditioning says about shape; such conditionings need ``--objective diffusion``. Session 14 / 15 (2 CPU cores,
about 7 minutes per 3600 renderer steps, 13 minutes per 7200 diffusion steps): see the README's decoder diagnosis.

    python -m bench.bench_renderer --cond attributes --steps 3600
    python -m bench.bench_renderer --cond clip --clip RUN/clip/open_clip_weights.pt --steps 3600
    python -m bench.bench_renderer --cond attributes --objective diffusion --steps 7200
    python -m bench.bench_renderer --cond clip --clip RUN/clip/open_clip_weights.pt --objective band --steps 3000
"""

from __future__ import annotations

import argparse
import copy
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from datamodules.heldout import heldout_scenes, scene_images
from datamodules.toy_world import (
    COLORS,
    FAR_ABOVE,
    LARGE_ABOVE,
    NEAR_BELOW,
    SHAPES,
    SMALL_BELOW,
    Scene,
    caption_of,
    random_scene,
)
from mav_train.components.clip_source import build_frozen_clip
from mav_train.components.repa import build_repa
from mav_train.config.load import load_config
from mav_train.diffusion import GaussianDiffusion
from mav_train.evaluation.toy_judge import score_images
from mav_train.nn.unet import UNet

CONDITIONS = ("attributes", "caption-attributes", "rotated", "clip", "clip-whitened")
OBJECTIVES = ("renderer", "diffusion", "band")
ATTRIBUTE_DIMS = len(SHAPES) + 2 * len(COLORS) + 3
Conditioner = Callable[[list[Scene], torch.Tensor], torch.Tensor]


def attribute_vector(scenes: Sequence[Scene], dim: int) -> torch.Tensor:
    """``(n, dim)``: one-hot shape, colour and background, then x, y and size scaled to about [-1, 1]."""
    if dim < ATTRIBUTE_DIMS:
        raise ValueError(f"the attribute vector needs cond_dim >= {ATTRIBUTE_DIMS}, got {dim}")
    v = torch.zeros(len(scenes), dim)
    for i, s in enumerate(scenes):
        v[i, SHAPES.index(s.shape)] = 1.0
        v[i, len(SHAPES) + s.color] = 1.0
        v[i, len(SHAPES) + len(COLORS) + s.background] = 1.0
        v[i, ATTRIBUTE_DIMS - 3:ATTRIBUTE_DIMS] = torch.tensor([2 * s.x - 1, 2 * s.y - 1, 4 * s.size - 1])
    return v


def caption_attribute_vector(scenes: Sequence[Scene], dim: int) -> torch.Tensor:
    """:func:`attribute_vector` with x, y and size replaced by -1 / 0 / 1 for the caption's three words of each."""
    v = attribute_vector(scenes, dim)
    for i, s in enumerate(scenes):
        v[i, ATTRIBUTE_DIMS - 3:ATTRIBUTE_DIMS] = torch.tensor(
            [_third(s.x, NEAR_BELOW, FAR_ABOVE), _third(s.y, NEAR_BELOW, FAR_ABOVE), _third(s.size, SMALL_BELOW,
                                                                                             LARGE_ABOVE)])
    return v


def _third(value: float, low: float, high: float) -> float:
    return -1.0 if value < low else 1.0 if value > high else 0.0


def rotation(dim: int, seed: int = 5) -> torch.Tensor:
    """A fixed random ``dim x dim`` orthogonal matrix."""
    return torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed)))[0]


def conditioner(kind: str, cfg: DictConfig) -> Conditioner:
    """``f(scenes, images) -> (n, cond_dim)`` for ``kind`` (one of CONDITIONS)."""
    dim = cfg.unet.cond_dim
    if kind == "attributes":
        return lambda scenes, images: attribute_vector(scenes, dim)
    if kind == "caption-attributes":
        return lambda scenes, images: caption_attribute_vector(scenes, dim)
    if kind == "rotated":
        matrix = rotation(dim)
        return lambda scenes, images: attribute_vector(scenes, dim) @ matrix
    if kind.startswith("clip"):
        clip = build_frozen_clip(cfg)

        def embed(scenes: list[Scene], images: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return clip.encode_image(images).float()

        if kind == "clip":
            return embed
        mean, matrix = whitening(embed, cfg.data.resolution)
        return lambda scenes, images: (embed(scenes, images) - mean) @ matrix
    raise ValueError(f"unknown --cond {kind!r}; valid: {', '.join(CONDITIONS)}")


def whitening(embed: Conditioner, resolution: int, num: int = 4096, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, ZCA matrix) of ``embed`` over ``num`` random toy scenes (seed 2: neither training nor held out)."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, moving=False) for _ in range(num)]
    chunks = [embed(scenes[i:i + 256], scene_images(scenes[i:i + 256], resolution)) for i in range(0, num, 256)]
    e = torch.cat(chunks).double()
    mean = e.mean(0)
    values, vectors = torch.linalg.eigh(torch.cov((e - mean).T))
    matrix = vectors @ torch.diag(values.clamp(min=1e-8 * values.max()).rsqrt()) @ vectors.T
    return mean.float(), matrix.float()


def train_renderer(cfg: DictConfig, condition: Conditioner, steps: int, batch: int, seed: int = 0,
                   objective: str = "renderer", band_t: int = 600) -> UNet:
    """The recipe's UNet trained ``steps`` steps at t = T - 1 (``objective="renderer"``), at the recipe's training
    timesteps (``"diffusion"``) or at t = ``band_t`` (``"band"``); returns its EMA copy. With ``repa.weight > 0``
    the loss adds REPA's alignment of the UNet's middle features with the recipe CLIP's (``repa.*``)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = UNet(cfg.unet)
    ema = copy.deepcopy(net).requires_grad_(False)
    diffusion = GaussianDiffusion(cfg.diffusion)
    repa_head, repa_features = build_repa(cfg, net, build_frozen_clip(cfg)) if cfg.repa.weight > 0 else (None, None)
    trained = list(net.parameters()) + (list(repa_head.parameters()) if repa_head is not None else [])
    optimizer = torch.optim.AdamW(trained, lr=cfg.optim.lr, weight_decay=0.0)
    warmup = max(1, cfg.optim.warmup_steps)
    for step in range(steps):
        cosine = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in optimizer.param_groups:
            group["lr"] = cfg.optim.lr * min(1.0, (step + 1) / warmup) * cosine
        scenes = [random_scene(rng, moving=False) for _ in range(batch)]
        x0 = scene_images(scenes, cfg.data.resolution)
        if objective == "diffusion":
            t = diffusion.sample_timesteps(batch, x0.device)
        else:
            t = torch.full((batch,), _fixed_t(objective, band_t, diffusion))
        noise = torch.randn_like(x0)
        drop = torch.rand(batch) < cfg.model.p_drop_image_emb
        capture = {} if repa_head is not None else None
        out = net(diffusion.q_sample(x0, t, noise), t, image_emb=condition(scenes, x0), drop_image=drop,
                  capture=capture)
        loss = diffusion.loss(out, x0, noise, t)
        if repa_head is not None:
            loss = loss + cfg.repa.weight * repa_head.loss(capture["middle"], repa_features(x0))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            for averaged, live in zip(ema.parameters(), net.parameters()):
                averaged.lerp_(live, 1.0 - cfg.ema.decay)
    return ema.eval()


def _fixed_t(objective: str, band_t: int, diffusion: GaussianDiffusion) -> int:
    if objective == "renderer":
        return diffusion.num_timesteps - 1
    if not 0 <= band_t < diffusion.num_timesteps:
        raise ValueError(f"--band-t must be in [0, {diffusion.num_timesteps}), got {band_t}")
    return band_t


def judge_renderer(net: UNet, cfg: DictConfig, condition: Conditioner, num: int,
                   objective: str = "renderer", band_t: int = 600) -> dict[str, float]:
    """The judge's scores for ``num`` held-out scenes (seed 1): of the renderer's predictions, of samples drawn
    with the recipe's sampler settings (``objective="diffusion"``), or of one x0 prediction from the held-out images
    noised to ``band_t`` (``"band"``)."""
    scenes = heldout_scenes(num, 1)
    images = scene_images(scenes, cfg.data.resolution)
    diffusion = GaussianDiffusion(cfg.diffusion)
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(images.shape, generator=generator)
    emb = condition(scenes, images)
    with torch.no_grad():
        if objective != "diffusion":
            t = torch.full((num,), _fixed_t(objective, band_t, diffusion))
            if objective == "band":
                x_t = diffusion.q_sample(images, t, x_t)
            x0 = diffusion.predict_x0(x_t, t, net(x_t, t, image_emb=emb)).clamp(-1, 1)
        else:
            def fn(x: torch.Tensor, t: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
                return net(x, t, image_emb=emb.repeat(x.shape[0] // num, 1), drop_image=drop)

            x0 = diffusion.sample(diffusion.guided_batched(fn), x_t, generator=generator)
    scores = score_images(x0, [caption_of(s) for s in scenes]).as_dict()
    return {key: float(value) for key, value in scores.items() if isinstance(value, float)}


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cond", choices=CONDITIONS, default="attributes")
    parser.add_argument("--objective", choices=OBJECTIVES, default="renderer")
    parser.add_argument("--clip", help="open_clip weights file of the toy CLIP (--cond clip)")
    parser.add_argument("--recipe", default="demo/decoder")
    parser.add_argument("--steps", type=int, default=3600)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--num", type=int, default=64, help="held-out scenes judged")
    parser.add_argument("--band-t", type=int, default=600, help="the timestep of --objective band")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides of the recipe")
    args = parser.parse_args(argv)
    if args.cond.startswith("clip") and not args.clip:
        parser.error("--cond clip needs --clip FILE (the toy CLIP's open_clip weights)")
    # This loop does not self-condition (the recipe's network without demo/decoder's estimate channels) and guides
    # at one scale, as it did when sessions 14-23 measured with it.
    plain = ["diffusion.self_condition=false", "unet.extra_in_channels=0", "diffusion.guidance_interval=null"]
    overrides = plain + list(args.overrides) + ([f"clip.pretrained={args.clip}"] if args.clip else [])
    cfg = load_config(args.recipe, overrides)
    if args.objective == "band" and not 0 <= args.band_t < cfg.diffusion.timesteps:
        parser.error(f"--band-t must be in [0, {cfg.diffusion.timesteps}), got {args.band_t}")
    condition = conditioner(args.cond, cfg)
    net = train_renderer(cfg, condition, args.steps, args.batch, objective=args.objective, band_t=args.band_t)
    scores = judge_renderer(net, cfg, condition, args.num, objective=args.objective, band_t=args.band_t)
    shown = " ".join(f"{key}={value:.3f}" for key, value in scores.items())
    at = f" t={args.band_t}" if args.objective == "band" else ""
    print(f"{args.objective}{at}: cond={args.cond} steps={args.steps} batch={args.batch} n={args.num} {shown}")
    return scores


if __name__ == "__main__":
    main()

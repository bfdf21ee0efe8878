"""SR_h on video: the image net run frame by frame with one noise draw shared by every frame of a clip."""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor

from mav_train.components.sr_high import SrHigh
from mav_train.components.super_res import per_clip_noise


def _shared_noise(shape: tuple[int, ...], frames: int, generator: torch.Generator | None,
                  device: torch.device) -> Tensor:
    """One draw of ``(b, c, h, w)`` noise repeated for every frame, frames as batch items: ``((b t), c, h, w)``."""
    return rearrange(per_clip_noise(shape, frames, generator, device), "b c t h w -> (b t) c h w")


@torch.no_grad()
def sr_high_on_video(sr_high: SrHigh, video: Tensor, *, generator: torch.Generator | None = None,
                     steps: int | None = None, noise_level: float | None = None,
                     guidance_scale: float | None = None, image_emb: Tensor | None = None) -> Tensor:
    """Upsample ``video`` (``b 3 t l l``, l = SR_h's ``model.low_res``, values in [-1, 1]) frame by frame with the
    image net SR_h to ``b 3 t R R``.

    Make-A-Video: the same noise initialisation for every frame, so that the detail SR_h hallucinates is the same
    across frames. Here every random draw is shared by the frames of a clip: the initial noise x_T, the noise of
    the low-res input's augmentation, and the fresh noise of every stochastic sampler step (DDPM, DDIM eta > 0).
    Identical input frames therefore give identical output frames. The ``t`` frames of one clip go through the
    network as one batch; clips one after another. ``image_emb`` (``b d``), for an SR_h conditioned on the CLIP
    image embedding, conditions every frame of its clip.
    """
    if video.ndim != 5:
        raise ValueError(f"video must be b 3 t h w, got shape {tuple(video.shape)}")
    c, t = video.shape[1:3]
    size, device = sr_high.cfg.data.resolution, sr_high.device
    outs = []
    for i, clip in enumerate(video):
        x_t = _shared_noise((1, sr_high.cfg.unet.out_channels, size, size), t, generator, device)
        aug = _shared_noise((1, c, size, size), t, generator, device)

        def step_noise(x: Tensor) -> Tensor:
            return _shared_noise((1, *x.shape[1:]), x.shape[0], generator, device)

        frames = rearrange(clip, "c t h w -> t c h w")
        emb = None if image_emb is None else repeat(image_emb[i], "d -> t d", t=t)
        out = sr_high.upsample(frames, image_emb=emb, generator=generator, steps=steps, noise_level=noise_level,
                               guidance_scale=guidance_scale, noise=x_t, aug_noise=aug, noise_fn=step_noise)
        outs.append(rearrange(out, "t c h w -> c t h w"))
    return torch.stack(outs)

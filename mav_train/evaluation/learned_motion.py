"""What a video diffusion model's temporal layers do by themselves: sample with one noise draw for every frame.

With independent (or partly shared, ``diffusion.frame_noise_share``) noise, the frames of a sampled clip differ
for two reasons: what the temporal layers make of frame position and fps, and the differences between the
frames' noise, which a per-frame network turns into a shape that wanders. Sampled with the same draw in every
frame (x_T and the fresh noise of every stochastic step), a network whose temporal layers are still the identity
returns the same frame ``t`` times; any change between frames is what the temporal layers learned.
``GaussianDiffusion.noise(share=1.0)`` draws that noise; ↑F's ``fill`` takes it as ``noise_share=1.0``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mav_train.components.base import Conditions


def same_noise_sample(module, cond: Conditions, batch: int, generator: torch.Generator,
                      guidance_scale: float | None = None) -> Tensor:
    """``b c t h w`` videos from a temporal component (``sample_shape``, ``sample``) with every frame's noise one
    draw per clip, drawn from ``generator``."""
    shape = module.sample_shape(batch)
    noise = module.diffusion.noise(shape, generator=generator, device=module.device, share=1.0)
    return module.sample(cond, shape, noise=noise, noise_fn=module.fresh_noise_fn(len(shape), generator, share=1.0),
                         guidance_scale=guidance_scale)


def frame_change(videos: Tensor) -> float:
    """Mean absolute difference between consecutive frames of ``b c t h w`` videos in [-1, 1], in 0-255 levels."""
    return float((videos[:, :, 1:] - videos[:, :, :-1]).abs().mean() * 127.5)

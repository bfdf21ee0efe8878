"""The low-resolution input of the super-resolution nets: made from the high-res image, augmented, resized up.

Pure tensor functions on images ``b c h w`` or videos ``b c t h w`` (frames are resized independently), pixels in
[-1, 1]. Downsampling is antialiased bicubic (``F.interpolate(antialias=True)``), the same function for training
inputs, sampling inputs and the low-resolution consistency check; upsampling is plain bicubic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torchvision.transforms.v2.functional import gaussian_blur


def _resize(x: Tensor, size: int, antialias: bool) -> Tensor:
    if x.ndim == 5:
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        out = _resize(frames, size, antialias)
        return rearrange(out, "(b t) c h w -> b c t h w", b=x.shape[0])
    if x.ndim != 4:
        raise ValueError(f"expected images b c h w or videos b c t h w, got shape {tuple(x.shape)}")
    if x.shape[-2:] == (size, size):
        return x
    out = F.interpolate(x.float(), size=(size, size), mode="bicubic", antialias=antialias, align_corners=False)
    return out.clamp(-1.0, 1.0).to(x.dtype)


def downsample(x: Tensor, size: int) -> Tensor:
    """``b c [t] h w`` -> ``b c [t] size size``: antialiased bicubic, clamped to [-1, 1]."""
    return _resize(x, size, antialias=True)


def upsample(x: Tensor, size: int) -> Tensor:
    """``b c [t] h w`` -> ``b c [t] size size``: bicubic (the bicubic baseline, and the SR nets' extra input)."""
    return _resize(x, size, antialias=False)


def random_blur(x: Tensor, prob: float, sigma_range: tuple[float, float], generator: torch.Generator | None = None
                ) -> Tensor:
    """Gaussian blur (kernel 3, DALL-E 2's upsamplers) of each sample with probability ``prob``, sigma uniform in
    ``sigma_range``; every frame of a video gets its sample's blur. ``x``: ``b c [t] h w``; returns a new tensor."""
    if prob <= 0.0:
        return x
    out = x.clone()
    draws = torch.rand(x.shape[0], 2, generator=generator).tolist()
    low, high = sigma_range
    for index, (coin, u) in enumerate(draws):
        if coin < prob:
            sample = out[index]
            frames = rearrange(sample, "c t h w -> t c h w") if sample.ndim == 4 else sample
            blurred = gaussian_blur(frames, kernel_size=[3, 3], sigma=[low + (high - low) * u] * 2)
            out[index] = rearrange(blurred, "t c h w -> c t h w") if sample.ndim == 4 else blurred
    return out


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample PSNR in dB of two ``b ...`` tensors in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(4.0 / mse.clamp_min(1e-12))

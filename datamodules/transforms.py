"""Resize the short side, centre-crop to a square; pixels as uint8, scaled to [-1, 1] after the transfer.

The loaders ship pixels as uint8 ``[0, 255]`` (4x less worker -> main process and host -> device traffic
than float32); :func:`pixels_to_float` turns them into float32 ``[-1, 1]`` in the training process
(``ShardDataModule.on_after_batch_transfer``), so training steps see float pixels in [-1, 1].
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image


def image_to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB; transparency (RGBA, LA, P with a transparent colour) is composited onto white."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float32)
        scale = 255.0 / max(float(array.max()), 1.0)
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8))
    return image.convert("RGB")


def pixels_to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] (any shape, any device) -> float32 in [-1, 1], same shape."""
    if pixels.dtype != torch.uint8:
        raise ValueError(f"pixels_to_float needs uint8 pixels, got {pixels.dtype}")
    return pixels.float().div_(127.5).sub_(1.0)


PIXEL_KEYS = ("video", "image", "clip_image", "images", "images_clip")  # the uint8 entries of loader batches


def batch_pixels_to_float(batch: dict[str, Any]) -> dict[str, Any]:
    """A loader batch with its uint8 :data:`PIXEL_KEYS` entries turned into float32 [-1, 1] (in place;
    entries that are already float, e.g. a batch converted before, are left as they are)."""
    for key in PIXEL_KEYS:
        value = batch.get(key)
        if isinstance(value, torch.Tensor) and value.dtype == torch.uint8:
            batch[key] = pixels_to_float(value)
    return batch


def square_image(image: Image.Image, size: int) -> torch.Tensor:
    """RGB PIL image -> ``c h w`` uint8 tensor of shape (3, size, size) (bicubic resize, centre crop)."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    resized = image if image.size == (new_w, new_h) else image.resize((new_w, new_h), Image.Resampling.BICUBIC,
                                                                      reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    cropped = resized.crop((left, top, left + size, top + size))
    pixels = torch.from_numpy(np.asarray(cropped, dtype=np.uint8).copy())
    return rearrange(pixels, "h w c -> c h w")


def _square_video(video: torch.Tensor, size: int) -> torch.Tensor:
    """``t c h w`` (uint8 or float) -> ``c t size size``: antialiased bilinear short-side resize, centre
    crop."""
    height, width = video.shape[-2:]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    if (new_h, new_w) != (height, width):
        video = F.interpolate(
            video, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
        )
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return rearrange(video[:, :, top : top + size, left : left + size], "t c h w -> c t h w")


def square_frames_uint8(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 frames ``t h w c`` -> ``c t h w`` uint8 tensor (3, t, size, size), resized by torch's uint8
    antialiased kernel (within one grey level of the float resize of :func:`square_frames`)."""
    return _square_video(rearrange(torch.from_numpy(frames), "t h w c -> t c h w"), size)


def square_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 frames ``t h w c`` -> ``c t h w`` float tensor (3, t, size, size) in [-1, 1], resized in float
    (the reference for :func:`square_frames_uint8`; the plain loop of bench/bench_video_data.py uses it)."""
    video = _square_video(rearrange(torch.from_numpy(frames), "t h w c -> t c h w").float(), size)
    return video.div(127.5).sub(1.0).clamp(-1.0, 1.0)

"""Resize the short side, centre-crop to a square, and scale pixels to [-1, 1]."""

from __future__ import annotations

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


def square_image(image: Image.Image, size: int) -> torch.Tensor:
    """RGB PIL image -> ``c h w`` float tensor of shape (3, size, size) in [-1, 1]."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    resized = image.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    cropped = resized.crop((left, top, left + size, top + size))
    pixels = torch.from_numpy(np.asarray(cropped, dtype=np.uint8).copy())
    return rearrange(pixels, "h w c -> c h w").float().div(127.5).sub(1.0)


def square_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 frames ``t h w c`` -> ``c t h w`` float tensor (3, t, size, size) in [-1, 1]."""
    video = rearrange(torch.from_numpy(frames), "t h w c -> t c h w").float()
    height, width = video.shape[-2:]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    if (new_h, new_w) != (height, width):
        video = F.interpolate(
            video, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
        )
    top, left = (new_h - size) // 2, (new_w - size) // 2
    video = video[:, :, top : top + size, left : left + size]
    return rearrange(video, "t c h w -> c t h w").div(127.5).sub(1.0).clamp(-1.0, 1.0)

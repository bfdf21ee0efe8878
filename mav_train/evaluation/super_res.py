"""Measures of super-resolution outputs against the truth and the low-res input (pure torch).

- ``low_res_psnr``: the output downsampled back to the input size (the same antialiased bicubic that made the
  input) against the input; Imagen-style consistency, >= 30 dB wanted.
- ``psnr``: the output against the true high-res image.
- ``edge_sharpness``: mean Sobel gradient magnitude of the output at the true image's edge pixels (where the
  truth's gradient magnitude is at least half its maximum), divided by the truth's there: 1.0 = edges as steep
  as the truth's, bicubic upsampling stays below.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from mav_train.components.low_res import downsample, psnr

SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def _frames(x: Tensor) -> Tensor:
    return rearrange(x, "b c t h w -> (b t) c h w") if x.ndim == 5 else x


def gradient_magnitude(x: Tensor) -> Tensor:
    """``b c h w`` in [-1, 1] -> ``b h w`` Sobel gradient magnitude of the grey image."""
    grey = x.float().mean(1, keepdim=True)
    kernels = torch.stack([SOBEL, SOBEL.T]).unsqueeze(1).to(grey.device)
    g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    return g.pow(2).sum(1).sqrt()


def edge_sharpness(x: Tensor, truth: Tensor) -> float:
    """Gradient magnitude of ``x`` over the truth's at the truth's edge pixels (images or videos)."""
    gx, gt = gradient_magnitude(_frames(x)), gradient_magnitude(_frames(truth))
    mask = gt >= 0.5 * gt.flatten(1).amax(1).clamp_min(1e-6).view(-1, 1, 1)
    return float(gx[mask].mean() / gt[mask].mean())


def sr_measures(out: Tensor, truth: Tensor, low_res: Tensor) -> dict[str, float]:
    """PSNR vs truth, low-res consistency PSNR and edge sharpness of ``out`` (images or videos)."""
    o, t, low = _frames(out), _frames(truth), _frames(low_res)
    return {"psnr": float(psnr(o, t).mean()),
            "low_res_psnr": float(psnr(downsample(o, low.shape[-1]), low).mean()),
            "edge_sharpness": edge_sharpness(o, t)}

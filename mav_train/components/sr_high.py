"""SR_h: the second image super-resolution net (256 → 768 at paper scale), trained on random crops."""

from __future__ import annotations

import torch
from torch import Tensor
from typing_extensions import override

from mav_train.components.super_res import SuperResolution


class SrHigh(SuperResolution):
    """SR_h: low-res image → image at ``data.resolution``, spatial only (also at video time, frame by frame with
    shared noise: :func:`mav_train.pipeline.sr_high_on_video`).

    To fit in memory it trains on random ``model.crop_size`` crops of the high-res image and of the resized-up
    low-res input (the same window; centre crops in validation) and samples the whole image: the network is
    fully convolutional at the top levels (no attention there), so it runs at any size divisible by its
    downsampling factor.
    """

    @override
    def configure_trainable(self) -> None:
        super().configure_trainable()
        crop, size = self.cfg.model.crop_size, self.cfg.data.resolution
        if crop is not None and not 0 < crop <= size:
            raise ValueError(f"model.crop_size {crop} must lie in (0, data.resolution {size}]")
        factor = 2 ** (len(self.cfg.unet.channel_mults) - 1)
        if crop is not None and crop % factor:
            raise ValueError(f"model.crop_size {crop} must be divisible by the UNet's downsampling factor {factor}")

    @override
    def crop(self, x0: Tensor, extra: Tensor) -> tuple[Tensor, Tensor]:
        crop = self.cfg.model.crop_size
        size = x0.shape[-1]
        if crop is None or crop == size:
            return x0, extra
        if not self.training:
            top = left = (size - crop) // 2
            return x0[..., top:top + crop, left:left + crop], extra[..., top:top + crop, left:left + crop]
        corners = torch.randint(0, size - crop + 1, (x0.shape[0], 2)).tolist()
        x_crops = torch.stack([x[..., t:t + crop, c:c + crop] for x, (t, c) in zip(x0, corners)])
        e_crops = torch.stack([e[..., t:t + crop, c:c + crop] for e, (t, c) in zip(extra, corners)])
        return x_crops, e_crops

"""SR_l^t: the spatiotemporal super-resolution net (16 frames, 64 → 256 at paper scale), inflated from SR_l."""

from __future__ import annotations

import torch
from torch import Tensor
from typing_extensions import override

from mav_train.components.super_res import SuperResolution, per_clip_noise
from mav_train.components.temporal_decoder import configure_video_trainable


class TemporalSrLow(SuperResolution):
    """SR_l^t: SR_l with pseudo-3D convolution and attention layers and fps conditioning, trained on unlabeled
    video (the low-res clip is the high-res clip downsampled frame by frame).

    Initialised from a trained ``sr_low`` checkpoint (``init.checkpoint``) with every new temporal layer at the
    identity, so at initialisation it equals SR_l frame by frame. With ``model.freeze_spatial`` only the temporal
    and fps parameters train. Sampling: :meth:`upsample` with a ``b 3 t l l`` clip and its fps.
    """

    pixel_key = "video"

    @override
    def configure_trainable(self) -> None:
        super().configure_trainable()
        configure_video_trainable(self)

    @override
    def fps(self, batch: dict) -> Tensor | None:
        return batch["fps"].to(self.device, batch[self.pixel_key].dtype)

    @override
    def upsample(self, low_res: Tensor, *, shared_noise: bool = False, generator: torch.Generator | None = None,
                 noise: Tensor | None = None, aug_noise: Tensor | None = None, **kwargs) -> Tensor:
        """:meth:`SuperResolution.upsample` of a clip; with ``shared_noise`` every frame of a clip starts from the
        same draw of x_T and of the low-res input's augmentation noise, and stochastic steps share theirs too (as
        SR_h on video does). Measured on the toy world (README): background flicker 0.138 with shared noise
        against 0.168 with an independent draw per frame, PSNR and the judge's scores unchanged."""
        if shared_noise:
            if low_res.ndim != 5:
                raise ValueError(f"shared_noise needs a clip b 3 t h w, got shape {tuple(low_res.shape)}")
            b, _, t = low_res.shape[:3]
            size = self.cfg.data.resolution
            if noise is None:
                noise = per_clip_noise((b, self.cfg.unet.out_channels, size, size), t, generator, self.device)
            if aug_noise is None:
                aug_noise = per_clip_noise((b, low_res.shape[1], size, size), t, generator, self.device)
            if kwargs.get("noise_fn") is None:
                kwargs["noise_fn"] = lambda x: per_clip_noise((x.shape[0], x.shape[1], *x.shape[3:]), x.shape[2],
                                                              generator, self.device)
        return super().upsample(low_res, generator=generator, noise=noise, aug_noise=aug_noise, **kwargs)

"""SR_l^t: the spatiotemporal super-resolution net (16 frames, 64 → 256 at paper scale), inflated from SR_l."""

from __future__ import annotations

from torch import Tensor
from typing_extensions import override

from mav_train.components.super_res import SuperResolution
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

"""The temporal decoder D^t: CLIP image embedding + fps → 16 frames at 64×64, inflated from the decoder D."""

from __future__ import annotations

import torch
from torch import Tensor
from typing_extensions import override

from mav_train.components.base import Conditions, DiffusionComponent


def configure_video_trainable(module: DiffusionComponent) -> None:
    """Video components inflated from an image one (D^t, SR_l^t): with ``model.freeze_spatial`` only the temporal
    and fps parameters train; otherwise everything but the text branch (video has no text)."""
    if not module.cfg.unet.temporal:
        raise ValueError(f"{module.cfg.component} needs unet.temporal=true")
    for name, param in module.network.named_parameters():
        if module.cfg.model.freeze_spatial:
            param.requires_grad_(module.network.is_temporal_parameter(name))
        elif module.network.is_text_parameter(name):
            # Video has no text: the text branch inherited from the image model gets no gradient, and keeping it
            # trainable would force DDP to search for unused parameters every step.
            param.requires_grad_(False)


class TemporalDecoder(DiffusionComponent):
    """D^t: the decoder's UNet with pseudo-3D convolution and attention layers and fps conditioning.

    Initialised from a trained ``decoder`` checkpoint (``init.checkpoint``) with every new temporal layer at the
    identity, then trained on unlabeled video. There is no text at video time: the condition is the CLIP image
    embedding of a frame of the clip (the first by default). With ``model.freeze_spatial`` only the new temporal
    and fps parameters train (the paper's setup). Optional image batches (``data.image_shards``) train the same
    network on single images (temporal layers are skipped on 4-D input).
    """

    @override
    def configure_trainable(self) -> None:
        configure_video_trainable(self)

    @override
    def prepare_batch(self, batch: dict) -> tuple[Tensor, Conditions]:
        video = batch["video"]
        if "image_emb" in batch:  # precomputed, as the decoder takes it
            image_emb = batch["image_emb"].float()
        else:
            image_emb = self.clip.encode_image(batch["clip_image"])
        fps = batch["fps"].to(video.dtype)
        return video, Conditions(image_emb=image_emb, fps=fps, always_drop_text=True)

    @override
    def extra_losses(self, batch: dict) -> Tensor | float:
        if "images" not in batch or batch["images"].shape[0] == 0:
            return 0.0
        images = batch["images"]
        image_emb = self.clip.encode_image(batch.get("images_clip", images))
        loss = self.diffusion_loss(images, Conditions(image_emb=image_emb, always_drop_text=True))
        self.log("train/image_loss", loss, on_step=True, batch_size=images.shape[0])
        return loss

    def sample_shape(self, batch: int) -> tuple[int, ...]:
        u, d = self.cfg.unet, self.cfg.data
        return (batch, u.out_channels, d.num_frames, d.resolution, d.resolution)

    def video_conditions(self, frames: Tensor, fps: float) -> Conditions:
        """Conditions for sampling videos from conditioning frames ``b 3 h w`` in [-1, 1] at ``fps``."""
        return Conditions(image_emb=self.clip.encode_image(frames), fps=self.fps_tensor(fps, frames.shape[0]),
                          always_drop_text=True)

    def fps_tensor(self, fps: float, batch: int) -> Tensor:
        return torch.full((batch,), float(fps), device=self.device)

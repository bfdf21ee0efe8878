"""The image decoder D: CLIP image embedding → 64×64 image (DALL-E 2's decoder, Make-A-Video's D)."""

from __future__ import annotations

from torch import Tensor
from typing_extensions import override

from mav_train.components.base import Conditions, DiffusionComponent


class Decoder(DiffusionComponent):
    """D: a diffusion UNet conditioned on the CLIP image embedding y_e of the training image itself.

    With ``unet.text_dim > 0`` the per-token CLIP text states of the caption are extra attention context
    (dropped 50% of the time, as DALL-E 2 does); the image embedding is dropped 10% of the time.
    """

    @override
    def prepare_batch(self, batch: dict) -> tuple[Tensor, Conditions]:
        x0 = batch["image"]
        if "image_emb" in batch:  # precomputed (data.embeddings), joined to the shards by key
            image_emb = batch["image_emb"].float()
        else:
            image_emb = self.clip.encode_image(batch.get("clip_image", x0))
        cond = Conditions(image_emb=image_emb)
        if self.cfg.unet.text_dim > 0:
            text = self.clip.encode_text(list(batch["caption"]))
            cond.text_states, cond.text_mask = text.states, text.mask
        return x0, cond

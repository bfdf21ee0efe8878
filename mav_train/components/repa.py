"""Representation alignment (REPA; Yu et al. 2024, "Representation Alignment for Generation") for the UNet
components: a training loss that asks the UNet's middle features (or an encoder block's, ``repa.unet_feature``) on
the noisy input to predict, through a small projector trained with it, the frozen CLIP image tower's features of the
clean image (``repa.*`` in the config).

Why a diffusion decoder wants it: its x0 loss rewards an outline only by the few pixels where outlines differ,
while the CLIP's features of the clean image differ plainly between shapes. With the features as a second target,
the network must infer from ``x_t`` and its conditioning what the clean image shows, at every noise level.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from mav_train.nn.encoders import FrozenCLIP
from mav_train.nn.unet import UNet


class RepaHead(nn.Module):
    """The trained projector (two 1x1 convolutions) from the aligned UNet feature to the CLIP layer's channels,
    and the alignment loss: 1 - cosine similarity, averaged over positions (and frames)."""

    def __init__(self, in_channels: int, target_channels: int, hidden: int):
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.SiLU(),
                                     nn.Conv2d(hidden, target_channels, 1))

    def loss(self, features: Tensor, target: Tensor) -> Tensor:
        """``features``: the aligned UNet feature (``b c h w``, or ``b c t h w`` for videos); ``target``: the CLIP
        layer's feature map of the clean images (``n d H W``, n = b or b·t). The projection is resized to the
        target's grid (bilinear) when the two differ."""
        if features.ndim == 5:
            features = rearrange(features, "b c t h w -> (b t) c h w")
        projected = self.project(features).float()
        if projected.shape[-2:] != target.shape[-2:]:
            projected = F.interpolate(projected, size=target.shape[-2:], mode="bilinear", align_corners=False)
        return (1.0 - F.cosine_similarity(projected, target.float(), dim=1)).mean()


class ClipFeatures:
    """The output of one named module of a frozen CLIP's image tower, as a ``b d H W`` map. Convolutional towers
    give maps already; a ViT block gives tokens, ``b n d`` (or ``n b d``), which become a map after the class token
    is dropped (n = 1 + g², g × g patches)."""

    def __init__(self, clip: FrozenCLIP, layer: str):
        modules = dict(clip.model.visual.named_modules())
        if layer not in modules or not layer:
            names = [n for n in modules if n and n.count(".") < 2]
            raise ValueError(f"repa.encoder_layer: {layer!r} is not a module of the CLIP image tower; "
                             f"some that are: {', '.join(names[:24])}")
        self.clip = clip
        self.layer = layer
        self._out: list[Tensor] = []
        self._armed = False  # the hook keeps outputs only during this reader's own pass: the CLIP also embeds
        modules[layer].register_forward_hook(self._keep)  # conditions, and sampling never calls the reader

    def _keep(self, _module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        if self._armed:
            self._out.append(output)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        """``b c h w`` (or ``b c t h w``, frames folded into the batch) in [-1, 1] → ``n d H W``, float."""
        if images.ndim == 5:
            images = rearrange(images, "b c t h w -> (b t) c h w")
        self._out.clear()
        self._armed = True
        try:
            self.clip.model.encode_image(self.clip.preprocess(images))
        finally:
            self._armed = False
        if not self._out:
            raise RuntimeError(f"repa.encoder_layer {self.layer!r} did not run in the CLIP image tower's forward")
        out = self._out[0]
        self._out.clear()
        if isinstance(out, tuple):
            out = out[0]
        return as_map(out, images.shape[0], self.layer).float()


def as_map(out: Tensor, batch: int, layer: str) -> Tensor:
    """A feature map ``b d H W`` from a conv output (returned as is) or ViT tokens (``b n d`` or ``n b d``)."""
    if out.ndim == 4:
        return out
    if out.ndim != 3:
        raise ValueError(f"repa.encoder_layer {layer!r} gives a {out.ndim}-d output; a feature map or tokens needed")
    if out.shape[0] != batch and out.shape[1] == batch:
        out = out.transpose(0, 1)
    n = out.shape[1]
    for extra in (1, 0):
        side = int(round((n - extra) ** 0.5))
        if side * side == n - extra and side > 0:
            return rearrange(out[:, extra:], "b (h w) d -> b d h w", h=side)
    raise ValueError(f"repa.encoder_layer {layer!r} gives {n} tokens, not a square grid (with or without a class "
                     f"token)")


def build_repa(cfg, network: nn.Module, clip: FrozenCLIP) -> tuple[RepaHead, ClipFeatures]:
    """The projector and the CLIP feature reader for ``cfg.repa``; the target's width is read from one forward
    pass of the CLIP tower."""
    if not isinstance(network, UNet):
        raise ValueError(f"repa.weight > 0 needs a UNet network (its captured features); this component builds a "
                         f"{type(network).__name__}")
    reader = ClipFeatures(clip, cfg.repa.encoder_layer)
    size = clip.image_size
    probe = reader(torch.zeros(1, 3, size, size, device=next(clip.parameters()).device))
    channels = network.feature_channels(cfg.repa.unet_feature)
    return RepaHead(channels, probe.shape[1], cfg.repa.projector_dim), reader

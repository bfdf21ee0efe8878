"""Pseudo-3D layers (Make-A-Video §3.2): 2D layers applied per frame, each followed by a temporal layer.

``Conv_P3D(h) = Conv1D(Conv2D(h) ∘ T) ∘ T`` and ``ATTN_P3D(h) = ATTN1D(ATTN2D(h) ∘ T) ∘ T``. The temporal
layers are initialised to the identity (Dirac kernel; zero output projection), so a video network built from
an image network computes, frame by frame, exactly what the image network computes. Every module here accepts
images ``b c h w`` (temporal layers are then skipped) and videos ``b c t h w``; the number of frames is read
off the tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from mav_train.nn.attention import SpatialAttention, multihead_attention, num_heads
from mav_train.nn.embeddings import sinusoidal_embedding


def apply_per_frame(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Apply a ``b c h w -> b c' h' w'`` function to an image, or to every frame of a ``b c t h w`` video."""
    if x.ndim == 4:
        return fn(x)
    if x.ndim != 5:
        raise ValueError(f"expected b c h w or b c t h w, got shape {tuple(x.shape)}")
    frames = x.shape[2]
    out = fn(rearrange(x, "b c t h w -> (b t) c h w"))
    return rearrange(out, "(b t) c h w -> b c t h w", t=frames)


class FrameConv2d(nn.Conv2d):
    """``nn.Conv2d`` that also takes ``b c t h w`` videos (frame by frame). Same parameters as Conv2d."""

    def forward(self, x: Tensor) -> Tensor:
        """``b c h w`` or ``b c t h w`` -> same layout with ``out_channels``."""
        return apply_per_frame(super().forward, x)


class FrameGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` whose statistics are per frame for ``b c t h w`` videos. Same parameters."""

    def forward(self, x: Tensor) -> Tensor:
        """``b c h w`` or ``b c t h w`` -> same shape."""
        return apply_per_frame(super().forward, x)


class TemporalConv(nn.Conv3d):
    """The 1D temporal convolution of a pseudo-3D conv, as a ``(k, 1, 1)`` Conv3d on ``b c t h w``.

    Initialised to the identity (Dirac kernel, zero bias); zero-padded in time so ``t`` is kept.
    Images (``b c h w``) pass through unchanged.
    """

    def __init__(self, channels: int, kernel_size: int) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"temporal_kernel must be a positive odd number, got {kernel_size}")
        super().__init__(channels, channels, (kernel_size, 1, 1), padding=(kernel_size // 2, 0, 0))

    def reset_parameters(self) -> None:
        """Identity initialisation: centre tap 1 from channel i to channel i, all else 0."""
        nn.init.dirac_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``b c t h w`` -> ``b c t h w``; ``b c h w`` is returned as is."""
        if x.ndim == 4:
            return x
        return super().forward(x)


class TemporalAttention(nn.Module):
    """Pre-norm self-attention along time, for every pixel, with a residual connection.

    Learned frame-position embeddings (initialised sinusoidal) for up to ``max_frames`` frames. With ``emb_dim``
    the block's timestep (+ fps) embedding is added too, through a zero-initialised projection, so that how the
    frames attend to each other can depend on the noise level and the frame rate. The output projection is
    zero-initialised, so the layer starts as the identity. Images pass through unchanged.
    """

    def __init__(self, channels: int, head_dim: int, max_frames: int, emb_dim: int = 0) -> None:
        super().__init__()
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.heads = num_heads(channels, head_dim)
        self.max_frames = max_frames
        self.norm = nn.LayerNorm(channels)
        self.position = nn.Parameter(sinusoidal_embedding(torch.arange(max_frames), channels))
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        self.emb_proj = None
        if emb_dim > 0:
            self.emb_proj = nn.Linear(emb_dim, channels)
            nn.init.zeros_(self.emb_proj.weight)
            nn.init.zeros_(self.emb_proj.bias)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        """``b c t h w`` -> ``b c t h w`` (attention over ``t``); ``b c h w`` is returned as is. ``emb``
        ``(b, emb_dim)``: the timestep (+ fps) embedding, required when the layer was built with ``emb_dim``."""
        if x.ndim == 4:
            return x
        if x.ndim != 5:
            raise ValueError(f"expected b c h w or b c t h w, got shape {tuple(x.shape)}")
        batch, _, frames, height, width = x.shape
        if frames > self.max_frames:
            raise ValueError(
                f"got {frames} frames but the temporal attention has max_frames {self.max_frames}"
            )
        tokens = rearrange(x, "b c t h w -> (b h w) t c")
        hidden = self.norm(tokens) + self.position[:frames].to(tokens.dtype)
        if self.emb_proj is not None:
            if emb is None:
                raise ValueError("this temporal attention reads the timestep embedding (unet.temporal_attn_emb): "
                                 "pass emb")
            shift = repeat(self.emb_proj(F.silu(emb)), "b c -> (b h w) 1 c", h=height, w=width)
            hidden = hidden + shift.to(hidden.dtype)
        q, k, v = self.qkv(hidden).chunk(3, dim=-1)
        out = self.proj_out(multihead_attention(q, k, v, self.heads))
        return x + rearrange(out, "(b h w) t c -> b c t h w", b=batch, h=height, w=width)


class Pseudo3DConv(nn.Module):
    """3x3 spatial conv (per frame) followed, in a video network, by an identity-initialised temporal conv."""

    def __init__(self, in_channels: int, out_channels: int, temporal: bool, temporal_kernel: int) -> None:
        super().__init__()
        self.spatial = FrameConv2d(in_channels, out_channels, 3, padding=1)
        self.temporal = TemporalConv(out_channels, temporal_kernel) if temporal else None

    def forward(self, x: Tensor) -> Tensor:
        """``b c h w`` or ``b c t h w`` -> same layout with ``out_channels``."""
        x = self.spatial(x)
        return x if self.temporal is None else self.temporal(x)


class Pseudo3DAttention(nn.Module):
    """Spatial self/cross attention, then (video networks) identity-initialised temporal attention."""

    def __init__(
        self,
        channels: int,
        head_dim: int,
        context_dim: int,
        norm_groups: int,
        temporal: bool,
        max_frames: int,
        emb_dim: int = 0,
    ) -> None:
        super().__init__()
        self.spatial = SpatialAttention(channels, head_dim, context_dim, norm_groups)
        self.temporal = TemporalAttention(channels, head_dim, max_frames, emb_dim) if temporal else None

    def forward(self, x: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None,
                emb: Tensor | None = None) -> Tensor:
        """``b c h w`` or ``b c t h w`` -> same shape; context ``(b, m, d)``, context_mask ``(b, m)`` bool; ``emb``
        ``(b, emb_dim)`` for a temporal attention built with ``emb_dim``."""
        x = self.spatial(x, context, context_mask)
        return x if self.temporal is None else self.temporal(x, emb)


TEMPORAL_MODULES: tuple[type[nn.Module], ...] = (TemporalConv, TemporalAttention)

"""UNet building blocks: residual block with time-embedding scale/shift, down/upsampling, res + attention."""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from mav_train.nn.pseudo3d import (
    FrameConv2d,
    FrameGroupNorm,
    Pseudo3DAttention,
    Pseudo3DConv,
    apply_per_frame,
)


class ResBlock(nn.Module):
    """Residual block with time-embedding scale/shift (ADM).

    GroupNorm, SiLU, pseudo-3D conv; GroupNorm with scale/shift from the time embedding, SiLU, dropout,
    pseudo-3D conv; plus a skip connection (1x1 conv when the channel count changes). The second spatial conv
    is zero-initialised.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        time_dim: int,
        norm_groups: int,
        dropout: float,
        temporal: bool,
        temporal_kernel: int,
    ) -> None:
        super().__init__()
        self.norm_1 = FrameGroupNorm(norm_groups, in_channels)
        self.conv_1 = Pseudo3DConv(in_channels, out_channels, temporal, temporal_kernel)
        self.emb_proj = nn.Linear(time_dim, 2 * out_channels)
        self.norm_2 = FrameGroupNorm(norm_groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv_2 = Pseudo3DConv(out_channels, out_channels, temporal, temporal_kernel)
        nn.init.zeros_(self.conv_2.spatial.weight)
        nn.init.zeros_(self.conv_2.spatial.bias)
        if in_channels == out_channels:
            self.skip: nn.Module = nn.Identity()
        else:
            self.skip = FrameConv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """``x``: ``b c h w`` or ``b c t h w``; emb ``(b, time_dim)``. Returns x's layout, out_channels."""
        h = self.conv_1(F.silu(self.norm_1(x)))
        scale_shift = self.emb_proj(F.silu(emb))
        pattern = "b c -> b c 1 1" if x.ndim == 4 else "b c -> b c 1 1 1"
        scale, shift = rearrange(scale_shift, pattern).chunk(2, dim=1)
        h = self.norm_2(h) * (1 + scale) + shift
        h = self.conv_2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halve height and width with a stride-2 3x3 conv (per frame)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = FrameConv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """``b c h w`` / ``b c t h w`` -> ``b c h/2 w/2`` / ``b c t h/2 w/2``."""
        return self.conv(x)


class Upsample(nn.Module):
    """Double height and width: nearest-neighbour upsampling and a 3x3 conv (per frame)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """``b c h w`` / ``b c t h w`` -> ``b c 2h 2w`` / ``b c t 2h 2w``."""
        return apply_per_frame(self._frames, x)

    def _frames(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNetBlock(nn.Module):
    """A residual block, optionally followed by a (pseudo-3D) self + cross attention block."""

    def __init__(self, res: ResBlock, attn: Pseudo3DAttention | None) -> None:
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(
        self, x: Tensor, emb: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None,
        temporal_emb: Tensor | None = None,
    ) -> Tensor:
        """``x``: ``b c h w`` or ``b c t h w``; emb ``(b, time_dim)``; context ``(b, m, d)``, mask ``(b, m)``;
        ``temporal_emb`` ``(b, time_dim)``: what the temporal attention reads instead of ``emb`` (when given).

        Returns x's layout with the block's output channels.
        """
        x = self.res(x, emb)
        return x if self.attn is None else self.attn(x, context, context_mask,
                                                       emb if temporal_emb is None else temporal_emb)

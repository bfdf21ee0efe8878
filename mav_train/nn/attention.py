"""Spatial self + cross attention over the pixels of each frame (the UNet's 2D attention)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn


def num_heads(channels: int, head_dim: int) -> int:
    """Heads of an attention layer with ``channels`` channels; raises unless ``head_dim`` divides them."""
    if head_dim < 1 or channels % head_dim != 0:
        raise ValueError(f"attention channels {channels} must be divisible by head_dim {head_dim}")
    return channels // head_dim


def multihead_attention(
    q: Tensor, k: Tensor, v: Tensor, heads: int, key_mask: Tensor | None = None
) -> Tensor:
    """Scaled dot-product attention with ``heads`` heads.

    Args:
        q: ``(b, n, c)`` queries; k, v: ``(b, s, c)`` keys and values.
        key_mask: ``(b, s)`` bool, True = the key takes part; None = all keys take part.

    Returns:
        ``(b, n, c)``.
    """
    q, k, v = (rearrange(z, "b n (h d) -> b h n d", h=heads) for z in (q, k, v))
    attn_mask = None if key_mask is None else rearrange(key_mask, "b s -> b 1 1 s")
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    return rearrange(out, "b h n d -> b n (h d)")


class SpatialAttention(nn.Module):
    """Pre-norm self-attention over the pixels of a frame, with cross-attention to context tokens.

    As in GLIDE / DALL-E 2's decoder, the context tokens are projected to keys and values and attended to
    together with the pixels' own keys and values. The output projection is zero-initialised (ADM).
    5-D input ``b c t h w`` is handled frame by frame (time folded into batch).
    """

    def __init__(self, channels: int, head_dim: int, context_dim: int, norm_groups: int) -> None:
        super().__init__()
        self.heads = num_heads(channels, head_dim)
        self.norm = nn.GroupNorm(norm_groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.context_kv = nn.Linear(context_dim, 2 * channels) if context_dim > 0 else None
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        """Attend within each frame.

        Args:
            x: ``b c h w`` or ``b c t h w``.
            context: ``(b, m, context_dim)`` tokens or None.
            context_mask: ``(b, m)`` bool (True = valid) or None (all valid).

        Returns:
            Same shape as ``x``.
        """
        if x.ndim == 4:
            return self._attend(x, context, context_mask)
        if x.ndim != 5:
            raise ValueError(f"expected b c h w or b c t h w, got shape {tuple(x.shape)}")
        frames = x.shape[2]
        if context is not None:
            context = repeat(context, "b m d -> (b t) m d", t=frames)
        if context_mask is not None:
            context_mask = repeat(context_mask, "b m -> (b t) m", t=frames)
        out = self._attend(rearrange(x, "b c t h w -> (b t) c h w"), context, context_mask)
        return rearrange(out, "(b t) c h w -> b c t h w", t=frames)

    def _attend(self, x: Tensor, context: Tensor | None, context_mask: Tensor | None) -> Tensor:
        height, width = x.shape[-2:]
        tokens = rearrange(self.norm(x), "b c h w -> b (h w) c")
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        key_mask = None
        if context is not None and self.context_kv is not None:
            ck, cv = self.context_kv(context.to(tokens.dtype)).chunk(2, dim=-1)
            k, v = torch.cat([ck, k], dim=1), torch.cat([cv, v], dim=1)
            if context_mask is not None:
                own = torch.ones(x.shape[0], tokens.shape[1], dtype=torch.bool, device=x.device)
                key_mask = torch.cat([context_mask, own], dim=1)
        out = self.proj_out(multihead_attention(q, k, v, self.heads, key_mask))
        return x + rearrange(out, "b (h w) c -> b c h w", h=height, w=width)

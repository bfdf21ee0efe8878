"""Embeddings of the UNet's conditions: timestep, fps, CLIP image embedding and per-token text states."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn


def sinusoidal_embedding(values: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sinusoidal features of one scalar per sample.

    Args:
        values: ``(n,)`` timesteps or fps (int or float).
        dim: feature size; odd sizes are zero-padded by one.
        max_period: longest period of the features.

    Returns:
        ``(n, dim)`` float32 tensor ``[cos(v * f_i), sin(v * f_i)]`` with ``f_i = max_period ** (-i / half)``.
    """
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D (n,), got shape {tuple(values.shape)}")
    if dim < 1:
        raise ValueError(f"embedding dim must be >= 1, got {dim}")
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=values.device) / max(half, 1)
    freqs = torch.exp(-math.log(max_period) * exponents)
    args = rearrange(values.float(), "n -> n 1") * rearrange(freqs, "d -> 1 d")
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of a scalar per sample followed by a two-layer SiLU MLP."""

    def __init__(self, freq_dim: int, out_dim: int, zero_init_output: bool = False) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.linear_1 = nn.Linear(freq_dim, out_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(out_dim, out_dim)
        if zero_init_output:
            nn.init.zeros_(self.linear_2.weight)
            nn.init.zeros_(self.linear_2.bias)

    def forward(self, values: Tensor) -> Tensor:
        """``(b,)`` scalars -> ``(b, out_dim)`` embedding."""
        emb = sinusoidal_embedding(values, self.freq_dim).to(self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(emb)))


class FpsEmbedding(TimestepEmbedding):
    """Frames-per-second condition (as CogVideo; added to the time embedding like SVD's ``fps_id``).

    The last linear layer is zero-initialised, so a freshly added fps embedding changes nothing.
    """

    def __init__(self, freq_dim: int, out_dim: int) -> None:
        super().__init__(freq_dim, out_dim, zero_init_output=True)


def _check_batch_vector(name: str, value: Tensor, batch: int) -> None:
    if value.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},), got {tuple(value.shape)}")


class ConditionEmbedding(nn.Module):
    """The decoder's conditioning, as DALL-E 2's decoder does it.

    The CLIP image embedding (scaled to norm sqrt(cond_dim) with ``normalize``) is projected and added to the time
    embedding, and projected into ``num_tokens`` context tokens; per-token text states are projected into further
    context tokens. For classifier-free guidance a dropped image embedding is replaced by a learned null embedding
    and dropped text tokens are masked out of attention.
    """

    def __init__(
        self, cond_dim: int, num_tokens: int, text_dim: int, time_dim: int, context_dim: int,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        self.normalize = normalize
        self.num_tokens = num_tokens if cond_dim > 0 else 0
        self.text_dim = text_dim
        self.context_dim = context_dim
        if cond_dim > 0:
            self.null_image_emb = nn.Parameter(torch.randn(cond_dim) * cond_dim**-0.5)
            self.image_to_time = nn.Linear(cond_dim, time_dim)
        if self.num_tokens > 0:
            self.image_to_tokens = nn.Linear(cond_dim, self.num_tokens * context_dim)
        if text_dim > 0:
            self.text_norm = nn.LayerNorm(text_dim)
            self.text_to_tokens = nn.Linear(text_dim, context_dim)
        if self.has_context:
            self.context_norm = nn.LayerNorm(context_dim)

    @property
    def has_context(self) -> bool:
        """Whether this conditioning can produce context tokens for cross-attention."""
        return self.num_tokens > 0 or self.text_dim > 0

    def forward(
        self,
        batch: int,
        image_emb: Tensor | None = None,
        drop_image: Tensor | None = None,
        text_states: Tensor | None = None,
        text_mask: Tensor | None = None,
        drop_text: Tensor | None = None,
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """Embed the conditions of a batch of ``batch`` samples.

        Args:
            image_emb: ``(b, cond_dim)`` CLIP image embedding (required when cond_dim > 0).
            drop_image: ``(b,)`` bool, True = use the learned null embedding.
            text_states: ``(b, n, text_dim)`` per-token text states; None = text dropped.
            text_mask: ``(b, n)`` bool, True = real token.
            drop_text: ``(b,)`` bool, True = mask out all text tokens of that sample.

        Returns:
            ``(time_add, context, context_mask)``: ``(b, time_dim)`` or None; ``(b, m, context_dim)`` or None;
            ``(b, m)`` bool or None (None = every context token is valid).
        """
        image = self._image(batch, image_emb, drop_image)
        tokens: list[Tensor] = []
        masks: list[Tensor] = []
        time_add = None
        if image is not None:
            time_add = self.image_to_time(image)
            if self.num_tokens > 0:
                image_tokens = rearrange(self.image_to_tokens(image), "b (n d) -> b n d", n=self.num_tokens)
                tokens.append(image_tokens)
                masks.append(torch.ones(batch, self.num_tokens, dtype=torch.bool, device=image.device))
        text = self._text(batch, text_states, text_mask, drop_text)
        if text is not None:
            tokens.append(text[0])
            masks.append(text[1])
        if not tokens:
            return time_add, None, None
        context = self.context_norm(torch.cat(tokens, dim=1))
        context_mask = torch.cat(masks, dim=1) if text is not None else None
        return time_add, context, context_mask

    def _image(self, batch: int, image_emb: Tensor | None, drop_image: Tensor | None) -> Tensor | None:
        if self.cond_dim == 0:
            if image_emb is not None:
                raise ValueError("image_emb was given but the UNet has cond_dim 0")
            return None
        if image_emb is None:
            raise ValueError(f"image_emb (b, {self.cond_dim}) is required when cond_dim is {self.cond_dim}")
        if image_emb.shape != (batch, self.cond_dim):
            raise ValueError(
                f"image_emb must have shape ({batch}, {self.cond_dim}), got {tuple(image_emb.shape)}"
            )
        image_emb = image_emb.to(self.null_image_emb.dtype)
        if self.normalize:
            image_emb = F.normalize(image_emb, dim=-1) * self.cond_dim**0.5
        if drop_image is None:
            return image_emb
        _check_batch_vector("drop_image", drop_image, batch)
        null = repeat(self.null_image_emb, "d -> b d", b=batch)
        return torch.where(rearrange(drop_image.bool(), "b -> b 1"), null, image_emb)

    def _text(
        self, batch: int, states: Tensor | None, mask: Tensor | None, drop: Tensor | None
    ) -> tuple[Tensor, Tensor] | None:
        if self.text_dim == 0:
            if states is not None:
                raise ValueError("text_states were given but the UNet has text_dim 0")
            return None
        if states is None:
            return None
        if states.ndim != 3 or states.shape[0] != batch or states.shape[2] != self.text_dim:
            raise ValueError(
                f"text_states must have shape ({batch}, n, {self.text_dim}), got {tuple(states.shape)}"
            )
        if mask is None:
            mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
        elif mask.shape != states.shape[:2]:
            raise ValueError(f"text_mask must have shape {tuple(states.shape[:2])}, got {tuple(mask.shape)}")
        mask = mask.bool()
        if drop is not None:
            _check_batch_vector("drop_text", drop, batch)
            mask = mask & ~rearrange(drop.bool(), "b -> b 1")
        weight = self.text_to_tokens.weight
        return self.text_to_tokens(self.text_norm(states.to(weight.dtype))), mask

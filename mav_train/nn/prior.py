"""The prior P's network: DALL-E 2's decoder-only causal transformer over CLIP text → CLIP image embedding.

Token layout, in this order (``n`` = CLIP context length, ``L = n + 4``)::

    [ text state 0 .. text state n-1 | pooled text embedding | timestep | noised image embedding | query ]

Every token attends only to itself and earlier tokens (causal) and never to padding text tokens (after EOT).
The output at the last token, the learned query, is the prediction (x0, eps or v, as the diffusion says).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from mav_train.config.schema import PriorConfig
from mav_train.nn.embeddings import TimestepEmbedding

EXTRA_TOKENS = 4  # pooled text, timestep, noised image embedding, query


def check_prior_config(cfg: PriorConfig) -> None:
    for name in ("embed_dim", "text_dim", "text_tokens", "dim", "depth", "heads", "ff_mult", "num_candidates"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"prior.{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.dim % cfg.heads:
        raise ValueError(f"prior.dim {cfg.dim} must be divisible by prior.heads {cfg.heads}")
    if cfg.normalization not in ("l2", "standardize"):
        raise ValueError(f"prior.normalization must be 'l2' or 'standardize', got {cfg.normalization!r}")


def prior_attention_mask(text_mask: Tensor) -> Tensor:
    """Boolean attention mask ``(b, 1, L, L)`` (True = may attend): causal, and padding text tokens (``text_mask``
    ``(b, n)`` False) are never attended to. Row ``i`` always keeps token 0 (the start token), so no row is empty."""
    b, n = text_mask.shape
    length = n + EXTRA_TOKENS
    causal = torch.ones(length, length, dtype=torch.bool, device=text_mask.device).tril()
    keys = torch.cat([text_mask.bool(), text_mask.new_ones(b, EXTRA_TOKENS, dtype=torch.bool)], dim=1)
    return rearrange(causal, "q k -> 1 1 q k") & rearrange(keys, "b k -> b 1 1 k")


class PriorBlock(nn.Module):
    """Pre-LN transformer block: causal self-attention (``scaled_dot_product_attention``) then an MLP."""

    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm_attn = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_mult * dim, dim))

    def forward(self, x: Tensor, mask: Tensor, last_only: bool = False) -> Tensor:
        """``x (b, L, dim)``, ``mask (b, 1, L, L)`` bool → ``(b, L, dim)``.

        ``last_only``: compute the output of the last token alone, ``(b, 1, dim)``, equal to the last row of the
        full output (the projections to queries, keys and values still see every token; attention, its output
        projection and the MLP of the others are skipped). The network's final block needs nothing else: the
        prediction is read there.
        """
        q, k, v = self.qkv(self.norm_attn(x)).chunk(3, dim=-1)
        if last_only:  # (modules are called, not their weights sliced: ZeRO-3 gathers a weight when it is called)
            q, x, mask = q[:, -1:], x[:, -1:], mask[..., -1:, :]
        q, k, v = (rearrange(a, "b l (h d) -> b h l d", h=self.heads) for a in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                  dropout_p=self.dropout if self.training else 0.0)
        x = x + self.out(rearrange(attended, "b h l d -> b l (h d)"))
        return x + self.ff(self.norm_ff(x))


class PriorTransformer(nn.Module):
    """P's denoiser: ``(x_t, t, text)`` → prediction for the CLIP image embedding, all ``(b, embed_dim)``.

    Text conditioning dropped for classifier-free guidance (``drop_text``) is replaced by learned null tokens:
    one per text position (all attended to) and one for the pooled embedding.
    """

    def __init__(self, cfg: PriorConfig) -> None:
        super().__init__()
        check_prior_config(cfg)
        self.cfg = cfg
        d = cfg.dim
        self.text_proj = nn.Linear(cfg.text_dim, d)
        self.pooled_proj = nn.Linear(cfg.embed_dim, d)
        self.time_emb = TimestepEmbedding(d, d)
        self.x_proj = nn.Linear(cfg.embed_dim, d)
        self.query = nn.Parameter(torch.randn(d) * 0.02)
        self.null_text = nn.Parameter(torch.randn(cfg.text_tokens, d) * 0.02)
        self.null_pooled = nn.Parameter(torch.randn(d) * 0.02)
        self.pos_emb = nn.Parameter(torch.randn(cfg.text_tokens + EXTRA_TOKENS, d) * 0.02)
        self.blocks = nn.ModuleList(PriorBlock(d, cfg.heads, cfg.ff_mult, cfg.dropout) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(d)
        self.to_out = nn.Linear(d, cfg.embed_dim)

    def tokens(self, x_t: Tensor, t: Tensor, text_states: Tensor, text_mask: Tensor, text_emb: Tensor,
               drop_text: Tensor | None) -> tuple[Tensor, Tensor]:
        """The token sequence ``(b, L, dim)`` and its text mask ``(b, n)`` (null tokens count as present)."""
        b, n = text_mask.shape
        if n != self.cfg.text_tokens or text_states.shape != (b, n, self.cfg.text_dim):
            raise ValueError(f"text_states must be (b, {self.cfg.text_tokens}, {self.cfg.text_dim}), "
                             f"got {tuple(text_states.shape)}")
        dtype = self.query.dtype
        text = self.text_proj(text_states.to(dtype))
        pooled = self.pooled_proj(text_emb.to(dtype))
        mask = text_mask.bool()
        if drop_text is not None:
            drop = drop_text.bool()
            text = torch.where(rearrange(drop, "b -> b 1 1"), repeat(self.null_text, "n d -> b n d", b=b), text)
            pooled = torch.where(rearrange(drop, "b -> b 1"), repeat(self.null_pooled, "d -> b d", b=b), pooled)
            mask = mask | rearrange(drop, "b -> b 1")
        extra = torch.stack([pooled, self.time_emb(t), self.x_proj(x_t.to(dtype)),
                             repeat(self.query, "d -> b d", b=b)], dim=1)
        return torch.cat([text, extra], dim=1) + self.pos_emb, mask

    def forward(self, x_t: Tensor, t: Tensor, *, text_states: Tensor, text_mask: Tensor, text_emb: Tensor,
                drop_text: Tensor | None = None, **unused: Tensor | None) -> Tensor:
        """Predict from the noised image embedding.

        Args:
            x_t: ``(b, embed_dim)`` noised (normalised) image embedding.
            t: ``(b,)`` long timesteps.
            text_states: ``(b, n, text_dim)`` per-token CLIP text states; text_mask ``(b, n)`` bool (True up to
                and including EOT); text_emb ``(b, embed_dim)`` pooled CLIP text embedding.
            drop_text: ``(b,)`` bool, True = learned null text (classifier-free guidance).
            unused: conditions of other components (``image_emb``, ``fps``, ``extra``, ``drop_image``); the prior
                has none of them, and they must be None or absent (``drop_image`` is ignored).

        Returns:
            ``(b, embed_dim)`` prediction at the query token.
        """
        for name, value in unused.items():
            if value is not None and name != "drop_image":
                raise ValueError(f"the prior is conditioned on text only; got {name}")
        x, mask = self.tokens(x_t, t, text_states, text_mask, text_emb, drop_text)
        attn_mask = prior_attention_mask(mask)
        *body, last = self.blocks
        for block in body:
            x = block(x, attn_mask)
        # Only the query's output is read, so the last block computes that token alone (the same numbers).
        return self.to_out(self.norm_out(last(x, attn_mask, last_only=True)[:, -1]))

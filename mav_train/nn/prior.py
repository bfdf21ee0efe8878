"""The prior P's network: DALL-E 2's decoder-only causal transformer over CLIP text → CLIP image embedding.

Token layout, in this order (``n`` = CLIP context length, ``L = n + 4``)::

    [ text state 0 .. text state n-1 | pooled text embedding | timestep | noised image embedding | query ]

Every token attends only to itself and earlier tokens (causal) and never to padding text tokens (after EOT).
The output at the last token, the learned query, is the prediction (x0, eps or v, as the diffusion says).

Under the causal mask the text tokens and the pooled embedding attend only to each other, so nothing they hold
depends on the timestep or the noised embedding. Sampling computes their keys and values once per prompt
(:meth:`PriorTransformer.text_prefix`) and then runs only the last three tokens at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from mav_train.config.schema import PriorConfig
from mav_train.nn.embeddings import TimestepEmbedding

EXTRA_TOKENS = 4  # pooled text, timestep, noised image embedding, query
STEP_TOKENS = 3  # the tokens that change from step to step: timestep, noised image embedding, query


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


@dataclass
class TextPrefix:
    """The text tokens and the pooled embedding as the rest of the sequence sees them: per block, their keys and
    values ``(b, heads, n + 1, head_dim)``, and which of them may be attended to (``mask`` ``(b, n + 1)``)."""

    keys: list[Tensor]
    values: list[Tensor]
    mask: Tensor


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

    def forward(self, x: Tensor, mask: Tensor, last_only: bool = False,
                past: tuple[Tensor, Tensor] | None = None, keep: list[tuple[Tensor, Tensor]] | None = None) -> Tensor:
        """``x (b, l, dim)``, ``mask (b, 1, l, P + l)`` bool → ``(b, l, dim)``.

        ``last_only``: compute the output of the last token alone, ``(b, 1, dim)``, equal to the last row of the
        full output (the projections to queries, keys and values still see every token; attention, its output
        projection and the MLP of the others are skipped). The network's final block needs nothing else: the
        prediction is read there. ``past``: keys and values ``(b, heads, P, head_dim)`` of ``P`` tokens before
        ``x`` (0 without); ``keep``: a list that gets this block's own keys and values.
        """
        q, k, v = (rearrange(a, "b l (h d) -> b h l d", h=self.heads)
                   for a in self.qkv(self.norm_attn(x)).chunk(3, dim=-1))
        if keep is not None:
            keep.append((k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        if last_only:  # (modules are called, not their weights sliced: ZeRO-3 gathers a weight when it is called)
            q, x, mask = q[:, :, -1:], x[:, -1:], mask[..., -1:, :]
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
        text, pooled, mask = self._text_tokens(text_states, text_mask, text_emb, drop_text)
        extra = torch.cat([pooled.unsqueeze(1), self._step_tokens(x_t, t)], dim=1)
        return torch.cat([text, extra], dim=1) + self.pos_emb, mask

    def _step_tokens(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Timestep, noised image embedding and query, ``(b, 3, dim)``, without position embeddings."""
        query = repeat(self.query, "d -> b d", b=x_t.shape[0])
        return torch.stack([self.time_emb(t), self.x_proj(x_t.to(self.query.dtype)), query], dim=1)

    def _text_tokens(self, text_states: Tensor, text_mask: Tensor, text_emb: Tensor,
                     drop_text: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Text tokens ``(b, n, dim)`` and pooled token ``(b, dim)`` (null ones where dropped, no position
        embeddings), and the text mask ``(b, n)``."""
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
        return text, pooled, mask

    @torch.no_grad()
    def text_prefix(self, text_states: Tensor, text_mask: Tensor, text_emb: Tensor,
                    drop_text: Tensor | None = None) -> TextPrefix:
        """Keys and values of the text tokens and the pooled embedding in every block, computed once: with them
        ``forward(x_t, t, prefix=...)`` runs only the three tokens that change between sampling steps."""
        text, pooled, mask = self._text_tokens(text_states, text_mask, text_emb, drop_text)
        n = text.shape[1]
        x = torch.cat([text, pooled.unsqueeze(1)], dim=1) + self.pos_emb[:n + 1]
        keys = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        causal = torch.ones(n + 1, n + 1, dtype=torch.bool, device=x.device).tril()
        attn_mask = rearrange(causal, "q k -> 1 1 q k") & rearrange(keys, "b k -> b 1 1 k")
        kept: list[tuple[Tensor, Tensor]] = []
        *body, last = self.blocks
        for block in body:
            x = block(x, attn_mask, keep=kept)
        last(x, attn_mask, last_only=True, keep=kept)  # its keys and values; its output is not needed
        return TextPrefix([k for k, _ in kept], [v for _, v in kept], keys)

    def _forward_steps(self, x_t: Tensor, t: Tensor, prefix: TextPrefix) -> Tensor:
        """The prediction from the step tokens alone, attending to ``prefix``."""
        b, p = prefix.mask.shape
        if x_t.shape[0] != b:
            raise ValueError(f"the text prefix holds {b} rows, x_t {x_t.shape[0]}")
        x = self._step_tokens(x_t, t) + self.pos_emb[p:]
        causal = torch.ones(STEP_TOKENS, p + STEP_TOKENS, dtype=torch.bool, device=x.device).tril(diagonal=p)
        keys = torch.cat([prefix.mask, prefix.mask.new_ones(b, STEP_TOKENS)], dim=1)
        attn_mask = rearrange(causal, "q k -> 1 1 q k") & rearrange(keys, "b k -> b 1 1 k")
        *body, last = self.blocks
        for block, k, v in zip(body, prefix.keys[:-1], prefix.values[:-1], strict=True):
            x = block(x, attn_mask, past=(k, v))
        x = last(x, attn_mask, last_only=True, past=(prefix.keys[-1], prefix.values[-1]))
        return self.to_out(self.norm_out(x[:, -1]))

    def forward(self, x_t: Tensor, t: Tensor, *, text_states: Tensor | None = None, text_mask: Tensor | None = None,
                text_emb: Tensor | None = None, drop_text: Tensor | None = None, prefix: TextPrefix | None = None,
                **unused: Tensor | None) -> Tensor:
        """Predict from the noised image embedding.

        Args:
            x_t: ``(b, embed_dim)`` noised (normalised) image embedding.
            t: ``(b,)`` long timesteps.
            text_states: ``(b, n, text_dim)`` per-token CLIP text states; text_mask ``(b, n)`` bool (True up to
                and including EOT); text_emb ``(b, embed_dim)`` pooled CLIP text embedding.
            drop_text: ``(b,)`` bool, True = learned null text (classifier-free guidance).
            prefix: instead of the four text arguments, what :meth:`text_prefix` computed from them (the same
                prediction, for a fraction of the compute).
            unused: conditions of other components (``image_emb``, ``fps``, ``extra``, ``drop_image``); the prior
                has none of them, and they must be None or absent (``drop_image`` is ignored).

        Returns:
            ``(b, embed_dim)`` prediction at the query token.
        """
        for name, value in unused.items():
            if value is not None and name != "drop_image":
                raise ValueError(f"the prior is conditioned on text only; got {name}")
        if prefix is not None:
            if any(a is not None for a in (text_states, text_mask, text_emb, drop_text)):
                raise ValueError("give the text arguments or a text prefix computed from them, not both")
            return self._forward_steps(x_t, t, prefix)
        if text_states is None or text_mask is None or text_emb is None:
            raise ValueError("the prior needs text_states, text_mask and text_emb (or a text prefix)")
        x, mask = self.tokens(x_t, t, text_states, text_mask, text_emb, drop_text)
        attn_mask = prior_attention_mask(mask)
        *body, last = self.blocks
        for block in body:
            x = block(x, attn_mask)
        # Only the query's output is read, so the last block computes that token alone (the same numbers).
        return self.to_out(self.norm_out(last(x, attn_mask, last_only=True)[:, -1]))

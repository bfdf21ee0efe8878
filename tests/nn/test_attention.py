"""Spatial self + cross attention."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from mav_train.nn.attention import SpatialAttention, multihead_attention, num_heads
from tests.nn.tiny import perturb


def _reference_attention(q, k, v, heads, key_mask):
    q, k, v = (rearrange(z, "b n (h d) -> b h n d", h=heads) for z in (q, k, v))
    scores = torch.einsum("bhnd,bhsd->bhns", q, k) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~rearrange(key_mask, "b s -> b 1 1 s"), float("-inf"))
    out = torch.einsum("bhns,bhsd->bhnd", scores.softmax(dim=-1), v)
    return rearrange(out, "b h n d -> b n (h d)")


def test_multihead_attention_matches_reference() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 5, 12), torch.randn(2, 7, 12), torch.randn(2, 7, 12)
    mask = torch.rand(2, 7) > 0.4
    mask[:, 0] = True
    out = multihead_attention(q, k, v, heads=3, key_mask=mask)
    assert out.shape == (2, 5, 12)
    assert torch.allclose(out, _reference_attention(q, k, v, 3, mask), atol=1e-5)
    unmasked = multihead_attention(q, k, v, heads=3)
    assert torch.allclose(
        unmasked, _reference_attention(q, k, v, 3, torch.ones(2, 7, dtype=torch.bool)), atol=1e-5
    )


def test_num_heads_validation() -> None:
    assert num_heads(64, 16) == 4
    with pytest.raises(ValueError, match="channels 48 must be divisible by head_dim 32"):
        num_heads(48, 32)


def test_identity_at_init_and_shapes() -> None:
    attn = SpatialAttention(16, head_dim=8, context_dim=10, norm_groups=8)
    x = torch.randn(2, 16, 4, 4)
    assert torch.equal(attn(x, torch.randn(2, 3, 10)), x)
    video = torch.randn(2, 16, 3, 4, 4)
    assert torch.equal(attn(video), video)


def test_video_is_processed_frame_by_frame() -> None:
    torch.manual_seed(0)
    attn = SpatialAttention(16, head_dim=8, context_dim=10, norm_groups=8)
    perturb(attn)
    video, context = torch.randn(2, 16, 3, 4, 4), torch.randn(2, 3, 10)
    mask = torch.tensor([[True, False, True], [True, True, True]])
    out = attn(video, context, mask)
    assert out.shape == video.shape
    for frame in range(3):
        expected = attn(video[:, :, frame], context, mask)
        assert torch.allclose(out[:, :, frame], expected, atol=1e-6)


def test_context_is_used_and_masked_tokens_are_ignored() -> None:
    torch.manual_seed(0)
    attn = SpatialAttention(16, head_dim=8, context_dim=10, norm_groups=8)
    perturb(attn)
    x, context = torch.randn(2, 16, 4, 4), torch.randn(2, 3, 10)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    out = attn(x, context, mask)
    changed = context.clone()
    changed[0, 2] = 100.0  # masked out for sample 0
    assert torch.allclose(attn(x, changed, mask)[0], out[0], atol=1e-6)
    changed = context.clone()
    changed[0, 0] += 1.0  # a valid token
    assert not torch.allclose(attn(x, changed, mask)[0], out[0], atol=1e-4)
    assert not torch.allclose(attn(x), out, atol=1e-4)


def test_rejects_bad_rank() -> None:
    attn = SpatialAttention(16, head_dim=8, context_dim=0, norm_groups=8)
    with pytest.raises(ValueError, match=r"\(2, 16, 4\)"):
        attn(torch.randn(2, 16, 4))

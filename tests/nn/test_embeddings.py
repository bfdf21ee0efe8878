"""Timestep / fps / condition embeddings."""

from __future__ import annotations

import math

import pytest
import torch

from mav_train.nn.embeddings import (
    ConditionEmbedding,
    FpsEmbedding,
    TimestepEmbedding,
    sinusoidal_embedding,
)
from tests.nn.tiny import perturb


def test_sinusoidal_values_and_shape() -> None:
    emb = sinusoidal_embedding(torch.tensor([0.0, 1.0, 250.0]), 8)
    assert emb.shape == (3, 8)
    assert torch.equal(emb[0], torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0]))
    # First frequency is 1: cos(v), sin(v); last one is max_period ** (-3/4).
    assert emb[2, 0].item() == pytest.approx(math.cos(250.0), abs=1e-5)
    assert emb[2, 4].item() == pytest.approx(math.sin(250.0), abs=1e-5)
    assert emb[1, 3].item() == pytest.approx(math.cos(10000.0 ** (-0.75)), abs=1e-6)


def test_sinusoidal_odd_dim_is_padded_and_ints_accepted() -> None:
    emb = sinusoidal_embedding(torch.tensor([3, 7]), 5)
    assert emb.shape == (2, 5)
    assert torch.equal(emb[:, -1], torch.zeros(2))


def test_sinusoidal_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        sinusoidal_embedding(torch.zeros(2, 3), 8)
    with pytest.raises(ValueError, match="0"):
        sinusoidal_embedding(torch.zeros(2), 0)


def test_timestep_embedding_shape_int_and_float() -> None:
    embed = TimestepEmbedding(16, 64)
    assert embed(torch.tensor([0, 999])).shape == (2, 64)
    assert torch.allclose(embed(torch.tensor([5, 9])), embed(torch.tensor([5.0, 9.0])))


def test_fps_embedding_is_zero_at_init_and_learnable() -> None:
    embed = FpsEmbedding(16, 64)
    fps = torch.tensor([1.0, 4.5, 30.0])
    assert torch.equal(embed(fps), torch.zeros(3, 64))
    perturb(embed)
    out = embed(fps)
    assert out.abs().min(dim=1).values.gt(0).all()
    assert not torch.allclose(out[0], out[1])


def test_condition_embedding_shapes_and_null_image() -> None:
    torch.manual_seed(0)
    cond = ConditionEmbedding(cond_dim=12, num_tokens=3, text_dim=10, time_dim=32, context_dim=24)
    image = torch.randn(2, 12)
    text = torch.randn(2, 5, 10)
    drop = torch.tensor([True, False])
    time_add, context, mask = cond(2, image, drop, text, None, None)
    assert time_add.shape == (2, 32)
    assert context.shape == (2, 3 + 5, 24)
    assert mask.shape == (2, 8) and mask.all()
    # A dropped sample uses the null embedding, whatever image embedding it was given.
    other, context_other, _ = cond(2, torch.randn(2, 12), drop, text, None, None)
    assert torch.equal(time_add[0], other[0])
    assert torch.equal(context[0, :3], context_other[0, :3])
    assert not torch.allclose(time_add[1], other[1])


def test_condition_embedding_text_drop_and_absence() -> None:
    cond = ConditionEmbedding(cond_dim=12, num_tokens=2, text_dim=10, time_dim=32, context_dim=24)
    image, text = torch.randn(3, 12), torch.randn(3, 4, 10)
    text_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    _, context, mask = cond(3, image, None, text, text_mask, torch.tensor([False, True, False]))
    assert context.shape == (3, 6, 24)
    expected = torch.cat([torch.ones(3, 2, dtype=torch.bool), text_mask], dim=1)
    expected[1, 2:] = False
    assert torch.equal(mask, expected)
    # No text at all: only the image tokens, and no mask needed.
    _, context, mask = cond(3, image, None, None, None, None)
    assert context.shape == (3, 2, 24) and mask is None


def test_condition_embedding_without_conditions() -> None:
    cond = ConditionEmbedding(cond_dim=0, num_tokens=4, text_dim=0, time_dim=32, context_dim=24)
    assert not cond.has_context
    assert len(list(cond.parameters())) == 0
    assert cond(2, None, torch.tensor([True, False]), None, None, None) == (None, None, None)


def test_condition_embedding_errors() -> None:
    cond = ConditionEmbedding(cond_dim=12, num_tokens=2, text_dim=0, time_dim=32, context_dim=24)
    with pytest.raises(ValueError, match="required when cond_dim is 12"):
        cond(2)
    with pytest.raises(ValueError, match=r"\(2, 12\), got \(2, 11\)"):
        cond(2, torch.randn(2, 11))
    with pytest.raises(ValueError, match="drop_image must have shape"):
        cond(2, torch.randn(2, 12), torch.tensor([True]))
    with pytest.raises(ValueError, match="text_dim 0"):
        cond(2, torch.randn(2, 12), None, torch.randn(2, 3, 5))
    no_image = ConditionEmbedding(cond_dim=0, num_tokens=2, text_dim=5, time_dim=32, context_dim=24)
    with pytest.raises(ValueError, match="cond_dim 0"):
        no_image(2, torch.randn(2, 12))
    with pytest.raises(ValueError, match=r"\(2, 3\), got \(2, 4\)"):
        no_image(2, None, None, torch.randn(2, 3, 5), torch.ones(2, 4, dtype=torch.bool))


def test_condition_embedding_normalises_the_image_embedding_scale() -> None:
    torch.manual_seed(0)
    emb = ConditionEmbedding(8, 2, 0, 16, 16)
    x = torch.randn(3, 8)
    time_add, context, _ = emb(3, x)
    scaled_add, scaled_context, _ = emb(3, 40.0 * x)  # a CLIP whose embeddings are 40x longer means the same
    assert torch.allclose(time_add, scaled_add, atol=1e-5) and torch.allclose(context, scaled_context, atol=1e-5)
    raw = ConditionEmbedding(8, 2, 0, 16, 16, normalize=False)
    raw.load_state_dict(emb.state_dict())
    assert not torch.allclose(raw(3, x)[0], raw(3, 40.0 * x)[0], atol=1e-3)

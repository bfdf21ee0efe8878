"""Pseudo-3D layers: per-frame 2D layers and identity-initialised temporal layers."""

from __future__ import annotations

import pytest
import torch

from mav_train.nn.pseudo3d import (
    FrameConv2d,
    FrameGroupNorm,
    Pseudo3DAttention,
    Pseudo3DConv,
    TemporalAttention,
    TemporalConv,
    apply_per_frame,
)
from tests.nn.tiny import perturb


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_temporal_conv_is_identity_at_init(kernel: int) -> None:
    conv = TemporalConv(8, kernel)
    x = torch.randn(2, 8, 6, 5, 3)
    assert torch.equal(conv(x), x)
    assert torch.equal(conv(x[:, :, :1]), x[:, :, :1])
    image = torch.randn(2, 8, 5, 3)
    assert conv(image) is image


def test_temporal_conv_reinit_keeps_identity_and_mixes_frames_once_trained() -> None:
    conv = TemporalConv(4, 3)
    perturb(conv)
    conv.reset_parameters()
    x = torch.randn(1, 4, 5, 2, 2)
    assert torch.equal(conv(x), x)
    perturb(conv)
    changed = x.clone()
    changed[:, :, 3] += 1.0
    out, out_changed = conv(x), conv(changed)
    assert torch.equal(out[:, :, :2], out_changed[:, :, :2])  # kernel 3 reaches one frame either side
    assert not torch.allclose(out[:, :, 2], out_changed[:, :, 2])


def test_temporal_conv_rejects_even_kernel() -> None:
    with pytest.raises(ValueError, match="odd number, got 4"):
        TemporalConv(8, 4)


def test_temporal_attention_is_identity_at_init() -> None:
    attn = TemporalAttention(16, head_dim=8, max_frames=16)
    x = torch.randn(2, 16, 16, 3, 3)
    assert torch.equal(attn(x), x)
    image = torch.randn(2, 16, 3, 3)
    assert attn(image) is image


def test_temporal_attention_reads_the_embedding_through_a_zero_initialised_projection() -> None:
    torch.manual_seed(0)
    attn = TemporalAttention(16, head_dim=8, max_frames=8, emb_dim=12)
    x, emb = torch.randn(2, 16, 4, 3, 3), torch.randn(2, 12)
    assert torch.equal(attn(x, emb), x)  # identity at init, whatever the embedding
    perturb(attn.proj_out)
    assert torch.equal(attn(x, emb), attn(x, torch.randn(2, 12)))  # the projection starts at zero
    perturb(attn.emb_proj)
    other = emb.clone()
    other[1] += 1.0
    out, out_other = attn(x, emb), attn(x, other)
    assert torch.equal(out[0], out_other[0]) and not torch.allclose(out[1], out_other[1])  # per clip
    with pytest.raises(ValueError, match="pass emb"):
        attn(x)
    image = torch.randn(2, 16, 3, 3)
    assert attn(image, emb) is image


def test_temporal_attention_mixes_time_not_space() -> None:
    torch.manual_seed(0)
    attn = TemporalAttention(16, head_dim=8, max_frames=8)
    perturb(attn)
    x = torch.randn(1, 16, 4, 3, 3)
    changed = x.clone()
    changed[:, :, 2, 0, 0] += torch.randn(16)  # not a constant: LayerNorm would remove that
    out, out_changed = attn(x), attn(changed)
    assert not torch.allclose(out[:, :, 0, 0, 0], out_changed[:, :, 0, 0, 0])  # other frame, same pixel
    assert torch.equal(out[:, :, :, 1:], out_changed[:, :, :, 1:])  # other pixels untouched


def test_temporal_attention_frame_limit() -> None:
    attn = TemporalAttention(16, head_dim=8, max_frames=4)
    with pytest.raises(ValueError, match="5 frames but the temporal attention has max_frames 4"):
        attn(torch.randn(1, 16, 5, 2, 2))


def test_frame_layers_match_per_frame_application() -> None:
    torch.manual_seed(0)
    conv, norm = FrameConv2d(4, 6, 3, padding=1), FrameGroupNorm(2, 4)
    perturb(norm)
    video = torch.randn(2, 4, 3, 5, 5) * torch.arange(1, 4).view(1, 1, 3, 1, 1)
    conv_out, norm_out = conv(video), norm(video)
    assert conv_out.shape == (2, 6, 3, 5, 5)
    for frame in range(3):
        assert torch.allclose(conv_out[:, :, frame], conv(video[:, :, frame]), atol=1e-6)
        assert torch.allclose(norm_out[:, :, frame], norm(video[:, :, frame]), atol=1e-5)


def test_pseudo3d_conv_preserves_the_2d_function_at_init() -> None:
    torch.manual_seed(0)
    conv = Pseudo3DConv(4, 8, temporal=True, temporal_kernel=3)
    video = torch.randn(2, 4, 5, 6, 6)
    out = conv(video)
    assert out.shape == (2, 8, 5, 6, 6)
    for frame in range(5):
        assert torch.allclose(out[:, :, frame], conv.spatial(video[:, :, frame]), atol=1e-6)
    assert Pseudo3DConv(4, 8, temporal=False, temporal_kernel=3).temporal is None


def test_pseudo3d_attention_preserves_the_2d_function_at_init() -> None:
    torch.manual_seed(0)
    attn = Pseudo3DAttention(16, head_dim=8, context_dim=6, norm_groups=8, temporal=True, max_frames=8)
    perturb(attn.spatial)
    video, context = torch.randn(2, 16, 4, 4, 4), torch.randn(2, 2, 6)
    out = attn(video, context)
    for frame in range(4):
        assert torch.allclose(out[:, :, frame], attn.spatial(video[:, :, frame], context), atol=1e-6)


def test_apply_per_frame_rejects_bad_rank() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        apply_per_frame(lambda x: x, torch.randn(2, 3, 4))

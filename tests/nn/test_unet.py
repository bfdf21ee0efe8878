"""The UNet: shapes, conditioning, validation, determinism, save/load, checkpointing, temporal layers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mav_train.nn.unet import UNet
from tests.nn.tiny import perturb, tiny_config

T = torch.tensor([3, 700])


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"channel_mults": [1], "attention_levels": [1]},
        {"channel_mults": [1, 2, 2], "attention_levels": [1, 2, 4], "num_res_blocks": 2},
        {"channel_mults": [1, 2, 3], "attention_levels": [], "out_channels": 6},
        {"cond_dim": 0, "text_dim": 0, "attention_levels": [1]},
        {"cond_dim": 0, "text_dim": 10},
        {"text_dim": 10, "num_cond_tokens": 0},
        {"in_channels": 4, "base_channels": 32, "head_dim": 16},
        {"patch_size": 2},
        {"patch_size": 4, "channel_mults": [1], "attention_levels": [1], "out_channels": 6},
    ],
)
def test_image_shapes(overrides: dict) -> None:
    cfg = tiny_config(**overrides)
    net = UNet(cfg)
    perturb(net)
    x = torch.randn(2, cfg.in_channels, 8, 8)
    image = torch.randn(2, cfg.cond_dim) if cfg.cond_dim else None
    text = torch.randn(2, 3, cfg.text_dim) if cfg.text_dim else None
    out = net(x, T, image_emb=image, text_states=text)
    assert out.shape == (2, cfg.out_channels, 8, 8)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "overrides", [{}, {"channel_mults": [1], "attention_levels": [1], "cond_dim": 0}, {"patch_size": 2}]
)
def test_video_shapes(overrides: dict) -> None:
    cfg = tiny_config(temporal=True, fps_cond=True, **overrides)
    net = UNet(cfg)
    x = torch.randn(2, 3, 5, 8, 8)
    image = torch.randn(2, cfg.cond_dim) if cfg.cond_dim else None
    out = net(x, T, image_emb=image, fps=torch.tensor([8.0, 24.0]))
    assert out.shape == (2, 3, 5, 8, 8)
    # A temporal UNet also takes images (temporal layers skipped, fps optional).
    assert net(x[:, :, 0], T, image_emb=image).shape == (2, 3, 8, 8)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"base_channels": 200}, "base_channels 200 must be divisible by GroupNorm groups 32"),
        ({"norm_channels_per_group": 0}, "norm_channels_per_group must be >= 1"),
        ({"head_dim": 12}, "channels 32 must be divisible by head_dim 12"),
        ({"attention_levels": [1], "head_dim": 32}, "channels 16 must be divisible by head_dim 32"),
        ({"attention_levels": [2, 8]}, r"attention_levels \[8\] are not downsampling factors"),
        ({"channel_mults": []}, "channel_mults must be a non-empty"),
        ({"channel_mults": [1, 0]}, "channel_mults must be a non-empty"),
        ({"num_res_blocks": 0}, "num_res_blocks must be >= 1, got 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"cond_dim": -1}, "cond_dim must be >= 0, got -1"),
        ({"temporal": True, "temporal_kernel": 2}, "temporal_kernel must be odd, got 2"),
        ({"fps_cond": True}, "fps_cond requires unet.temporal=True"),
        ({"temporal_attn_emb": True}, "temporal_attn_emb requires unet.temporal=True"),
        ({"temporal": True, "fps_cond": True, "fps_temporal_only": True},
         "fps_temporal_only requires unet.fps_cond=True and unet.temporal_attn_emb=True"),
        ({"max_frames": 0}, "max_frames must be >= 1, got 0"),
        ({"patch_size": 0}, "patch_size must be >= 1, got 0"),
    ],
)
def test_bad_configs(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UNet(tiny_config(**overrides))


def test_bad_inputs() -> None:
    net = UNet(tiny_config(text_dim=10))
    image = torch.randn(2, 12)
    with pytest.raises(ValueError, match="temporal=False"):
        net(torch.randn(2, 3, 4, 8, 8), T, image_emb=image)
    with pytest.raises(ValueError, match=r"\(2, 3, 8\)"):
        net(torch.randn(2, 3, 8), T, image_emb=image)
    with pytest.raises(ValueError, match="4 channels, the UNet expects in_channels 3"):
        net(torch.randn(2, 4, 8, 8), T, image_emb=image)
    with pytest.raises(ValueError, match="spatial size 8x6 must be divisible by 4"):
        UNet(tiny_config(channel_mults=[1, 1, 2])).forward(torch.randn(2, 3, 8, 6), T, image_emb=image)
    with pytest.raises(ValueError, match=r"t must have shape \(2,\), got \(1,\)"):
        net(torch.randn(2, 3, 8, 8), T[:1], image_emb=image)
    with pytest.raises(ValueError, match="image_emb"):
        net(torch.randn(2, 3, 8, 8), T)
    with pytest.raises(ValueError, match="fps was given"):
        net(torch.randn(2, 3, 8, 8), T, image_emb=image, fps=torch.ones(2))
    with pytest.raises(ValueError, match="extra was given"):
        net(torch.randn(2, 3, 8, 8), T, image_emb=image, extra=torch.randn(2, 4, 8, 8))


def test_bad_video_inputs() -> None:
    net = UNet(tiny_config(temporal=True, fps_cond=True, extra_in_channels=4, max_frames=4))
    x, image, fps = torch.randn(2, 3, 4, 8, 8), torch.randn(2, 12), torch.ones(2)
    extra = torch.randn(2, 4, 4, 8, 8)
    with pytest.raises(ValueError, match="fps .* is required for video input"):
        net(x, T, image_emb=image, extra=extra)
    with pytest.raises(ValueError, match=r"extra must have shape \(2, 4, 4, 8, 8\)"):
        net(x, T, image_emb=image, fps=fps)
    with pytest.raises(ValueError, match=r"got \(2, 4, 8, 8\)"):
        net(x, T, image_emb=image, fps=fps, extra=extra[:, :, 0])
    with pytest.raises(ValueError, match="max_frames 4"):
        net(torch.randn(2, 3, 5, 8, 8), T, image_emb=image, fps=fps, extra=torch.randn(2, 4, 5, 8, 8))


def test_output_is_zero_at_init_and_image_embedding_enters() -> None:
    net = UNet(tiny_config())
    x, image = torch.randn(2, 3, 8, 8), torch.randn(2, 12)
    assert torch.equal(net(x, T, image_emb=image), torch.zeros(2, 3, 8, 8))  # ADM zero output conv
    perturb(net)
    out = net(x, T, image_emb=image)
    assert not torch.allclose(out, net(x, T, image_emb=torch.randn(2, 12)), atol=1e-4)
    assert not torch.allclose(out, net(x, T + 1, image_emb=image), atol=1e-6)


def test_classifier_free_guidance_dropping() -> None:
    torch.manual_seed(0)
    net = UNet(tiny_config(text_dim=10))
    perturb(net)
    x, text = torch.randn(2, 3, 8, 8), torch.randn(2, 4, 10)
    drop = torch.tensor([True, False])
    a = net(x, T, image_emb=torch.randn(2, 12), text_states=text, drop_image=drop)
    b = net(x, T, image_emb=torch.randn(2, 12), text_states=text, drop_image=drop)
    assert torch.equal(a[0], b[0])  # the null embedding replaces whatever was given
    assert not torch.allclose(a[1], b[1], atol=1e-4)
    image = torch.randn(2, 12)
    all_dropped = net(x, T, image_emb=image, text_states=text, drop_text=torch.tensor([True, True]))
    no_text = net(x, T, image_emb=image)
    assert torch.allclose(all_dropped, no_text, atol=1e-5)
    with_text = net(x, T, image_emb=image, text_states=text)
    assert not torch.allclose(with_text, no_text, atol=1e-4)
    masked = torch.tensor([[True, True, False, False]] * 2)
    changed = text.clone()
    changed[:, 2:] = torch.randn(2, 2, 10)
    assert torch.allclose(
        net(x, T, image_emb=image, text_states=text, text_mask=masked),
        net(x, T, image_emb=image, text_states=changed, text_mask=masked),
        atol=1e-5,
    )


def test_num_cond_tokens_and_head_dim_take_effect() -> None:
    a, b = UNet(tiny_config(num_cond_tokens=2)), UNet(tiny_config(num_cond_tokens=5))
    assert a.cond.image_to_tokens.out_features * 5 == b.cond.image_to_tokens.out_features * 2
    assert UNet(tiny_config(head_dim=8)).middle[0].attn.spatial.heads == 4
    assert UNet(tiny_config(head_dim=16)).middle[0].attn.spatial.heads == 2


def test_determinism() -> None:
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        net = UNet(tiny_config(dropout=0.1))
        perturb(net, seed=1)
        net.eval()
        outputs.append(net(torch.randn(2, 3, 8, 8), T, image_emb=torch.randn(2, 12)))
    assert torch.equal(outputs[0], outputs[1])


def test_state_dict_round_trip(tmp_path: Path) -> None:
    cfg = tiny_config(temporal=True, fps_cond=True, text_dim=10)
    net = UNet(cfg)
    perturb(net)
    path = tmp_path / "unet.pt"
    torch.save(net.state_dict(), path)
    loaded = UNet(cfg)
    loaded.load_state_dict(torch.load(path, weights_only=True))
    args = (torch.randn(2, 3, 3, 8, 8), T)
    kwargs = {"image_emb": torch.randn(2, 12), "text_states": torch.randn(2, 4, 10), "fps": torch.ones(2)}
    assert torch.equal(net(*args, **kwargs), loaded(*args, **kwargs))


def test_gradient_checkpointing_matches() -> None:
    cfg = tiny_config(temporal=True, fps_cond=True, attention_levels=[1, 2])
    plain = UNet(cfg)
    perturb(plain)
    checkpointed = UNet(
        tiny_config(temporal=True, fps_cond=True, attention_levels=[1, 2], gradient_checkpointing=True)
    )
    checkpointed.load_state_dict(plain.state_dict())
    x, image, fps = torch.randn(2, 3, 3, 8, 8), torch.randn(2, 12), torch.tensor([2.0, 9.0])
    outs, grads = [], []
    for net in (plain, checkpointed):
        net.train()
        out = net(x, T, image_emb=image, fps=fps, drop_image=torch.tensor([True, False]))
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append({name: p.grad.clone() for name, p in net.named_parameters()})
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name
    # Checkpointing really happened: far fewer activations are kept for backward.
    saved = [_saved_activation_count(net, x, image, fps) for net in (plain, checkpointed)]
    assert saved[1] < saved[0] / 2, saved


def _saved_activation_count(net: UNet, x: torch.Tensor, image: torch.Tensor, fps: torch.Tensor) -> int:
    count = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        net(x, T, image_emb=image, fps=fps)
    return count


def test_extra_in_channels_are_zero_initialised() -> None:
    net = UNet(tiny_config(extra_in_channels=4))
    assert net.input_conv.weight.shape[1] == 7
    assert torch.equal(net.input_conv.weight[:, 3:], torch.zeros(16, 4, 3, 3))
    assert net.input_conv.weight[:, :3].abs().sum() > 0
    # Perturb everything but the input conv: the extra channels still have no effect.
    perturb(net, skip=frozenset({"input_conv.weight"}))
    x, image = torch.randn(2, 3, 8, 8), torch.randn(2, 12)
    out = net(x, T, image_emb=image, extra=torch.randn(2, 4, 8, 8))
    assert torch.equal(out, net(x, T, image_emb=image, extra=torch.randn(2, 4, 8, 8)))
    perturb(net)
    assert not torch.allclose(out, net(x, T, image_emb=image, extra=torch.randn(2, 4, 8, 8)), atol=1e-4)


def test_patch_unet_layout_zero_init_and_size_check() -> None:
    """patch_size 2: the first level runs at half size on 2x2 pixel patches, the output is unpatched back, the extra
    input channels are still zero-initialised, and sizes must divide by the patch too."""
    net = UNet(tiny_config(patch_size=2, extra_in_channels=1))
    assert net.input_conv.weight.shape[1] == 4 * 4 and net.out_conv.weight.shape[0] == 3 * 4
    assert torch.equal(net.input_conv.weight[:, 12:], torch.zeros(16, 4, 3, 3))  # the extra channel's 4 pixels
    perturb(net, skip=frozenset({"input_conv.weight"}))
    net.eval()
    x, image = torch.randn(1, 3, 8, 8), torch.randn(1, 12)
    extra = torch.randn(1, 1, 8, 8)
    out = net(x, T[:1], image_emb=image, extra=extra)
    assert torch.equal(out, net(x, T[:1], image_emb=image, extra=torch.randn(1, 1, 8, 8)))
    # Patching round-trips exactly, and channel c's pixels are the input channels c * 4 ... c * 4 + 3.
    video = torch.randn(2, 4, 3, 8, 8)
    assert torch.equal(net._unpatchify(net._patchify(video)), video)
    assert torch.equal(net._patchify(video)[:, 4:8, 1], torch.nn.functional.pixel_unshuffle(video[:, 1:2, 1], 2))
    with pytest.raises(ValueError, match=r"divisible by 4 \(patch_size"):
        net(torch.randn(1, 3, 6, 6), T[:1], image_emb=image, extra=torch.randn(1, 1, 6, 6))


def test_patches_keep_the_attention_levels() -> None:
    """attention_levels count the UNet's own downsamplings, with or without patches: the same blocks get attention."""
    def attention_layout(net: UNet) -> list[str]:
        return [name for name, block in net.named_modules() if getattr(block, "attn", None) is not None]

    for levels in ([1], [2], [1, 2]):
        on_pixels = attention_layout(UNet(tiny_config(attention_levels=levels)))
        on_patches = attention_layout(UNet(tiny_config(attention_levels=levels, patch_size=2)))
        assert on_patches == on_pixels and len(on_pixels) >= 2


def test_temporal_parameter_names() -> None:
    image_net = UNet(tiny_config())
    assert image_net.temporal_parameter_names() == []
    net = UNet(tiny_config(temporal=True, fps_cond=True))
    names = net.temporal_parameter_names()
    params = dict(net.named_parameters())
    assert names and set(names) <= set(params)
    assert any(name.startswith("fps_embed.") for name in names)
    assert all(".temporal." in name or name.startswith("fps_embed.") for name in names)
    assert set(params) - set(names) == set(dict(image_net.named_parameters()))
    assert net.is_temporal_parameter("middle.0.attn.temporal.proj_out.weight")
    assert not net.is_temporal_parameter("middle.0.attn.spatial.proj_out.weight")


def test_temporal_layers_train_and_mix_frames() -> None:
    torch.manual_seed(0)
    net = UNet(tiny_config(temporal=True, fps_cond=True))
    perturb(net, skip=frozenset(net.temporal_parameter_names()))
    x, image, fps = torch.randn(1, 3, 4, 8, 8), torch.randn(1, 12), torch.tensor([6.0])
    net(x, T[:1], image_emb=image, fps=fps).square().mean().backward()
    for name in ("middle.0.attn.temporal.proj_out.weight", "fps_embed.linear_2.weight"):
        assert net.get_parameter(name).grad.abs().sum() > 0, name
    perturb(net, seed=5)
    out = net(x, T[:1], image_emb=image, fps=fps)
    changed = x.clone()
    changed[:, :, 3] = torch.randn(1, 3, 8, 8)
    assert not torch.allclose(out[:, :, 0], net(changed, T[:1], image_emb=image, fps=fps)[:, :, 0], atol=1e-5)
    assert not torch.allclose(out, net(x, T[:1], image_emb=image, fps=fps * 3), atol=1e-5)


def test_temporal_attn_emb_starts_at_zero_and_brings_the_fps_to_the_temporal_attention() -> None:
    """unet.temporal_attn_emb: the new projections are temporal parameters (they train under freeze_spatial) and
    start at zero, so a D^t inflated from a decoder still computes the decoder frame by frame; once trained, the
    fps acts through them as well as through the spatial layers' scale/shift."""
    torch.manual_seed(0)
    net = UNet(tiny_config(temporal=True, fps_cond=True, temporal_attn_emb=True))
    names = net.temporal_parameter_names()
    assert "middle.0.attn.temporal.emb_proj.weight" in names
    x, image = torch.randn(1, 3, 4, 8, 8), torch.randn(1, 12)
    image_net = UNet(tiny_config())
    perturb(image_net)
    net.load_state_dict(image_net.state_dict(), strict=False)
    frames = torch.stack([image_net(x[:, :, i], T[:1], image_emb=image) for i in range(4)], dim=2)
    torch.testing.assert_close(net(x, T[:1], image_emb=image, fps=torch.tensor([6.0])), frames)

    def fps_effect() -> torch.Tensor:
        slow, fast = (net(x, T[:1], image_emb=image, fps=torch.tensor([f])) for f in (4.0, 30.0))
        return slow - fast

    perturb(net, seed=5, skip=frozenset(n for n in names if "emb_proj" in n))
    before = fps_effect()
    perturb(net, seed=6, skip=frozenset(n for n, _ in net.named_parameters() if "emb_proj" not in n))
    assert not torch.allclose(fps_effect(), before, atol=1e-5)


def test_fps_temporal_only_keeps_the_fps_out_of_the_spatial_layers() -> None:
    """unet.fps_temporal_only: with the temporal layers still at their identity the fps changes nothing (the
    spatial layers never see it, where by default they do); once the temporal attention reads its embedding, the
    fps changes the output through it."""
    torch.manual_seed(0)
    x, image = torch.randn(1, 3, 4, 8, 8), torch.randn(1, 12)

    def fps_effect(net: UNet) -> torch.Tensor:
        slow, fast = (net(x, T[:1], image_emb=image, fps=torch.tensor([f])) for f in (4.0, 30.0))
        return (slow - fast).abs().max()

    default = UNet(tiny_config(temporal=True, fps_cond=True, temporal_attn_emb=True))
    only = UNet(tiny_config(temporal=True, fps_cond=True, temporal_attn_emb=True, fps_temporal_only=True))
    temporal = frozenset(default.temporal_parameter_names()) - {n for n in default.temporal_parameter_names()
                                                                if n.startswith("fps_embed.")}
    perturb(default, seed=3, skip=temporal)  # spatial layers and the fps embedding random, temporal at identity
    only.load_state_dict(default.state_dict())
    assert fps_effect(default) > 1e-4
    assert fps_effect(only) == 0.0
    perturb(only, seed=4, skip=frozenset(n for n, _ in only.named_parameters() if "temporal" not in n))
    assert fps_effect(only) > 1e-4

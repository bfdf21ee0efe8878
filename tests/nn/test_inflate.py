"""Inflation of an image UNet into a video UNet, and the function-preservation property (paper §3.2)."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange, repeat

from mav_train.inflate import InflationReport, inflate
from mav_train.nn.unet import UNet
from tests.nn.tiny import perturb, tiny_config

FRAMES = 16


def _trained_image_unet(**overrides: object) -> UNet:
    """An image UNet whose weights are pushed well away from their initialisation (incl. zero-init layers)."""
    torch.manual_seed(0)
    net = UNet(tiny_config(attention_levels=[1, 2], **overrides))
    for seed in range(3):
        perturb(net, std=0.05, seed=seed)
    return net.eval()


def _frame_by_frame(image_net: UNet, video: torch.Tensor, t: torch.Tensor, image_emb: torch.Tensor, **kwargs):
    frames = video.shape[2]
    out = image_net(
        rearrange(video, "b c t h w -> (b t) c h w"),
        repeat(t, "b -> (b t)", t=frames),
        image_emb=repeat(image_emb, "b d -> (b t) d", t=frames),
        **{key: repeat(value, "b ... -> (b t) ...", t=frames) for key, value in kwargs.items()},
    )
    return rearrange(out, "(b t) c h w -> b c t h w", t=frames)


def test_inflated_network_preserves_the_image_function() -> None:
    image_net = _trained_image_unet()
    video_net = UNet(tiny_config(attention_levels=[1, 2], temporal=True, fps_cond=True, max_frames=FRAMES))
    report = inflate(video_net, image_net.state_dict())
    video_net.eval()
    assert report.loaded == sorted(image_net.state_dict())
    assert report.initialised == video_net.temporal_parameter_names()
    assert report.expanded == {}

    generator = torch.Generator().manual_seed(1)
    video = torch.randn(2, 3, FRAMES, 8, 8, generator=generator)
    t, image_emb = torch.tensor([17, 640]), torch.randn(2, 12, generator=generator)
    drop = torch.tensor([False, True])
    with torch.no_grad():
        out = video_net(video, t, image_emb=image_emb, fps=torch.tensor([3.0, 24.0]), drop_image=drop)
        expected = _frame_by_frame(image_net, video, t, image_emb, drop_image=drop)
    assert out.shape == (2, 3, FRAMES, 8, 8)
    assert expected.abs().mean() > 0.1  # a meaningful, non-trivial output
    assert (out - expected).abs().max().item() <= 1e-5


def test_inflation_with_extra_input_channels_preserves_the_function() -> None:
    image_net = _trained_image_unet(text_dim=10)
    video_net = UNet(tiny_config(attention_levels=[1, 2], text_dim=10, temporal=True, extra_in_channels=4))
    report = inflate(video_net, image_net.state_dict())
    video_net.eval()
    assert report.expanded == {"input_conv.weight": ((16, 3, 3, 3), (16, 7, 3, 3))}
    assert "input_conv.weight" in report.loaded
    weight = video_net.input_conv.weight
    assert torch.equal(weight[:, :3], image_net.input_conv.weight)
    assert torch.equal(weight[:, 3:], torch.zeros(16, 4, 3, 3))

    video, t, image_emb = torch.randn(1, 3, 4, 8, 8), torch.tensor([300]), torch.randn(1, 12)
    text, mask = torch.randn(1, 5, 10), torch.tensor([[True, True, True, False, False]])
    with torch.no_grad():
        out = video_net(video, t, image_emb, text, mask, extra=torch.randn(1, 4, 4, 8, 8))
        expected = _frame_by_frame(image_net, video, t, image_emb, text_states=text, text_mask=mask)
    assert (out - expected).abs().max().item() <= 1e-5


def test_inflation_on_patches_with_extra_input_channels_preserves_the_function() -> None:
    """unet.patch_size 2: the extra channels' 2x2 patch weights are appended after the noisy input's."""
    image_net = _trained_image_unet(patch_size=2)
    video_net = UNet(tiny_config(attention_levels=[1, 2], patch_size=2, temporal=True, extra_in_channels=4))
    report = inflate(video_net, image_net.state_dict())
    video_net.eval()
    assert report.expanded == {"input_conv.weight": ((16, 12, 3, 3), (16, 28, 3, 3))}
    video, t, image_emb = torch.randn(1, 3, 4, 8, 8), torch.tensor([300]), torch.randn(1, 12)
    with torch.no_grad():
        out = video_net(video, t, image_emb, extra=torch.randn(1, 4, 4, 8, 8))
        expected = _frame_by_frame(image_net, video, t, image_emb)
    assert expected.abs().mean() > 0.1
    assert (out - expected).abs().max().item() <= 1e-5


def test_video_to_video_inflation_loads_the_temporal_layers() -> None:
    """D^t -> ↑F: the temporal layers come from the source; only the input conv grows."""
    source = UNet(tiny_config(temporal=True, fps_cond=True))
    perturb(source)
    target = UNet(tiny_config(temporal=True, fps_cond=True, extra_in_channels=4))
    report = inflate(target, source.state_dict())
    assert report.initialised == []
    assert set(source.temporal_parameter_names()) <= set(report.loaded)
    name = "middle.0.attn.temporal.proj_out.weight"
    assert torch.equal(target.get_parameter(name), source.get_parameter(name))


def test_prefix_selects_a_subset() -> None:
    image_net = _trained_image_unet()
    state = image_net.state_dict()
    checkpoint = {f"network.{key}": value for key, value in state.items()}
    checkpoint |= {f"ema_network.{key}": torch.zeros_like(value) for key, value in state.items()}
    checkpoint["step"] = torch.tensor(5)
    video_net = UNet(tiny_config(attention_levels=[1, 2], temporal=True))
    report = inflate(video_net, checkpoint, prefix="network.")
    assert report.loaded == sorted(state)
    assert torch.equal(video_net.input_conv.weight, image_net.input_conv.weight)
    inflate(video_net, checkpoint, prefix="ema_network.")
    assert torch.equal(video_net.input_conv.weight, torch.zeros_like(image_net.input_conv.weight))
    with pytest.raises(ValueError, match="prefix 'model.'"):
        inflate(video_net, checkpoint, prefix="model.")


def test_unexpected_and_missing_keys_are_all_reported_sorted() -> None:
    state = UNet(tiny_config()).state_dict()
    video_net = UNet(tiny_config(temporal=True))
    del state["out_conv.bias"], state["down.0.res.norm_1.weight"]
    state["zz_unknown"] = torch.zeros(1)
    state["aa_unknown"] = torch.zeros(1)
    with pytest.raises(ValueError) as error:
        inflate(video_net, state)
    message = str(error.value)
    assert "missing non-temporal keys ['down.0.res.norm_1.weight', 'out_conv.bias']" in message
    assert "unexpected keys ['aa_unknown', 'zz_unknown']" in message


def test_a_video_checkpoint_cannot_go_into_an_image_network() -> None:
    state = UNet(tiny_config(temporal=True)).state_dict()
    with pytest.raises(ValueError, match="unexpected keys .*down.0.res.conv_1.temporal.weight"):
        inflate(UNet(tiny_config()), state)


def test_shape_mismatches_are_reported() -> None:
    state = UNet(tiny_config(cond_dim=8)).state_dict()
    with pytest.raises(
        ValueError, match="shape mismatches .*cond.image_to_time.weight: \\[64, 8\\] vs \\[64, 12\\]"
    ):
        inflate(UNet(tiny_config(temporal=True)), state)
    state = UNet(tiny_config(extra_in_channels=4)).state_dict()
    with pytest.raises(ValueError, match="input_conv.weight: \\[16, 7, 3, 3\\] vs \\[16, 3, 3, 3\\]"):
        inflate(UNet(tiny_config(temporal=True)), state)


def test_report_summary() -> None:
    report = inflate(UNet(tiny_config(temporal=True, extra_in_channels=4)), UNet(tiny_config()).state_dict())
    assert isinstance(report, InflationReport)
    text = str(report)
    assert f"loaded {len(report.loaded)} tensors" in text
    assert f"initialised {len(report.initialised)} temporal tensors" in text
    assert "expanded input_conv.weight: [16, 3, 3, 3] -> [16, 7, 3, 3]" in text
    assert report.initialised_numel > 0 and report.loaded_numel > 0

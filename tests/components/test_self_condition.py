"""Self-conditioning (``diffusion.self_condition``): what the network reads as its extra input in sampling and in
training (D, and ↑F, whose known-frame channels follow the estimate), inflation of a self-conditioned D into D^t,
and the configs that are refused."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from mav_train.components.base import Conditions
from mav_train.components.frame_masks import forward_mask, known_channels
from mav_train.components.init import initialise_from_checkpoint
from mav_train.components.registry import COMPONENTS, component_class
from mav_train.config.load import ConfigError, load_config
from mav_train.config.validate import validate
from tests.components.test_decoder import OVERRIDES
from tests.components.test_temporal_decoder import VIDEO, trained_decoder_checkpoint, video_batch

SELF_COND = ["diffusion.self_condition=true", "unet.extra_in_channels=3"]
UPF_SELF_COND = ["diffusion.self_condition=true", "unet.extra_in_channels=7"]  # estimate + known frames + mask


def decoder(extra: list[str] | None = None):
    torch.manual_seed(0)
    module = component_class("decoder")(load_config("demo/decoder", OVERRIDES + SELF_COND + (extra or [])))
    with torch.no_grad():  # a fresh UNet's output conv is zero: give it weights, so that estimates are not all 0
        for p in module.ema_network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module.eval()


def record_calls(net: torch.nn.Module) -> list[dict]:
    """Every forward of ``net``: its input ``x``, ``t``, ``extra`` and output."""
    calls: list[dict] = []

    def hook(_module, args, kwargs, output):
        calls.append({"x": args[0].clone(), "t": args[1].clone(), "extra": kwargs["extra"].clone(),
                      "out": output.clone()})

    net.register_forward_hook(hook, with_kwargs=True)
    return calls


def test_sampling_feeds_each_step_the_last_steps_x0_estimate():
    module = decoder()
    calls = record_calls(module.ema_network)
    b, scale = 3, 2.0
    cond = Conditions(image_emb=torch.randn(b, 64))
    module.sample(cond, (b, 3, 16, 16), guidance_scale=scale, steps=5, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 5
    assert torch.count_nonzero(calls[0]["extra"]) == 0  # nothing estimated before the first step
    for before, now in zip(calls[:-1], calls[1:], strict=True):
        cond_out, uncond_out = before["out"][:b], before["out"][b:]
        guided = uncond_out + scale * (cond_out - uncond_out)
        estimate = module.diffusion.predict_x0(before["x"][:b], before["t"][:b], guided).clamp(-1, 1)
        assert torch.count_nonzero(estimate) > 0
        # both halves of the guidance batch read the same estimate: the guided one
        torch.testing.assert_close(now["extra"][:b], estimate)
        torch.testing.assert_close(now["extra"][b:], estimate)


def test_training_feeds_zeros_or_a_first_estimate_made_without_gradient():
    module = decoder().train()
    calls = record_calls(module.network)
    x0 = torch.rand(4, 3, 16, 16) * 2 - 1
    cond = Conditions(image_emb=torch.randn(4, 64))
    passes = []
    for seed in range(12):
        calls.clear()
        loss = module.diffusion_loss(x0, cond, generator=torch.Generator().manual_seed(seed))
        passes.append(len(calls))
        assert torch.count_nonzero(calls[0]["extra"]) == 0
        if len(calls) == 2:  # the second pass reads the first pass's clamped x0 estimate
            first = calls[0]
            estimate = module.diffusion.predict_x0(first["x"], first["t"], first["out"]).clamp(-1, 1)
            torch.testing.assert_close(calls[1]["extra"], estimate)
        loss.backward()
    assert set(passes) == {1, 2}, passes  # about half of the steps self-condition


def test_a_self_conditioned_decoder_inflates_into_d_t_that_matches_it_frame_by_frame(tmp_path, monkeypatch):
    import tests.components.test_temporal_decoder as td

    monkeypatch.setattr(td, "OVERRIDES", OVERRIDES + SELF_COND)
    path = trained_decoder_checkpoint(tmp_path)
    image = component_class("decoder")(load_config("demo/decoder", OVERRIDES + SELF_COND))
    image.load_state_dict(torch.load(path, weights_only=False)["state_dict"])
    video = component_class("temporal_decoder")(load_config("demo/temporal_decoder", OVERRIDES + SELF_COND + VIDEO))
    assert "expanded 0" in initialise_from_checkpoint(video, path)
    batch = video_batch()
    x, estimate = torch.randn(2, 3, 4, 16, 16), torch.rand(2, 3, 4, 16, 16) * 2 - 1
    t, drop = torch.tensor([10, 700]), torch.zeros(2, dtype=torch.bool)
    emb = image.clip.encode_image(batch["clip_image"])
    with torch.no_grad():
        out_video = video.ema_network(x, t, image_emb=emb, fps=batch["fps"], drop_image=drop, drop_text=~drop,
                                      extra=estimate)
        per_frame = image.ema_network(rearrange(x, "b c t h w -> (b t) c h w"), t.repeat_interleave(4),
                                      image_emb=emb.repeat_interleave(4, 0), drop_image=drop.repeat_interleave(4),
                                      drop_text=~drop.repeat_interleave(4),
                                      extra=rearrange(estimate, "b c t h w -> (b t) c h w"))
    diff = (rearrange(per_frame, "(b t) c h w -> b c t h w", b=2) - out_video).abs().max().item()
    assert out_video.abs().max() > 1e-3 and diff <= 1e-5, diff
    clip = video.sample(video.video_conditions(batch["clip_image"], 8.0), video.sample_shape(2), steps=3,
                        generator=torch.Generator().manual_seed(0))
    assert clip.shape == (2, 3, 4, 16, 16) and torch.isfinite(clip).all()


def self_conditioned_upf():
    from tests.components.test_interpolation import interpolation_module

    module = interpolation_module(UPF_SELF_COND)
    with torch.no_grad():
        for p in module.ema_network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module.eval()


def test_upf_fill_feeds_each_step_the_last_estimate_before_the_known_frames():
    """↑F's extra input is [x0 estimate, known frames, mask]: the estimate is the last guided step's, in both halves
    of the guidance batch; the known channels are the window's in the conditional half and zero (nothing known)
    in the unconditional one."""
    from tests.components.test_interpolation import FRAMES, random_video

    module = self_conditioned_upf()
    calls = record_calls(module.ema_network)
    b, scale = 2, 2.0
    video, known = random_video(b), forward_mask(FRAMES, 2)
    out = module.fill(video, known, 30.0, steps=4, guidance_scale=scale, strength=1.0,
                      generator=torch.Generator().manual_seed(0))
    assert len(calls) == 4 and torch.equal(out[:, :, :2], video[:, :, :2])
    channels = known_channels(video, known.expand(b, -1))
    for call in calls:
        torch.testing.assert_close(call["extra"][:b, 3:], channels)
        assert torch.count_nonzero(call["extra"][b:, 3:]) == 0
    assert torch.count_nonzero(calls[0]["extra"][:, :3]) == 0
    for before, now in zip(calls[:-1], calls[1:], strict=True):
        cond_out, uncond_out = before["out"][:b], before["out"][b:]
        estimate = module.diffusion.predict_x0(before["x"][:b], before["t"][:b],
                                               uncond_out + scale * (cond_out - uncond_out)).clamp(-1, 1)
        assert torch.count_nonzero(estimate) > 0
        torch.testing.assert_close(now["extra"][:b, :3], estimate)
        torch.testing.assert_close(now["extra"][b:, :3], estimate)


def test_upf_training_reads_the_known_frames_in_both_passes():
    from tests.components.test_interpolation import random_video

    module = self_conditioned_upf().train()
    calls = record_calls(module.network)
    video = random_video(2)
    cond = module.masked_conditions(video, forward_mask(video.shape[2], 3).expand(2, -1), torch.full((2,), 30.0))
    passes = []
    for seed in range(10):
        calls.clear()
        module.diffusion_loss(video, cond, generator=torch.Generator().manual_seed(seed)).backward()
        passes.append(len(calls))
        for call in calls:
            torch.testing.assert_close(call["extra"][:, 3:], cond.extra)
        assert torch.count_nonzero(calls[0]["extra"][:, :3]) == 0
        if len(calls) == 2:
            first = calls[0]
            estimate = module.diffusion.predict_x0(first["x"], first["t"], first["out"]).clamp(-1, 1)
            torch.testing.assert_close(calls[1]["extra"][:, :3], estimate)
    assert set(passes) == {1, 2}, passes


@pytest.mark.parametrize(("recipe", "extra", "names"), [
    ("demo/decoder", ["diffusion.self_condition=true", "unet.extra_in_channels=0"], "unet.extra_in_channels=3"),
    ("demo/interpolation", ["diffusion.self_condition=true", "unet.extra_in_channels=4"],
     "unet.extra_in_channels=7"),
    ("demo/interpolation", [*UPF_SELF_COND, "model.residual=true", "diffusion.guidance_scale=1.0",
                            "model.masks.unconditional=0"], "residual"),
    ("demo/prior", ["diffusion.self_condition=true"], "not prior"),
    ("demo/sr_low", ["diffusion.self_condition=true"], "not sr_low"),
])
def test_configs_that_cannot_self_condition_are_refused_at_load(recipe, extra, names):
    with pytest.raises(ConfigError, match="diffusion.self_condition") as err:
        validate(load_config(recipe, extra), COMPONENTS)
    assert names in str(err.value)
    validate(load_config("demo/decoder", SELF_COND), COMPONENTS)  # the right channels load
    validate(load_config("demo/interpolation", UPF_SELF_COND), COMPONENTS)


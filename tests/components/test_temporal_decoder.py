"""D^t as a component: inflation from a decoder checkpoint preserves its function, only temporal layers train
when the spatial ones are frozen, joint image batches add their loss, sampling gives videos."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from einops import rearrange
from torch.utils.data import DataLoader

from mav_train.components.init import initialise_from_checkpoint
from mav_train.components.registry import COMPONENTS, component_class
from mav_train.config.load import ConfigError, load_config
from mav_train.config.validate import validate
from tests.components.test_decoder import OVERRIDES, Repeat, toy_batch

VIDEO = ["data.num_frames=4", "unet.max_frames=8"]
# The demo recipes self-condition; without it (tests/components/test_self_condition.py has the recipe's case).
PLAIN = ["diffusion.self_condition=false", "unet.extra_in_channels=0"]


def trained_decoder_checkpoint(tmp_path, extra: list[str] | None = None) -> str:
    torch.manual_seed(0)
    decoder = component_class("decoder")(load_config("demo/decoder", OVERRIDES + (extra or [])))
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(decoder, train_dataloaders=DataLoader(Repeat(toy_batch(4), 10), batch_size=None))
    path = tmp_path / "decoder.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


def video_batch(b: int = 2, t: int = 4, r: int = 16) -> dict:
    torch.manual_seed(1)
    video = torch.rand(b, 3, t, r, r) * 2 - 1
    return {"video": video, "clip_image": video[:, :, 0], "fps": torch.tensor([4.0, 24.0])[:b]}


def test_inflated_temporal_decoder_matches_decoder_frame_by_frame(tmp_path):
    path = trained_decoder_checkpoint(tmp_path, PLAIN)
    decoder = component_class("decoder")(load_config("demo/decoder", OVERRIDES + PLAIN))
    decoder.load_state_dict(torch.load(path, weights_only=False)["state_dict"])
    video = component_class("temporal_decoder")(load_config("demo/temporal_decoder", OVERRIDES + PLAIN + VIDEO))
    report = initialise_from_checkpoint(video, path)
    assert "initialised temporal_decoder" in report

    batch = video_batch()
    x = torch.randn(2, 3, 4, 16, 16)
    t = torch.tensor([10, 700])
    emb = decoder.clip.encode_image(batch["clip_image"])
    drop = torch.zeros(2, dtype=torch.bool)
    with torch.no_grad():
        out_video = video.ema_network(x, t, image_emb=emb, fps=batch["fps"], drop_image=drop,
                                      drop_text=~drop)
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        out_image = decoder.ema_network(frames, t.repeat_interleave(4), image_emb=emb.repeat_interleave(4, 0),
                                        drop_image=drop.repeat_interleave(4), drop_text=~drop.repeat_interleave(4))
    diff = (rearrange(out_image, "(b t) c h w -> b c t h w", b=2) - out_video).abs().max().item()
    assert out_video.abs().max() > 1e-3, "trained decoder should not output zeros"
    assert diff <= 1e-5, diff


def test_freeze_spatial_trains_only_temporal_layers(tmp_path):
    module = component_class("temporal_decoder")(load_config("demo/temporal_decoder", OVERRIDES + VIDEO))
    # From a trained decoder: with the zero-initialised output conv of a fresh UNet frozen, no gradient would
    # reach the temporal layers at all.
    initialise_from_checkpoint(module, trained_decoder_checkpoint(tmp_path))
    trainable = {n for n, p in module.network.named_parameters() if p.requires_grad}
    assert trainable and trainable == set(module.network.temporal_parameter_names())
    before = {n: p.detach().clone() for n, p in module.network.named_parameters()}
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=DataLoader(Repeat(video_batch(), 10), batch_size=None))
    for name, param in module.network.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        if name not in trainable:
            assert not changed, name
    assert any(not torch.equal(before[n], p.detach()) for n, p in module.network.named_parameters() if n in trainable)


def test_train_all_layers_but_text_when_not_frozen():
    module = component_class("temporal_decoder")(
        load_config("demo/temporal_decoder", OVERRIDES + VIDEO + ["model.freeze_spatial=false",
                                                                   "unet.text_dim=96"]))  # toy CLIP text width
    frozen = {n for n, p in module.network.named_parameters() if not p.requires_grad}
    assert frozen and all(module.network.is_text_parameter(n) for n in frozen)
    x0, cond = module.prepare_batch(video_batch())
    module.diffusion_loss(x0, cond).backward()
    unused = [n for n, p in module.network.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, unused  # what DDP(find_unused_parameters=False) needs


def test_joint_image_batches_add_an_image_loss():
    module = component_class("temporal_decoder")(load_config("demo/temporal_decoder", OVERRIDES + VIDEO))
    batch = video_batch()
    images = toy_batch(3)["image"]
    batch.update(images=images, images_clip=images)
    loss = module.extra_losses(batch)
    assert torch.is_tensor(loss) and loss.item() > 0
    assert module.extra_losses(video_batch()) == 0.0


def test_sample_video_shape_and_determinism():
    module = component_class("temporal_decoder")(load_config("demo/temporal_decoder", OVERRIDES + VIDEO))
    batch = video_batch()
    a = module.sample_from_batch(batch, 2, generator=torch.Generator().manual_seed(0), steps=3)
    b = module.sample_from_batch(batch, 2, generator=torch.Generator().manual_seed(0), steps=3)
    assert a.shape == (2, 3, 4, 16, 16) and torch.equal(a, b)


def record_noise_draws(module, monkeypatch) -> list[tuple[int, ...]]:
    """The shapes of every draw through ``module.diffusion.noise`` from now on (the list fills as they happen)."""
    calls: list[tuple[int, ...]] = []
    draw = module.diffusion.noise

    def counted(shape, **kwargs):
        calls.append(tuple(shape))
        return draw(shape, **kwargs)

    monkeypatch.setattr(module.diffusion, "noise", counted)
    return calls


def test_frame_noise_share_reaches_training_and_every_sampling_step(monkeypatch):
    """With diffusion.frame_noise_share the training noise, x_T and the fresh noise of every stochastic step all
    come from GaussianDiffusion.noise (correlated frames); nothing is drawn per frame alone."""
    module = component_class("temporal_decoder")(
        load_config("demo/temporal_decoder", OVERRIDES + VIDEO + ["diffusion.frame_noise_share=0.5",
                                                                  "diffusion.ddim_eta=1.0"]))
    calls = record_noise_draws(module, monkeypatch)
    x0, cond = module.prepare_batch(video_batch())
    module.diffusion_loss(x0, cond)
    assert calls == [(2, 3, 4, 16, 16)]
    calls.clear()
    module.sample_from_batch(video_batch(), 2, generator=torch.Generator().manual_seed(0), steps=3)
    assert calls == [(2, 3, 4, 16, 16)] * 3  # x_T, then one fresh draw for each of the two stochastic steps
    with pytest.raises(ConfigError, match="'diffusion.frame_noise_share': 1"):
        validate(load_config("demo/temporal_decoder", ["diffusion.frame_noise_share=1"]), COMPONENTS)


def test_lr_scales_give_matched_parameters_their_own_rate_and_zero_freezes_them(tmp_path):
    scales = ["optim.lr_scales={conv_\\d\\.temporal\\.: 0.0, attn\\.temporal\\.: 0.5}"]
    module = component_class("temporal_decoder")(load_config("demo/temporal_decoder", OVERRIDES + VIDEO + scales))
    initialise_from_checkpoint(module, trained_decoder_checkpoint(tmp_path))
    groups = {g["name"]: g for g in module.configure_optimizers()["optimizer"].param_groups}
    lr = module.cfg.optim.lr  # "initial_lr": the scheduler's warm-up scales "lr"
    # Scale 0 freezes: the convolutions are in no group (no AdamW state) and get no gradient.
    assert set(groups) == {"fps_embed", "attn\\.temporal\\."}  # the recipe's + ours, less the frozen convs
    assert groups["fps_embed"]["initial_lr"] == module.cfg.optim.lr_scales["fps_embed"] * lr
    assert groups["attn\\.temporal\\."]["initial_lr"] == 0.5 * lr
    convs = {n for n in module.network.temporal_parameter_names() if ".temporal." in n and "conv_" in n}
    params = dict(module.network.named_parameters())
    assert convs and not any(params[n].requires_grad for n in convs)
    optimised = {id(p) for g in groups.values() for p in g["params"]}
    assert not optimised & {id(params[n]) for n in convs}
    # configure_optimizers again (as a second fit does): the same groups, the frozen pattern still valid
    again = {g["name"]: len(g["params"]) for g in module.configure_optimizers()["optimizer"].param_groups}
    assert again == {name: len(g["params"]) for name, g in groups.items()}
    before = {n: p.detach().clone() for n, p in module.network.named_parameters()}
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=DataLoader(Repeat(video_batch(), 10), batch_size=None))
    after = dict(module.network.named_parameters())
    assert all(torch.equal(before[n], after[n].detach()) for n in convs)
    assert any(not torch.equal(before[n], after[n].detach()) for n in after if "attn.temporal." in n)


def test_an_lr_scale_pattern_that_matches_nothing_names_itself():
    module = component_class("temporal_decoder")(
        load_config("demo/temporal_decoder", OVERRIDES + VIDEO + ["optim.lr_scales={temproal: 0.1}"]))
    with pytest.raises(ValueError, match="'temproal' matches no trained parameter"):
        module.configure_optimizers()
    module = component_class("temporal_decoder")(
        load_config("demo/temporal_decoder", OVERRIDES + VIDEO + ["optim.lr_scales={'conv_(': 0.1}"]))
    with pytest.raises(ValueError, match="not a regular expression"):
        module.configure_optimizers()

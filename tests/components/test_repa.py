"""REPA (``repa.*``): the CLIP feature maps it aligns to, its place in a diffusion component's training step (a
projector trained beside the network, a logged loss that falls), and its refusals."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from datamodules.toy_world import caption_of, draw_scene, random_scene
from mav_train.components.registry import COMPONENTS, component_class, load_component
from mav_train.components.repa import RepaHead, as_map
from mav_train.config.load import ConfigError, load_config
from mav_train.config.validate import validate

TINY = ["logger=none", "clip.pretrained=null", "unet.base_channels=16", "unet.channel_mults=[1,2,4]",
        "unet.attention_levels=[4]", "diffusion.self_condition=false", "unet.extra_in_channels=0",
        "optim.warmup_steps=5", "optim.lr=2e-3"]


def test_a_conv_map_is_kept_and_vit_tokens_become_a_grid():
    conv = torch.randn(2, 8, 4, 4)
    assert as_map(conv, 2, "layer2") is conv
    tokens = torch.randn(2, 1 + 9, 5)  # class token + 3 x 3 patches, batch first
    grid = as_map(tokens, 2, "transformer.resblocks.0")
    assert grid.shape == (2, 5, 3, 3)
    assert torch.equal(grid[1, :, 0, 2], tokens[1, 1 + 2])  # row 0, column 2 = patch 2 (class token dropped)
    seq_first = tokens.transpose(0, 1).contiguous()
    assert torch.equal(as_map(seq_first, 2, "x"), grid)
    with pytest.raises(ValueError, match="not a square grid"):
        as_map(torch.randn(2, 7, 5), 2, "x")


def test_the_projection_is_resized_to_the_target_grid_and_the_loss_is_one_minus_cosine():
    head = RepaHead(4, 6, 8)
    features = torch.randn(2, 4, 2, 2)
    target = torch.randn(2, 6, 4, 4)
    loss = head.loss(features, target)
    assert 0.0 <= loss.item() <= 2.0
    with torch.no_grad():
        projected = torch.nn.functional.interpolate(head.project(features), size=(4, 4), mode="bilinear")
    assert head.loss(features, projected).item() == pytest.approx(0.0, abs=1e-5)
    video = torch.randn(2, 4, 3, 2, 2)  # b c t h w: frames folded into the batch
    assert head.loss(video, torch.randn(6, 6, 2, 2)).ndim == 0


def test_an_unknown_clip_layer_is_named():
    cfg = load_config("demo/decoder", [*TINY, "repa.weight=0.1", "repa.encoder_layer=layer9"])
    with pytest.raises(ValueError, match="repa.encoder_layer: 'layer9' is not a module"):
        component_class("decoder")(cfg)


@pytest.mark.parametrize("override, key", [("repa.weight=-0.1", "repa.weight"),
                                           ("repa.projector_dim=0", "repa.projector_dim"),
                                           ("repa.unet_feature=midle", "repa.unet_feature")])
def test_bad_repa_values_fail_at_load_naming_the_key(override, key):
    cfg = load_config("demo/decoder", [*TINY, "repa.weight=0.1", override])
    with pytest.raises(ConfigError, match=f"'{key}'"):
        validate(cfg, COMPONENTS)


def test_the_prior_refuses_repa():
    cfg = load_config("demo/prior", ["logger=none", "clip.pretrained=null", "repa.weight=0.1"])
    with pytest.raises(ValueError, match="needs a UNet"):
        component_class("prior")(cfg)


def test_the_feature_reader_keeps_nothing_from_other_passes_of_the_clip():
    module = component_class("decoder")(load_config("demo/decoder", [*TINY, "repa.weight=0.1"]))
    reader = module.__dict__["_repa_features"]
    for _ in range(3):  # conditioning and sampling embed images through the same CLIP, without the reader
        module.clip.encode_image(torch.zeros(2, 3, 32, 32))
    assert reader._out == []
    assert reader(torch.zeros(2, 3, 32, 32)).shape[0] == 2 and reader._out == []


def test_off_by_default_no_projector_and_no_optimizer_group():
    module = component_class("decoder")(load_config("demo/decoder", TINY))
    assert module.repa_head is None
    assert module.extra_param_groups() == []


def test_the_alignment_loss_reaches_the_network_middle():
    torch.manual_seed(0)
    module = component_class("decoder")(load_config("demo/decoder", [*TINY, "repa.weight=0.1"]))
    x0 = torch.rand(4, 3, 32, 32) * 2 - 1
    _, cond = module.prepare_batch({"image": x0, "caption": ["a"] * 4})
    capture = {}
    module.diffusion_loss(x0, cond, capture=capture)
    module.repa_loss(capture["middle"], x0).backward()
    middle_grads = [p.grad for p in module.network.middle.parameters() if p.grad is not None]
    assert middle_grads and any(g.abs().sum() > 0 for g in middle_grads)
    assert all(p.grad is None for p in module.network.out_conv.parameters())  # REPA reads the middle only


def test_an_encoder_block_can_be_aligned_instead_of_the_middle():
    torch.manual_seed(0)
    cfg = load_config("demo/decoder", [*TINY, "repa.weight=0.1", "repa.unet_feature=down.2",
                                       "repa.encoder_layer=layer1"])
    module = component_class("decoder")(cfg)
    assert module.repa_head.project[0].in_channels == 32  # down.2: the second level's block, 16 x 2 channels
    x0 = torch.rand(4, 3, 32, 32) * 2 - 1
    _, cond = module.prepare_batch({"image": x0, "caption": ["a"] * 4})
    capture = {}
    module.diffusion_loss(x0, cond, capture=capture)
    assert capture["down.2"].shape[1] == 32
    module.repa_loss(capture["down.2"], x0).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.network.down[2].parameters())
    assert all(p.grad is None for p in module.network.middle.parameters())  # nothing after the aligned block


def test_an_unknown_unet_feature_is_named():
    cfg = load_config("demo/decoder", [*TINY, "repa.weight=0.1", "repa.unet_feature=down.9"])
    with pytest.raises(ValueError, match="repa.unet_feature: 'down.9' is not a feature of this UNet"):
        component_class("decoder")(cfg)


class ToyImages(IterableDataset):
    def __iter__(self):
        rng = np.random.default_rng(0)
        while True:
            scenes = [random_scene(rng, moving=False) for _ in range(8)]
            pixels = np.stack([np.asarray(draw_scene(s, 32)) for s in scenes])
            yield {"image": torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0,
                   "caption": [caption_of(s) for s in scenes]}


class Record(L.Callback):
    def __init__(self):
        self.repa: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.repa.append(float(trainer.callback_metrics["train/repa"]))


def test_a_decoder_learns_to_align_its_middle_features_with_the_clip(tmp_path):
    torch.manual_seed(0)
    steps = 60
    cfg = load_config("demo/decoder", [*TINY, "repa.weight=0.5", f"trainer.max_steps={steps}"])
    module = component_class("decoder")(cfg)
    target_width = module.__dict__["_repa_features"](torch.zeros(1, 3, 32, 32)).shape[1]
    assert module.repa_head.project[-1].out_channels == target_width
    before = [p.detach().clone() for p in module.repa_head.parameters()]
    record = Record()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=tmp_path, callbacks=[record])
    trainer.fit(module, train_dataloaders=DataLoader(ToyImages(), batch_size=None))
    assert any(not torch.equal(b, p) for b, p in zip(before, module.repa_head.parameters(), strict=True))
    first, last = record.repa[0], np.mean(record.repa[-10:])
    # A random projector starts far from the CLIP's features; a broken gradient path to it leaves the loss there.
    assert last < 0.25 * first, (first, last)
    path = tmp_path / "repa.ckpt"
    trainer.save_checkpoint(path)
    reloaded = load_component(path)
    assert torch.equal(reloaded.repa_head.project[0].weight, module.repa_head.project[0].weight)

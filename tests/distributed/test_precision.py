"""Mixed precision through the project's Trainer: the paper-scale recipes train in ``bf16-mixed`` with gradient
clipping and fused AdamW, a combination Lightning's own plugin refuses at the first step."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from mav_train.components.registry import component_class
from mav_train.config.load import load_config
from mav_train.distributed import BF16MixedPrecision, precision_plugin, uses_fused_adamw
from mav_train.training import build_trainer
from tests.cli.chain_fixtures import CLIP, OVERRIDES, _batch
from tests.components.test_decoder import Repeat, toy_batch

CLIP_VAL = 1e-3  # far below the tiny decoder's gradient norm, so clipping shows


class GradNorms(L.Callback):
    """The total gradient norm as the optimiser left it: after clipping, before the next step's zero_grad."""

    def __init__(self):
        self.norms: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


# On a CPU Lightning runs 16-mixed as bf16 (it has no fp16 autocast there): that case checks only that the
# components pick unfused AdamW for it; the loss-scaler path itself needs a GPU and is not exercised here.
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "32-true"])
def test_decoder_trains_and_clips_in_every_precision(tmp_path, precision):
    recipe, overrides = OVERRIDES["decoder"]
    cfg = load_config(recipe, [*overrides, f"trainer.precision={precision}", f"trainer.gradient_clip_val={CLIP_VAL}",
                               "trainer.max_steps=3", "trainer.enable_progress_bar=false", "sampling.every_n_steps=0",
                               "checkpoint.every_n_steps=100"])
    module = component_class(cfg.component)(cfg)
    norms = GradNorms()
    trainer = build_trainer(cfg, tmp_path, extra_callbacks=[norms])
    trainer.fit(module, train_dataloaders=DataLoader(Repeat(toy_batch(2, resolution=8), 3), batch_size=None))
    assert trainer.global_step == 3
    assert isinstance(trainer.precision_plugin, BF16MixedPrecision) == (precision == "bf16-mixed")
    optimizer = trainer.optimizers[0]
    assert optimizer.defaults["fused"] == (precision != "16-mixed")  # fused unscales fp16 after clipping
    assert len(norms.norms) == 3 and max(norms.norms) <= CLIP_VAL * 1.01, norms.norms
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_precision_plugin_only_where_lightnings_would_refuse():
    assert isinstance(precision_plugin("bf16-mixed", "auto", "cpu"), BF16MixedPrecision)
    assert precision_plugin("bf16-mixed", "auto", "cpu").device == "cpu"
    assert precision_plugin("32-true", "auto", "cpu") is None
    assert precision_plugin("16-mixed", "ddp", "cpu") is None
    from mav_train.distributed import build_strategy

    trainer = load_config("decoder", ["trainer.strategy=deepspeed_stage_2"]).trainer
    assert precision_plugin("bf16-mixed", build_strategy(trainer), "gpu") is None  # DeepSpeed: its own autocast
    assert not uses_fused_adamw("16-mixed") and uses_fused_adamw("bf16-mixed") and uses_fused_adamw("32-true")


PAPER = ["decoder", "prior", "temporal_decoder", "interpolation", "sr_low", "temporal_sr_low", "sr_high"]
# The tiny random CLIP and its widths where a paper recipe names ViT-L/14 (768), and 4-frame windows.
TINY = {"decoder": ["unet.text_dim=64"], "interpolation": ["model.masks.max_known=2"],
        "sr_low": [*CLIP, "unet.cond_dim=32"], "temporal_sr_low": [*CLIP, "unet.cond_dim=32"], "sr_high": CLIP}


@pytest.mark.parametrize("name", PAPER)
def test_paper_recipes_train_with_their_own_precision_and_clipping(tmp_path, name):
    """Every paper-scale recipe, made tiny and moved to one CPU process, keeps its precision (bf16-mixed) and
    clipping and trains two steps through the project's Trainer (they all stopped at step 1 before)."""
    _, overrides = OVERRIDES[name]
    cfg = load_config(name, [*overrides, *TINY.get(name, []), "trainer.accelerator=cpu", "trainer.devices=1",
                             "trainer.strategy=auto", "trainer.max_steps=2", "trainer.enable_progress_bar=false",
                             "sampling.every_n_steps=0", "checkpoint.every_n_steps=100"])
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.gradient_clip_val > 0
    module = component_class(cfg.component)(cfg)
    batch = _batch(name, cfg)
    if name == "prior":
        module.set_statistics(module.clip.encode_image(batch["clip_image"]))
    trainer = build_trainer(cfg, tmp_path)
    trainer.fit(module, train_dataloaders=DataLoader(Repeat(batch, 2), batch_size=None))
    assert trainer.global_step == 2 and isinstance(trainer.precision_plugin, BF16MixedPrecision)

"""Tiny checkpoints of every cascade stage, trained for two steps each, for the ``generate`` chain tests.

Sizes: P (32-d embeddings of the tiny random CLIP) → D^t 4 frames × 8 px → ↑F (the real masked-frame component)
skip 2: 7 frames → SR_l^t 8 → 16 px → SR_h 16 → 32 px; and for images D 8 px → SR_l 8 → 16 → SR_h. The SR stages
keep their demo recipes' own (seeded random toy) CLIP, as the demo SR recipes do: their networks take no embedding,
so the chain does not require them to share the CLIP.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from mav_train.components.registry import component_class
from mav_train.config.load import load_config
from tests.components.test_decoder import Repeat, toy_batch

CLIP = ["clip.model=custom", "clip.pretrained=null"]
UNET = ["unet.base_channels=8", "unet.head_dim=8", "unet.channel_mults=[1,2]", "unet.attention_levels=[2]",
        "unet.num_res_blocks=1"]
COMMON = ["diffusion.sample_steps=2", "logger=none", "optim.warmup_steps=1", "ema.decay=0.5"]
PRIOR = [*CLIP, "prior.embed_dim=32", "prior.text_dim=64", "prior.text_tokens=32", "prior.dim=32",
         "prior.depth=1", "prior.heads=2", "prior.num_candidates=1", *COMMON]
VIDEO = ["data.num_frames=4", "unet.max_frames=16"]

OVERRIDES = {
    "prior": ("demo/prior", PRIOR),
    "decoder": ("demo/decoder", [*CLIP, *UNET, "unet.cond_dim=32", "data.resolution=8", *COMMON]),
    "temporal_decoder": ("demo/temporal_decoder", [*CLIP, *UNET, "unet.cond_dim=32", "data.resolution=8", *VIDEO,
                                                   *COMMON]),
    "interpolation": ("demo/interpolation", [*CLIP, *UNET, "unet.cond_dim=32", "data.resolution=8", *VIDEO,
                                             "model.frame_skip=2", "model.masks.max_skip=3", *COMMON]),
    "sr_low": ("demo/sr_low", [*UNET, "data.resolution=16", "model.low_res=8", *COMMON]),
    "temporal_sr_low": ("demo/temporal_sr_low", [*UNET, "data.resolution=16", "model.low_res=8", *VIDEO, *COMMON]),
    "sr_high": ("demo/sr_high", [*UNET, "data.resolution=32", "model.low_res=16", "model.crop_size=16", *COMMON]),
}


def _batch(name: str, cfg) -> dict:
    res = cfg.data.resolution
    batch = toy_batch(2, resolution=res)
    if cfg.data.kind == "video":
        video = batch["image"][:, :, None].expand(-1, -1, cfg.data.num_frames, -1, -1).contiguous()
        return {"video": video, "clip_image": batch["image"], "fps": torch.tensor([4.0, 8.0])}
    return batch


def tiny_checkpoint(name: str, path: Path, steps: int = 2, extra: tuple[str, ...] = ()) -> Path:
    """A tiny ``name`` component trained ``steps`` steps on two toy items, saved by a real Trainer."""
    recipe, overrides = OVERRIDES[name]
    cfg = load_config(recipe, [*overrides, *extra])
    module = component_class(cfg.component)(cfg)
    batch = _batch(name, cfg)
    if name == "prior":
        module.set_statistics(module.clip.encode_image(batch["clip_image"]))
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, default_root_dir=path.parent)
    trainer.fit(module, train_dataloaders=DataLoader(Repeat(batch, steps), batch_size=None))
    trainer.save_checkpoint(path)
    return path

"""Tiny checkpoints of every cascade stage, trained for two steps each, for the ``generate`` chain tests.

Sizes: P (32-d embeddings of the tiny random CLIP) → D^t 4 frames × 8 px → ↑F skip 2: 7 frames → SR_l^t 8 → 16 px
→ SR_h 16 → 32 px; and for images D 8 px → SR_l 8 → 16 → SR_h. The SR stages keep their demo recipes' own
(seeded random toy) CLIP, as the demo SR recipes do: their networks take no embedding, so the chain does not
require them to share the CLIP.

↑F: the real component (``mav_train/components/interpolation.py``) is written on another branch. Until it is
merged, :class:`StandInInterpolation` — a test-local stand-in implementing the agreed API (``interpolate``,
``animate``) with linear blending between known frames, not diffusion — is registered under the component name
``interpolation`` with ``monkeypatch`` by the tests that use it.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from einops import rearrange
from torch import Tensor
from torch.utils.data import DataLoader

from mav_train.components.registry import component_class
from mav_train.components.temporal_decoder import TemporalDecoder
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
    "interpolation": ("demo/temporal_decoder", [*CLIP, *UNET, "unet.cond_dim=32", "data.resolution=8", *VIDEO,
                                                "component=interpolation", *COMMON]),
    "sr_low": ("demo/sr_low", [*UNET, "data.resolution=16", "model.low_res=8", *COMMON]),
    "temporal_sr_low": ("demo/temporal_sr_low", [*UNET, "data.resolution=16", "model.low_res=8", *VIDEO, *COMMON]),
    "sr_high": ("demo/sr_high", [*UNET, "data.resolution=32", "model.low_res=16", "model.crop_size=16", *COMMON]),
}


class StandInInterpolation(TemporalDecoder):
    """Test-local stand-in for ↑F with the agreed API (see the module docstring): known frames are kept and the
    in-between frames are linear blends of their neighbours; ``animate`` repeats the image. It runs its network
    once per call so that the progress bar has something to count."""

    def _touch_network(self, video: Tensor) -> None:
        t = torch.zeros(video.shape[0], dtype=torch.long, device=self.device)
        emb = self.clip.encode_image(video[:, :, 0])
        self.sampling_network()(video, t, image_emb=emb, fps=torch.full_like(t, 8, dtype=video.dtype))

    def interpolate(self, video: Tensor, skip: int, *, fps=None, generator=None, steps=None,
                    guidance_scale=None) -> Tensor:
        """``b 3 t h w`` → ``b 3 (t-1)*skip+1 h w``."""
        a, b = video[:, :, :-1], video[:, :, 1:]
        w = torch.arange(skip, dtype=video.dtype, device=video.device) / skip
        mixed = a[:, :, :, None] * (1 - w[:, None, None]) + b[:, :, :, None] * w[:, None, None]
        out = torch.cat([rearrange(mixed, "b c t k h w -> b c (t k) h w"), video[:, :, -1:]], dim=2)
        self._touch_network(out)
        return out

    def animate(self, image: Tensor, n: int, **_) -> Tensor:
        out = image[:, :, None].expand(-1, -1, n, -1, -1).clone()
        self._touch_network(out)
        return out


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


def register_stand_in(monkeypatch) -> None:
    from mav_train.components import registry

    monkeypatch.setitem(registry.COMPONENTS, "interpolation",
                        ("tests.cli.chain_fixtures", "StandInInterpolation"))

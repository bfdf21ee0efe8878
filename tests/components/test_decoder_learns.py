"""The decoder must learn the toy world: a small D trained for about a minute inside the test, sampled with the
project's sampler and conditioning, judged by the toy judge. A regression in the diffusion core (schedule,
parameterisation, loss), the sampler, classifier-free guidance or the conditioning path turns this red."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from datamodules.heldout import heldout_images
from datamodules.toy_world import COLORS, caption_of, draw_scene, parse_caption, random_scene
from mav_train.components.base import Conditions
from mav_train.components.registry import component_class
from mav_train.config.load import load_config
from mav_train.evaluation.toy_judge import score_images, to_uint8
from mav_train.evaluation.toy_reader import PALETTE, nearest_palette

RES = 32
OVERRIDES = ["logger=none", "clip.pretrained=null",  # the seeded random toy CLIP: no training of a CLIP here
             "unet.base_channels=16", "unet.channel_mults=[1,2,4]", "unet.attention_levels=[4]",
             f"data.resolution={RES}", "optim.lr=2e-3", "optim.warmup_steps=20", "ema.decay=0.98",
             "diffusion.sample_steps=25", "diffusion.guidance_scale=1.0"]


class FreshToyImages(IterableDataset):
    def __init__(self, batch: int):
        self.batch = batch

    def __iter__(self):
        rng = np.random.default_rng(0)
        while True:
            scenes = [random_scene(rng, moving=False) for _ in range(self.batch)]
            pixels = np.stack([np.asarray(draw_scene(s, RES)) for s in scenes])
            image = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            yield {"image": image, "clip_image": image, "caption": [caption_of(s) for s in scenes]}


@pytest.mark.xfail(strict=False, reason=(
    "known failure (issue 7 open): after 200 steps with the seeded random toy CLIP the border colour matches the "
    "caption in 31% of samples (measured 3 Dec 2026 with x0-prediction and the min-SNR floor; 22% on 2 Dec), not "
    "the 80% this test asks. The demo recipe's decoder (trained CLIP, 1400 steps) reads 59% (README)."))
def test_a_small_decoder_learns_backgrounds_and_colours(tmp_path):
    torch.manual_seed(0)
    steps = 200
    cfg = load_config("demo/decoder", [*OVERRIDES, f"trainer.max_steps={steps}"])
    module = component_class("decoder")(cfg)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=tmp_path, gradient_clip_val=1.0)
    trainer.fit(module, train_dataloaders=DataLoader(FreshToyImages(32), batch_size=None))
    module.eval()
    images, captions = heldout_images(32, seed=1, resolution=RES)
    with torch.no_grad():
        cond = Conditions(image_emb=module.clip.encode_image(images))
        samples = module.sample(cond, tuple(images.shape), generator=torch.Generator().manual_seed(0))
    # After ~1 CPU-minute the shapes are still blobs the full judge calls unreadable (the demo recipe's numbers
    # are in the README); the background colour already has to be right: read it as the judge's palette colour
    # nearest to the median of the outer ring of pixels. Broken conditioning reads ~1/10, noise reads grey.
    hits = [background_colour(image) == parse_caption(caption).background
            for image, caption in zip(to_uint8(samples), captions, strict=True)]
    truth = [background_colour(image) == parse_caption(caption).background
             for image, caption in zip(to_uint8(images), captions, strict=True)]
    assert all(truth)
    assert np.mean(hits) >= 0.8, (np.mean(hits), score_images(samples, captions).as_dict())


def background_colour(image: np.ndarray) -> str:
    """The palette colour nearest to the median of the outermost ring of pixels of ``h w 3`` uint8."""
    ring = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]]).astype(np.float32)
    index, _ = nearest_palette(np.median(ring, axis=0, keepdims=True))
    assert len(PALETTE) == len(COLORS)
    return COLORS[int(index[0])][0]

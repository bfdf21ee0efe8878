"""CLIPSIM (Wu et al. 2021, as Make-A-Video reports it): the mean CLIP similarity of generated frames and text.

Per item: the mean over its frames of ``cos(CLIP image embedding, CLIP text embedding of its caption)``; the
number is the mean over items. Items without a caption are skipped and counted (``missing_caption``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from omegaconf import OmegaConf
from tqdm import tqdm

from mav_train.config.schema import ClipConfig
from mav_train.evaluation.media_source import MediaSource
from mav_train.evaluation.paper_metrics import EvalSettings, MetricResult
from mav_train.evaluation.selection import frame_indices
from mav_train.nn.encoders import FrozenCLIP


def build_clip(model: str, pretrained: str | None) -> FrozenCLIP:
    """The frozen CLIP of ``model`` with weights from the local file ``pretrained``; ``pretrained=demo`` is the
    toy CLIP (``model=toy``) trained into the cache on first use. ValueError (one line) without weights."""
    if not pretrained:
        raise ValueError(f"clipsim: clip.pretrained=PATH is required (local open_clip weights of {model}; "
                         "nothing is downloaded), or clip.model=toy clip.pretrained=demo for the toy world")
    from mav_train.components.clip_source import resolve_clip_config

    cfg = OmegaConf.create({"clip": OmegaConf.structured(ClipConfig(model=model, pretrained=pretrained)),
                            "cache_dir": None})
    try:
        return FrozenCLIP(resolve_clip_config(cfg))
    except (FileNotFoundError, TypeError) as err:
        raise ValueError(f"clipsim: {err}") from err


@torch.no_grad()
def item_similarity(clip: FrozenCLIP, pixels: torch.Tensor, caption: str, batch_size: int) -> float:
    """Mean over the frames ``t h w 3`` (uint8) of the cosine between each frame's and the caption's embedding."""
    text = F.normalize(clip.encode_text([caption]).pooled.float(), dim=-1)[0]
    images = rearrange(pixels, "t h w c -> t c h w").float() / 127.5 - 1.0
    sims = []
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start:start + batch_size].to(text.device)
        sims.append(F.normalize(clip.encode_image(chunk).float(), dim=-1) @ text)
    return float(torch.cat(sims).mean())


def clipsim(s: EvalSettings, clip: FrozenCLIP | None = None) -> MetricResult:
    """CLIPSIM of the captioned samples in ``s.samples`` (``clip`` built from ``s`` when not given)."""
    clip = clip if clip is not None else build_clip(s.clip_model, s.clip_pretrained)
    clip = clip.to(torch.device(s.device))
    source, scores = MediaSource(s.samples), []
    with tqdm(total=s.num_fake, desc="clipsim", unit="item", leave=False, dynamic_ncols=True) as bar:
        for item in source:
            if s.num_fake is not None and len(scores) >= s.num_fake:
                break
            if item.caption is None:
                source.skipped["missing_caption"] += 1
                continue
            pixels = item.pixels if item.is_video else item.pixels[None]
            pixels = torch.from_numpy(pixels[frame_indices(pixels.shape[0], s.frames_per_video)])  # a copy
            scores.append(item_similarity(clip, pixels, item.caption, s.batch_size))
            bar.update(1)
    if not scores:
        raise ValueError(f"clipsim: no captioned samples in {s.samples} (skipped: {dict(source.skipped) or 'none'})")
    return MetricResult("clipsim", float(sum(scores) / len(scores)), counts={"fake": len(scores)},
                        skipped={"fake": dict(source.skipped)})

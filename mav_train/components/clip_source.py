"""Which CLIP a run uses, and proof that two stages used the same one.

``clip.pretrained: demo`` names the toy CLIP that ``recipes/demo/clip.yaml`` trains on the toy world; it is
trained into the cache on first use (:mod:`mav_train.components.demo_clip`) and resolved here to its weights file.
Every checkpoint stores the fingerprint of its CLIP's weights under :data:`CLIP_FINGERPRINT_KEY`; a stage that
starts from, or chains after, a checkpoint trained with another CLIP is refused in one line.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from mav_train.config.schema import ClipConfig
from mav_train.nn.encoders import FrozenCLIP

CLIP_FINGERPRINT_KEY = "clip_fingerprint"


def resolve_clip_config(cfg: DictConfig) -> ClipConfig:
    """``cfg.clip`` as a plain :class:`ClipConfig`, with ``pretrained: demo`` replaced by the toy CLIP's file
    (trained on first use)."""
    clip: ClipConfig = OmegaConf.to_object(cfg.clip) if isinstance(cfg.clip, DictConfig) else cfg.clip
    if clip.pretrained != "demo":
        return clip
    if clip.model != "toy":
        raise ValueError(f"clip.pretrained=demo is the toy CLIP: it needs clip.model=toy, got {clip.model!r}")
    from mav_train.components.demo_clip import ensure_demo_clip

    path = ensure_demo_clip(cfg.get("cache_dir"))
    return ClipConfig(model="toy", pretrained=str(path), seed=clip.seed, tokenizer=clip.tokenizer)


def build_frozen_clip(cfg: DictConfig) -> FrozenCLIP:
    """The frozen CLIP of a run config (``pretrained: demo`` resolved)."""
    return FrozenCLIP(resolve_clip_config(cfg))


def check_clip_fingerprint(checkpoint: dict, expected: str, what: str) -> None:
    """Refuse ``checkpoint`` (named ``what`` in the message) when it was trained with another CLIP than the one
    whose fingerprint is ``expected``. Checkpoints written before fingerprints existed pass."""
    theirs = checkpoint.get(CLIP_FINGERPRINT_KEY)
    if theirs is not None and theirs != expected:
        raise ValueError(f"{what} was trained with CLIP {theirs}, but this run's CLIP is {expected}: the conditioning "
                         "embeddings would not match (use the same clip.model / clip.pretrained / clip.seed)")

"""Zero-shot reading of the toy world by a CLIP: does it prefer an image's caption over every caption that
differs from it in exactly one attribute?"""

from __future__ import annotations

import numpy as np
import torch

from datamodules.toy_world import one_attribute_variants, parse_caption
from mav_train.nn.encoders import FrozenCLIP


@torch.no_grad()
def toy_zero_shot(clip: FrozenCLIP, images: torch.Tensor, captions: list[str]) -> dict[str, float]:
    """Per attribute, the fraction of images whose own caption is more similar to the image than each of the
    captions that differ from it in that attribute alone. ``images``: ``b 3 h w`` in [-1, 1]."""
    return embedding_zero_shot(clip, clip.encode_image(images, normalize=True), captions)


@torch.no_grad()
def embedding_zero_shot(clip: FrozenCLIP, image_emb: torch.Tensor, captions: list[str]) -> dict[str, float]:
    """:func:`toy_zero_shot` for given image embeddings ``(b, d)`` (e.g. the prior's predictions)."""
    image_emb = torch.nn.functional.normalize(image_emb.float(), dim=-1)
    hits: dict[str, list[bool]] = {}
    for i, caption in enumerate(captions):
        label = parse_caption(caption)
        for attribute, variants in one_attribute_variants(label).items():
            texts = [label.text()] + [v.text() for v in variants]
            sims = clip.encode_text(texts, normalize=True).pooled @ image_emb[i]
            hits.setdefault(attribute, []).append(bool(sims[0] > sims[1:].max()))
    return {attribute: float(np.mean(v)) for attribute, v in sorted(hits.items())}

"""Two readings of a toy-world decoder's shapes that see more than the judge's shape accuracy.

The judge names the shape whose area-matched template fits a sample best (``toy_reader``). A decoder that draws soft
blobs is read as drawing circles, so its shape accuracy sits at the share of circles whether or not the blob leans
toward the right outline. These readings separate the two:

- ``behind_circles``: for samples whose true shape is not a circle, is the best-fitting of the four non-circle
  templates the true one? Chance is 1/4; a decoder that knows the shape but draws it softly scores above it.
- ``shape_swap``: does the decoder draw the shape it is told? Held-out scenes are rendered as each of the five
  shapes (everything else equal), embedded by the decoder's CLIP, and sampled from one noise draw per scene; per
  shape asked: how often the judge reads that shape, how far the embedding moved from the circle's (cosine) and how
  far the sample moved from the circle's sample (mean absolute difference on [-1, 1]).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from datamodules.heldout import heldout_scenes, scene_images
from datamodules.toy_world import SHAPES, caption_of, parse_caption
from mav_train.evaluation.toy_judge import score_images, to_uint8
from mav_train.evaluation.toy_reader import read_image, shape_fits


def template_fits(frame: np.ndarray) -> dict[str, float] | None:
    """Soft IoU of each shape's area-matched template with a ``h w 3`` uint8 frame's shape mask (the judge's fit),
    or None when the judge cannot read the frame."""
    reading = read_image(frame)
    if not reading.readable:
        return None
    size = frame.shape[0]
    fx, fy = ((c + 0.5) / size for c in reading.centroid)
    return {shape: iou for shape, (iou, _) in shape_fits(reading.mask, fx, fy, reading.area).items()}


def behind_circles(images: Tensor, captions: list[str]) -> dict[str, float | int]:
    """Of the readable ``images`` (``b 3 h w`` in [-1, 1]) whose caption's shape is not a circle: the share whose best
    non-circle template is the true shape (``share``; chance 0.25), out of ``n``."""
    hits = n = 0
    for frame, caption in zip(to_uint8(images), captions, strict=True):
        truth = parse_caption(caption).shape
        fits = template_fits(frame)
        if truth == "circle" or fits is None:
            continue
        n += 1
        hits += max((s for s in SHAPES if s != "circle"), key=fits.__getitem__) == truth
    return {"share": hits / n if n else 0.0, "n": n, "chance": 1.0 / (len(SHAPES) - 1)}


@torch.no_grad()
def shape_swap(module, num: int = 16, seed: int = 1, noise_seed: int = 0) -> dict[str, dict[str, float]]:
    """Per shape asked: ``read`` (the judge reads that shape), ``readable``, ``embedding_cos`` (to the same scene
    drawn as a circle) and ``sample_change`` (mean |sample - the circle's sample|), for ``num`` held-out scenes
    (``seed``), every shape sampled from the same noise (``noise_seed``). ``module``: a decoder component
    (``clip.encode_image``, ``sample``, ``cfg.data.resolution``)."""
    from mav_train.components.base import Conditions

    resolution = module.cfg.data.resolution
    scenes = heldout_scenes(num, seed)
    noise = torch.randn((num, 3, resolution, resolution), generator=torch.Generator().manual_seed(noise_seed))
    embeddings, samples, captions = {}, {}, {}
    for shape in SHAPES:
        variants = [dataclasses.replace(scene, shape=shape) for scene in scenes]
        captions[shape] = [caption_of(v) for v in variants]
        embeddings[shape] = module.clip.encode_image(scene_images(variants, resolution).to(module.device))
        samples[shape] = module.sample(Conditions(image_emb=embeddings[shape]), tuple(noise.shape),
                                       noise=noise.to(module.device),
                                       generator=torch.Generator().manual_seed(noise_seed + 1))
    report = {}
    for shape in SHAPES:
        scores = score_images(samples[shape].cpu(), captions[shape]).as_dict()
        cosine = F.cosine_similarity(embeddings[shape], embeddings["circle"], dim=-1).mean()
        report[shape] = {"read": float(scores["shape"]), "readable": float(scores["readable"]),
                         "embedding_cos": float(cosine),
                         "sample_change": float((samples[shape] - samples["circle"]).abs().mean())}
    return report

"""A linear probe of one toy-world attribute on CLIP image embeddings, independent of the CLIP's text tower.

Fit on the embeddings of freshly rendered toy images (their true labels), then read on any embeddings of the same
CLIP: for example the prior's predictions for prompts, to ask whether what the prior outputs carries the shape
whatever the decoder later makes of it. The zero-shot reading (``clip_zero_shot``) asks the same through the text
tower, which the prior was trained to agree with; the probe asks it through image embeddings only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.toy_world import COLORS, SHAPES, caption_of, draw_scene, parse_caption, random_scene
from mav_train.nn.encoders import FrozenCLIP

CLASSES = {"shape": SHAPES, "color": tuple(name for name, _ in COLORS)}


@dataclass(frozen=True)
class AttributeProbe:
    """Softmax regression from unit-normalised, then standardised (per dimension, statistics of the fit)
    embeddings to the classes of ``attribute``."""

    attribute: str
    mean: torch.Tensor  # (d,)
    std: torch.Tensor  # (d,)
    weight: torch.Tensor  # (d, classes)
    bias: torch.Tensor  # (classes,)
    held_out_accuracy: float  # on true images' embeddings not used for the fit

    @torch.no_grad()
    def accuracy(self, embeddings: torch.Tensor, captions: list[str]) -> float:
        """Share of ``embeddings`` (``b d``) whose predicted class is the one their caption names."""
        return float((self._logits(embeddings).argmax(1) == _labels(self.attribute, captions)).float().mean())

    def _logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return (F.normalize(embeddings.float(), dim=-1) - self.mean) / self.std @ self.weight + self.bias


def fit_probe(clip: FrozenCLIP, attribute: str = "shape", num: int = 8192, seed: int = 7, resolution: int = 32,
              l2: float = 1e-4) -> AttributeProbe:
    """Fit on ``num`` random toy images (3/4; the rest measure ``held_out_accuracy``), drawn with ``seed``."""
    if attribute not in CLASSES:
        raise ValueError(f"probe attribute must be one of {sorted(CLASSES)}, got {attribute!r}")
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, moving=False) for _ in range(num)]
    captions = [caption_of(s) for s in scenes]  # labels come from captions, as in AttributeProbe.accuracy
    images = torch.from_numpy(np.stack([np.asarray(draw_scene(s, resolution)) for s in scenes]))
    images = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        emb = torch.cat([clip.encode_image(images[i:i + 512]) for i in range(0, num, 512)]).float()
    split = num * 3 // 4
    unit = F.normalize(emb[:split], dim=-1)
    mean, std = unit.mean(0), unit.std(0).clamp_min(1e-8)
    x = (unit - mean) / std
    y = _labels(attribute, captions[:split])
    weight = torch.zeros(x.shape[1], len(CLASSES[attribute]), requires_grad=True)
    bias = torch.zeros(len(CLASSES[attribute]), requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    probe = AttributeProbe(attribute, mean, std, weight.detach(), bias.detach(), float("nan"))
    return replace(probe, held_out_accuracy=probe.accuracy(emb[split:], captions[split:]))


def _labels(attribute: str, captions: list[str]) -> torch.Tensor:
    """Class indices of ``attribute`` as each toy caption names it."""
    return torch.tensor([CLASSES[attribute].index(getattr(parse_caption(c), attribute)) for c in captions])

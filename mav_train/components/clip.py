"""C_x for the toy world: a small open_clip CLIP trained contrastively on image-text shards (``recipes/demo/clip``).

Make-A-Video uses a frozen pretrained CLIP. Pretrained weights cannot be downloaded everywhere, and a random CLIP
embeds meaning poorly, so the demos train their own on the toy world; every demo recipe then uses it frozen
(``clip.pretrained: demo``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from typing_extensions import override

from datamodules.toy_world import CAPTION_ATTRIBUTES, one_attribute_variants, parse_caption
from mav_train.components.base import TrainableComponent
from mav_train.nn.encoders import build_clip_model, clip_fingerprint, clip_normalisation, clip_preprocess
from mav_train.nn.token_cache import CachedTokenizer

EXPORT_NAME = "open_clip_weights.pt"  # written into the run directory at the end of training


class ClipComponent(TrainableComponent):
    """Trains ``clip.model`` (seeded random init) with open_clip's ``ClipLoss`` and its learnable logit scale.

    ``model.hard_negatives`` > 0 adds, per toy-world caption, that many captions that differ from it in exactly
    one attribute (drawn from ``model.hard_negative_attributes``) as extra negatives for its image (a
    cross-entropy over [true caption, negatives]). In-batch negatives almost always differ in colour, so without
    them the model rarely has to read shape, position or size. Captions that are not toy-world captions get no
    hard negatives.

    At the end of training the weights are exported as an open_clip state dict (:data:`EXPORT_NAME` in the run
    directory) that ``clip.pretrained=PATH`` loads.
    """

    def __init__(self, cfg, clip=None):
        super().__init__(cfg, clip)
        self.network = build_clip_model(self.cfg.clip)
        mean, std = clip_normalisation(self.network)
        self.register_buffer("image_mean", mean, persistent=False)
        self.register_buffer("image_std", std, persistent=False)
        self.tokenizer = CachedTokenizer(
            open_clip.get_tokenizer(self.cfg.clip.tokenizer, context_length=self.network.context_length))
        self.loss_fn = open_clip.ClipLoss()

    @override
    def clip_fingerprint(self) -> str:
        return clip_fingerprint(self.network)

    @override
    def setup(self, stage: str) -> None:
        super().setup(stage)
        # Under DDP every rank's features are gathered, so each image is contrasted with the global batch.
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1:
            self.loss_fn = open_clip.ClipLoss(gather_with_grad=True, rank=self.global_rank, world_size=world)

    def image_size(self) -> int:
        size = self.network.visual.image_size
        return int(size if isinstance(size, int) else size[0])

    def encode(self, images: Tensor, captions: list[str]) -> tuple[Tensor, Tensor]:
        """Normalised image ``(b, d)`` and text ``(b', d)`` features of ``b c h w`` images in [-1, 1]."""
        x = clip_preprocess(images, self.image_size(), self.image_mean, self.image_std)
        image = self.network.encode_image(x, normalize=True)
        text = self.network.encode_text(self.tokenizer(list(captions)).to(self.device), normalize=True)
        return image, text

    @override
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        captions = list(batch["caption"])
        image, text = self.encode(batch["clip_image"], captions)
        scale = self.network.logit_scale.exp()
        loss = self.loss_fn(image, text, scale)
        self.log("train/contrastive_loss", loss, on_step=True, batch_size=len(captions))
        if self.cfg.model.hard_negatives > 0:
            rng = np.random.default_rng([self.cfg.trainer.seed, self.global_rank, self.global_step])
            hard = self.hard_negative_loss(image, text, captions, rng)
            self.log("train/hard_negative_loss", hard, on_step=True, batch_size=len(captions))
            loss = loss + hard
        self.log("train/loss", loss, prog_bar=True, on_step=True, batch_size=len(captions))
        self.log("train/logit_scale", scale, on_step=True, batch_size=len(captions))
        self._log_skips(batch)
        return loss

    def hard_negative_loss(self, image: Tensor, text: Tensor, captions: list[str],
                           rng: np.random.Generator) -> Tensor:
        """Cross-entropy of each image over its caption and ``model.hard_negatives`` one-attribute variants."""
        k = self.cfg.model.hard_negatives
        attributes = list(self.cfg.model.hard_negative_attributes)  # once: a config lookup per caption cost 3 ms a step
        rows, negatives = [], []
        for i, caption in enumerate(captions):
            picked = pick_variants(caption, k, rng, attributes)
            if picked:
                rows.append(i)
                negatives.extend(picked)
        if not rows:
            return image.new_zeros(())
        neg = self.network.encode_text(self.tokenizer(negatives).to(self.device), normalize=True)
        neg = rearrange(neg, "(b k) d -> b k d", k=k)
        rows_t = torch.tensor(rows, device=image.device)
        img, txt = image[rows_t], text[rows_t]
        logits = torch.cat([(img * txt).sum(-1, keepdim=True), torch.einsum("bd,bkd->bk", img, neg)], dim=1)
        logits = self.network.logit_scale.exp() * logits
        return F.cross_entropy(logits, torch.zeros(len(rows), dtype=torch.long, device=image.device))

    @override
    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        captions = list(batch["caption"])
        image, text = self.encode(batch["clip_image"], captions)
        loss = self.loss_fn(image, text, self.network.logit_scale.exp())
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=len(captions))
        return loss

    @override
    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            export_open_clip(self.network, Path(self.trainer.default_root_dir) / EXPORT_NAME)


@functools.lru_cache(maxsize=1 << 16)
def caption_variants(caption: str) -> dict[str, tuple[str, ...]] | None:
    """The one-attribute variants of a toy-world caption as text, by attribute; None for another caption.
    Kept per caption (the 20,000 demo images carry about 9,700 captions: 37 MB): parsing them again cost
    ~6 ms of every 96-caption CLIP step, 0.8 ms with the cache."""
    try:
        variants = one_attribute_variants(parse_caption(caption))
    except ValueError:
        return None
    return {attribute: tuple(v.text() for v in options) for attribute, options in variants.items()}


def pick_variants(caption: str, k: int, rng: np.random.Generator,
                  attributes: Sequence[str] = CAPTION_ATTRIBUTES) -> list[str]:
    """``k`` captions, each differing from ``caption`` in one of ``attributes`` (distinct attributes while they
    last; "position" also stands for a moving shape's direction); empty for a caption that is not a toy-world
    caption."""
    variants = caption_variants(caption)
    if variants is None:
        return []
    keys = [a if a in variants else "direction" for a in attributes]
    chosen = range(k) if k == len(keys) else rng.choice(len(keys), size=k, replace=k > len(keys))
    return [variants[keys[a]][rng.integers(len(variants[keys[a]]))] for a in chosen]


def export_open_clip(model: torch.nn.Module, path: Path) -> Path:
    """Write ``model``'s state dict where ``open_clip.load_checkpoint`` (and ``clip.pretrained=PATH``) reads it,
    atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(path)
    return path

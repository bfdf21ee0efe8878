"""The prior P: CLIP text (pooled x_e + per-token states x̂) → CLIP image embedding y_e (DALL-E 2's diffusion prior)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from omegaconf import DictConfig
from torch import Tensor
from typing_extensions import override

from mav_train.components.base import Conditions, DiffusionComponent
from mav_train.diffusion.guidance import DropModelFn
from mav_train.nn.encoders import FrozenCLIP, TextEncoding
from mav_train.nn.prior import PriorTransformer, TextPrefix


def select_candidates(candidates: Tensor, text_emb: Tensor) -> Tensor:
    """DALL-E 2's candidate choice: of ``candidates (b, k, d)`` keep, per row, the one with the highest cosine
    similarity to ``text_emb (b, d)``. Returns ``(b, d)``."""
    sims = torch.einsum("bkd,bd->bk", F.normalize(candidates, dim=-1), F.normalize(text_emb, dim=-1))
    best = sims.argmax(dim=1)
    return candidates[torch.arange(candidates.shape[0], device=candidates.device), best]


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity of ``(b, d)`` tensors: ``(b,)``."""
    return F.cosine_similarity(a.float(), b.float(), dim=-1)


class Prior(DiffusionComponent):
    """P: a diffusion model over CLIP image embeddings, conditioned on the CLIP text encoding of the caption.

    The network (:class:`~mav_train.nn.prior.PriorTransformer`) predicts x0 by default. Image embeddings are
    normalised for diffusion (``prior.normalization``: ``l2`` = unit norm × √d, or ``standardize`` = per-dimension
    dataset mean/std) and mapped back after sampling; the statistics (mean, std and the mean embedding norm,
    which the ``l2`` mode restores) are buffers, so they travel in every checkpoint. They are computed once, at
    the start of the first fit, over ``prior.stats_samples`` training embeddings. Text is dropped
    ``model.p_drop_text`` of the time (learned null tokens) for classifier-free guidance.
    """

    def __init__(self, cfg: DictConfig | dict, clip: FrozenCLIP | None = None):
        super().__init__(cfg, clip)
        if self.cfg.diffusion.clip_denoised:
            raise ValueError("the prior needs diffusion.clip_denoised=false: clamping x0 to [-1, 1] destroys "
                             "normalised CLIP embeddings")
        d = self.cfg.prior.embed_dim
        self.register_buffer("emb_mean", torch.zeros(d))
        self.register_buffer("emb_std", torch.ones(d))
        self.register_buffer("emb_norm", torch.ones(()))
        self.register_buffer("stats_count", torch.zeros((), dtype=torch.long))
        self.truncated_captions = 0

    @override
    def build_network(self) -> PriorTransformer:
        return PriorTransformer(self.cfg.prior)

    # ----- normalisation ------------------------------------------------------------------------------------
    def set_statistics(self, image_emb: Tensor) -> None:
        """Mean, std and mean l2 norm of raw image embeddings ``(n, d)`` (all of a rank's or gathered)."""
        x = image_emb.double()
        self.emb_mean.copy_(x.mean(0))
        self.emb_std.copy_(x.std(0).clamp(min=1e-6) if x.shape[0] > 1 else torch.ones_like(self.emb_std))
        self.emb_norm.copy_(x.norm(dim=-1).mean())
        self.stats_count.fill_(x.shape[0])

    def normalize(self, image_emb: Tensor) -> Tensor:
        """Raw CLIP image embedding ``(b, d)`` → the diffusion's x0 ``(b, d)`` (elements ~N(0, 1))."""
        x = image_emb.float()
        if self.cfg.prior.normalization == "l2":
            return F.normalize(x, dim=-1) * math.sqrt(x.shape[-1])
        return (x - self.emb_mean) / self.emb_std

    def denormalize(self, x0: Tensor) -> Tensor:
        """Inverse of :meth:`normalize` (``l2``: the direction, at the dataset's mean norm)."""
        if self.cfg.prior.normalization == "l2":
            return F.normalize(x0.float(), dim=-1) * self.emb_norm
        return x0.float() * self.emb_std + self.emb_mean

    # ----- batches ------------------------------------------------------------------------------------------
    def encode_text(self, captions: list[str]) -> TextEncoding:
        """CLIP text encoding; captions longer than the context are truncated by the tokenizer and counted."""
        context = self.clip.context_length
        tokenizer = getattr(self.clip.tokenizer, "encode", None)
        if tokenizer is not None and self.training:
            self.truncated_captions += sum(len(tokenizer(c)) + 2 > context for c in captions)
        return self.clip.encode_text(list(captions))

    def embeddings(self, batch: dict) -> tuple[Tensor, TextEncoding, Tensor]:
        """(raw image embedding, text encoding, pooled text embedding) of a batch of image shards (image embeddings
        computed now) or of an embedding folder (precomputed ``image_emb`` / ``text_emb``)."""
        if "image_emb" in batch:
            image_emb = batch["image_emb"].float()
        else:
            image_emb = self.clip.encode_image(batch["clip_image"]).float()
        text = self.encode_text(list(batch["caption"]))
        text_emb = batch["text_emb"].float() if "text_emb" in batch else text.pooled.float()
        return image_emb, text, text_emb

    @staticmethod
    def conditions(text: TextEncoding, text_emb: Tensor) -> Conditions:
        return Conditions(text_states=text.states, text_mask=text.mask, kwargs={"text_emb": text_emb})

    @override
    def prepare_batch(self, batch: dict) -> tuple[Tensor, Conditions]:
        image_emb, text, text_emb = self.embeddings(batch)
        return self.normalize(image_emb), self.conditions(text, text_emb)

    @override
    def condition_dropout(self, cond: Conditions, b: int) -> dict[str, Tensor]:
        drop_text = torch.rand(b, device=self.device) < self.cfg.model.p_drop_text
        return {"drop_image": torch.zeros_like(drop_text), "drop_text": drop_text}

    # ----- fit ----------------------------------------------------------------------------------------------
    def check_clip(self) -> None:
        """The configured CLIP must produce what the network was built for (one line naming both)."""
        p, clip = self.cfg.prior, self.clip
        pairs = {"embed_dim": (p.embed_dim, clip.embed_dim), "text_dim": (p.text_dim, clip.text_width),
                 "text_tokens": (p.text_tokens, clip.context_length)}
        for name, (ours, theirs) in pairs.items():
            if ours != theirs:
                raise ValueError(f"prior.{name}={ours} does not match the configured CLIP "
                                 f"({self.cfg.clip.model}: {theirs})")

    @override
    def on_fit_start(self) -> None:
        self.check_clip()
        datamodule = getattr(self.trainer, "datamodule", None)
        check = getattr(datamodule, "check_embed_dim", None)
        if check is not None:
            check(self.cfg.prior.embed_dim, f"prior.embed_dim of the configured CLIP ({self.cfg.clip.model})")
        if int(self.stats_count) == 0 and datamodule is not None:
            self.set_statistics(self._gather_statistics_sample(datamodule))

    @torch.no_grad()
    def _gather_statistics_sample(self, datamodule) -> Tensor:
        """``prior.stats_samples`` raw image embeddings from the ranks' data (the same number from each rank, so
        that they can be gathered), gathered over the ranks."""
        need = -(-self.cfg.prior.stats_samples // self.trainer.world_size)
        rows, seen = [], 0
        for batch in datamodule.statistics_loader():
            batch = datamodule.on_after_batch_transfer(self.trainer.strategy.batch_to_device(batch), 0)
            if "image_emb" in batch:
                emb = batch["image_emb"].float()
            else:
                emb = self.clip.encode_image(batch["clip_image"]).float()
            rows.append(emb)
            seen += emb.shape[0]
            if seen >= need:
                break
        local = torch.cat(rows)[:need]
        if self.trainer.world_size > 1:
            local = rearrange(self.all_gather(local), "w n d -> (w n) d")
        return local

    @override
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("data/truncated_captions", float(self.truncated_captions), on_step=True,
                 batch_size=len(batch["caption"]))
        return loss

    @override
    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        """Validation loss, plus what prior trainers watch (DALLE2-pytorch): cos(predicted, true image),
        cos(predicted, text) against the baseline cos(text, true image), and cos(predicted, image of the next
        row) (an unrelated caption's image: should be far lower)."""
        loss = super().validation_step(batch, batch_idx)
        image_emb, text, text_emb = self.embeddings(batch)
        generator = torch.Generator(device=self.device).manual_seed(2000 + batch_idx)
        pred = self.sample_embeddings(text, text_emb, generator=generator, steps=self.cfg.sampling.steps,
                                      guidance_scale=self.cfg.sampling.guidance_scale)
        b = image_emb.shape[0]
        metrics = {
            "val/cos_pred_image": cosine(pred, image_emb),
            "val/cos_pred_text": cosine(pred, text_emb),
            "val/cos_text_image": cosine(text_emb, image_emb),
            "val/cos_pred_unrelated_image": cosine(pred, image_emb.roll(1, dims=0)),
        }
        for name, value in metrics.items():
            self.log(name, value.mean(), sync_dist=True, batch_size=b, prog_bar=name == "val/cos_pred_image")
        return loss

    # ----- sampling -----------------------------------------------------------------------------------------
    @override
    def network_fn(self, net: torch.nn.Module, cond: Conditions, b: int, estimate: dict | None = None) -> DropModelFn:
        """The base's guided network function, with the text part of the sequence computed once per drop pattern
        (conditional and unconditional rows) and reused at every step (``PriorTransformer.text_prefix``). The prior
        never self-conditions (refused at load), so ``estimate`` is always None."""
        kwargs = cond.network_kwargs()
        if not isinstance(net, PriorTransformer) or kwargs["text_states"] is None:
            return super().network_fn(net, cond, b, estimate)
        prefixes: dict[tuple[bool, ...], TextPrefix] = {}

        def fn(x_t: Tensor, t: Tensor, drop: Tensor) -> Tensor:
            key = tuple(drop.tolist())
            if key not in prefixes:
                reps = x_t.shape[0] // b
                states, mask, emb = (repeat(kwargs[k], "b ... -> (r b) ...", r=reps)
                                     for k in ("text_states", "text_mask", "text_emb"))
                prefixes[key] = net.text_prefix(states, mask, emb, drop_text=drop | cond.always_drop_text)
            return net(x_t, t, prefix=prefixes[key])

        return fn

    @torch.no_grad()
    def sample_embeddings(self, text: TextEncoding, text_emb: Tensor, *, num_candidates: int | None = None,
                          steps: int | None = None, guidance_scale: float | None = None,
                          generator: torch.Generator | None = None) -> Tensor:
        """CLIP image embeddings ``(b, d)`` (raw scale, what the decoder is conditioned on) for a text encoding:
        ``num_candidates`` DDIM samples per row with classifier-free guidance, the one most similar to the text
        embedding kept."""
        k = self.cfg.prior.num_candidates if num_candidates is None else num_candidates
        if k < 1:
            raise ValueError(f"num_candidates must be >= 1, got {k}")
        b, d = text_emb.shape
        tiled = TextEncoding(pooled=text.pooled, tokens=text.tokens,
                             states=repeat(text.states, "b n w -> (b k) n w", k=k),
                             mask=repeat(text.mask, "b n -> (b k) n", k=k))
        cond = self.conditions(tiled, repeat(text_emb, "b d -> (b k) d", k=k))
        x0 = self.sample(cond, (b * k, d), guidance_scale=guidance_scale, steps=steps, generator=generator)
        candidates = rearrange(self.denormalize(x0), "(b k) d -> b k d", k=k)
        return select_candidates(candidates, text_emb)

    @torch.no_grad()
    def generate(self, prompts: list[str], *, num_candidates: int | None = None, steps: int | None = None,
                 guidance_scale: float | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Prompts → CLIP image embeddings ``(b, d)``."""
        text = self.clip.encode_text(list(prompts))
        return self.sample_embeddings(text, text.pooled.float(), num_candidates=num_candidates, steps=steps,
                                      guidance_scale=guidance_scale, generator=generator)

    @override
    def sample_from_batch(self, batch: dict, num: int, generator: torch.Generator | None = None,
                          steps: int | None = None, guidance_scale: float | None = None) -> Tensor:
        """Image embeddings ``(num, d)`` for the first ``num`` captions of a batch."""
        return self.generate(list(batch["caption"])[:num], steps=steps, guidance_scale=guidance_scale,
                             generator=generator)

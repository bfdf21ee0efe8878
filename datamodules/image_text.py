"""Image-text pairs from img2dataset WebDataset shards (prior, decoder, super-resolution; images for D^t)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import torch
from PIL import Image
from typing_extensions import override

from datamodules.base import IMAGE_TAG, ShardDataModule
from datamodules.embeddings import EmbeddingLookup
from datamodules.filters import FieldFilter, first_rejection
from datamodules.loader import StreamLoader
from datamodules.sharding import expand_shards, resolve_rank_world
from datamodules.skips import IMAGE_REASONS, SkipCounter, SkipSample
from datamodules.stream import ShardStream, StreamSpec
from datamodules.transforms import image_to_rgb, square_image

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def sample_meta(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample's json as a dict ({} when absent); unparsable json is a decode error."""
    if "json" not in sample:
        return {}
    try:
        meta = json.loads(sample["json"])
    except (ValueError, UnicodeDecodeError) as error:
        raise SkipSample("decode_error", f"bad json: {error}") from error
    if not isinstance(meta, dict):
        raise SkipSample("decode_error", f"json is a {type(meta).__name__}, not an object")
    return meta


def sample_caption(sample: dict[str, Any], meta: dict[str, Any]) -> str:
    """The ``.txt`` caption, else the json ``caption``; missing -> missing_field, blank -> empty_caption."""
    if "txt" in sample:
        caption = sample["txt"].decode("utf-8", errors="replace")
    elif isinstance(meta.get("caption"), str):
        caption = meta["caption"]
    else:
        raise SkipSample("missing_field", "no .txt and no json caption")
    caption = caption.strip()
    if not caption:
        raise SkipSample("empty_caption")
    return caption


class ImageSampleDecoder:
    """Raw sample -> ``image`` (3, R, R), ``clip_image`` (3, C, C) as uint8, ``caption``, ``key``.

    Grayscale, CMYK, palette and RGBA images are converted to RGB (alpha onto white) and kept; images whose
    short side is below ``min_image_size`` are skipped (``too_small``). Images whose short side is below
    ``resolution`` (the training target, e.g. a super-resolution net's output size) are upscaled and counted
    (``upscaled``) or, with ``small_images="skip"``, skipped (``below_resolution``).
    """

    reasons = IMAGE_REASONS
    deterministic = True  # the same sample always decodes to the same item: data.memory_cache_mb may keep it

    def __init__(
        self, resolution: int, clip_resolution: int, min_image_size: int, filters: tuple[FieldFilter, ...],
        holdout_pairs: tuple[str, ...] = (),
        embeddings: EmbeddingLookup | None = None,
        small_images: str = "upscale",
    ) -> None:
        if small_images not in ("upscale", "skip"):
            raise ValueError(f"small_images must be 'upscale' or 'skip', got {small_images!r}")
        self.small_images = small_images
        self.resolution = resolution
        self.clip_resolution = clip_resolution
        self.min_image_size = min_image_size
        self.filters = filters
        self.holdout_pairs = tuple(f" {pair.strip()} " for pair in holdout_pairs)
        self.embeddings = embeddings

    def decode(
        self, sample: dict[str, Any], rng: np.random.Generator, counter: SkipCounter
    ) -> dict[str, Any]:
        extension = next((ext for ext in IMAGE_EXTENSIONS if ext in sample), None)
        if extension is None:
            raise SkipSample("missing_field", f"no image among {IMAGE_EXTENSIONS}, has {sorted(sample)}")
        meta = sample_meta(sample)
        caption = sample_caption(sample, meta)
        held_out = next((pair for pair in self.holdout_pairs if pair in f" {caption} "), None)
        if held_out is not None:
            raise SkipSample("filtered", f"held-out pair '{held_out.strip()}' (data.holdout_pairs)")
        rejection = first_rejection(self.filters, meta)
        if rejection is not None:
            raise SkipSample("filtered", rejection)
        try:
            image = Image.open(io.BytesIO(sample[extension]))
            image.load()
        except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            raise SkipSample("decode_error", repr(error)[:200]) from error
        if min(image.size) < self.min_image_size:
            raise SkipSample("too_small", f"{image.size} < min_image_size {self.min_image_size}")
        if min(image.size) < self.resolution:
            detail = f"{image.size} < data.resolution {self.resolution}"
            if self.small_images == "skip":
                raise SkipSample("below_resolution", detail)
            counter.count("upscaled", str(sample["__key__"]), detail, warn=False)
        rgb = image_to_rgb(image)
        pixels = square_image(rgb, self.resolution)
        same = self.clip_resolution == self.resolution  # then one resize serves both entries
        item = {
            "image": pixels,
            "clip_image": pixels if same else square_image(rgb, self.clip_resolution),
            "caption": caption,
            "key": str(sample["__key__"]),
        }
        if self.embeddings is not None:
            item["image_emb"] = self.embeddings.image_emb(str(meta.get("key", sample["__key__"])))
        return item

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "image": torch.stack([item["image"] for item in items]),
            "clip_image": torch.stack([item["clip_image"] for item in items]),
            "caption": [item["caption"] for item in items],
            "key": [item["key"] for item in items],
            **({"image_emb": torch.stack([item["image_emb"] for item in items])} if "image_emb" in items[0] else {}),
        }


class ImageTextDataModule(ShardDataModule):
    """img2dataset shards -> batches ``{"image": (b,3,R,R), "clip_image": (b,3,C,C), "caption": list[str],
    "key": list[str], "skips": {reason: int}, "worker_id": int}`` with uint8 pixels in [0, 255], which
    :meth:`on_after_batch_transfer` (after the batch is on the device) makes float32 in [-1, 1].

    ``clip_image`` is the same picture at ``clip_resolution``; CLIP's mean/std normalisation is the
    encoder's business. See :mod:`datamodules.base` for splitting, epochs and resume.
    """

    kind = "image_text"
    demo_recipe = "demo/decoder"

    def decoder(self) -> ImageSampleDecoder:
        cfg = self.cfg
        lookup = EmbeddingLookup(cfg.embeddings) if cfg.embeddings is not None else None
        return ImageSampleDecoder(cfg.resolution, self.clip_resolution, cfg.min_image_size, self.filters,
                                  tuple(cfg.holdout_pairs), lookup, cfg.small_images)

    @override
    def demo_kinds(self) -> tuple[str, ...]:
        return ("images",)

    @override
    def train_shard_spec(self) -> str:
        return self.cfg.shards if self.cfg.shards is not None else self.demo_paths().images

    @override
    def train_dataloader(self) -> StreamLoader:
        stream = ShardStream(self.stream_spec(train=True), self.decoder(), start=self.position.start)
        return self.loader(stream, train=True)

    def statistics_loader(self) -> StreamLoader:
        """Training batches from the start of the stream, not counted as consumed (the prior's embedding
        statistics are computed over them before training)."""
        return self.loader(ShardStream(self.stream_spec(train=True), self.decoder()), train=False)

    @override
    def val_dataloader(self) -> StreamLoader | list:
        if self.cfg.val_samples == 0:
            return []
        return self.loader(ShardStream(self.stream_spec(train=False), self.decoder()), train=False)


def endless_image_stream(
    datamodule: ShardDataModule,
    shards: str,
    field: str,
    batch_size: int,
    start: torch.Tensor | None,
    skip_prefix: str = "image/",
) -> ShardStream:
    """An endless shuffled image-text stream (joint image+video batches), seeded apart from the main one."""
    cfg = datamodule.cfg
    rank, world = resolve_rank_world()
    spec = StreamSpec(
        shards=tuple(expand_shards(shards, field)),
        batch_size=batch_size,
        batches_per_epoch=None,
        shuffle=True,
        shuffle_buffer=cfg.shuffle_buffer,
        seed=cfg.seed,
        rank=rank,
        world_size=world,
        tag=IMAGE_TAG,
        skip_prefix=skip_prefix,
        memory_cache_mb=cfg.memory_cache_mb,
    )
    decoder = ImageSampleDecoder(
        cfg.resolution, datamodule.clip_resolution, cfg.min_image_size, datamodule.filters, tuple(cfg.holdout_pairs),
        small_images=cfg.small_images,
    )
    return ShardStream(spec, decoder, start=start)

"""``data.embeddings: demo``: the demo shards' CLIP embeddings are computed once into the cache, equal the CLIP's
own embeddings of the decoded images, and reach the decoder's batches by key."""

from __future__ import annotations

import pytest
import torch

from datamodules.factory import build_datamodule
from mav_train.components.clip_source import build_frozen_clip
from mav_train.components.demo_embeddings import resolve_demo_embeddings
from mav_train.config.load import ConfigError, load_config

OVERRIDES = ["clip.pretrained=null", "data.demo_samples=64", "data.batch_size=16", "data.num_workers=0",
             "data.embeddings=demo"]


def test_demo_embeddings_are_the_clips_and_computed_once(tmp_path):
    cfg = load_config("demo/decoder", [*OVERRIDES, f"cache_dir={tmp_path}"])
    cfg = resolve_demo_embeddings(cfg)
    folder = cfg.data.embeddings
    assert folder != "demo" and (tmp_path / "demo").exists() and str(tmp_path) in folder
    parts = sorted((tmp_path / "demo").glob("embeddings-*/img_emb/*.npy"))
    assert parts
    stamps = [p.stat().st_mtime_ns for p in parts]

    datamodule = build_datamodule(cfg.data, cache_dir=cfg.cache_dir, component="decoder")
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    assert "image_emb" in batch
    with torch.no_grad():
        expected = build_frozen_clip(cfg).encode_image(batch["clip_image"])
    torch.testing.assert_close(batch["image_emb"], expected, atol=1e-4, rtol=1e-4)

    again = load_config("demo/decoder", [*OVERRIDES, f"cache_dir={tmp_path}"])
    again = resolve_demo_embeddings(again)
    assert again.data.embeddings == folder
    assert [p.stat().st_mtime_ns for p in parts] == stamps  # not recomputed

    other_clip = load_config("demo/decoder", [*OVERRIDES, f"cache_dir={tmp_path}", "clip.seed=1"])
    other_clip = resolve_demo_embeddings(other_clip)
    assert other_clip.data.embeddings != folder  # another CLIP, another folder


def test_own_shards_run_the_clip_per_batch(tmp_path):
    """A demo recipe pointed at the user's shards has no demo embeddings to read: the CLIP runs per batch."""
    cfg = load_config("demo/decoder", [*OVERRIDES, f"cache_dir={tmp_path}", "data.shards=/data/{00000..00001}.tar"])
    assert resolve_demo_embeddings(cfg).data.embeddings is None
    assert not (tmp_path / "demo").exists()


def test_unresolved_demo_embeddings_are_refused_by_the_datamodule_factory(tmp_path):
    cfg = load_config("demo/decoder", [*OVERRIDES, f"cache_dir={tmp_path}"])
    with pytest.raises(ValueError, match="resolved by `fit`"):
        build_datamodule(cfg.data, cache_dir=tmp_path, component="decoder")


def test_video_recipes_do_not_inherit_demo_embeddings(tmp_path):
    for recipe in ("demo/temporal_decoder", "demo/interpolation"):
        assert load_config(recipe).data.embeddings is None
    cfg = load_config("demo/temporal_decoder", ["clip.pretrained=null", "data.embeddings=demo"])
    with pytest.raises(ConfigError, match="data.kind is video"):
        resolve_demo_embeddings(cfg)

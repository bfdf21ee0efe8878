"""data.memory_cache_mb: later epochs replay decoded shards from memory, with the same batches and counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from datamodules.image_text import ImageTextDataModule
from datamodules.shard_writer import write_shard
from datamodules.video import VideoDataModule
from mav_train.components.registry import COMPONENTS
from mav_train.config.load import ConfigError, load_config
from mav_train.config.validate import validate
from tests.datamodules.helpers import (
    data_config,
    encode_image,
    image_record,
    pattern,
    solid_jpg,
    write_truncated_shard,
)


@pytest.fixture
def mixed_shards(tmp_path: Path) -> Path:
    """Two good shards with a few bad and upscaled samples among distinct images, and one corrupt shard."""
    def picture(i: int) -> bytes:
        return encode_image(Image.new("RGB", (40, 40), (10 * i, 255 - 10 * i, 7 * i)))
    shard0 = [image_record(f"0000000{i:02d}", picture(i)) for i in range(6)]
    shard0[2] = image_record("000000002", b"\xff\xd8 not a jpeg")  # decode_error
    shard0[4] = image_record("000000004", solid_jpg(size=20))  # below data.resolution 32: upscaled, counted
    write_shard(tmp_path, 0, shard0, {})
    write_shard(tmp_path, 1, [image_record(f"0000100{i:02d}", picture(10 + i), caption="a blue circle")
                              for i in range(5)], {})
    write_truncated_shard(tmp_path, 2, image_record("000020000", picture(20)))  # corrupt_shard, every pass
    return tmp_path


def epochs(dm: ImageTextDataModule, n: int, loader=None) -> tuple[list[tuple[str, ...]], torch.Tensor,
                                                                   dict[str, int]]:
    loader = loader or dm.train_dataloader()
    keys, images, batch = [], [], None
    for _ in range(n):
        for batch in loader:
            keys.append(tuple(batch["key"]))
            images.append(batch["image"])
    return keys, torch.cat(images), dict(batch["skips"])


def module(shards: Path, **overrides) -> ImageTextDataModule:
    return ImageTextDataModule(data_config(pattern(shards, 3), resolution=32, clip_resolution=16, batch_size=3,
                                           epoch_samples=9, shuffle_buffer=5, **overrides))


def test_cached_epochs_give_the_same_batches_and_counts(mixed_shards: Path) -> None:
    plain_keys, plain_images, plain_skips = epochs(module(mixed_shards), 4)
    cached = module(mixed_shards, memory_cache_mb=16)
    keys, images, skips = epochs(cached, 4)
    assert keys == plain_keys and torch.equal(images, plain_images)
    assert skips == plain_skips
    assert skips["decode_error"] >= 2 and skips["upscaled"] >= 2 and skips["corrupt_shard"] >= 2  # every pass
    assert len(set(keys)) > 3  # the epochs differ: reshuffled, not one epoch replayed


def test_later_epochs_read_no_tar(mixed_shards: Path) -> None:
    dm = module(mixed_shards, memory_cache_mb=16)
    loader = dm.train_dataloader()
    first = [tuple(batch["key"]) for batch in loader]
    stream = loader.dataset
    assert len(stream.cache) == 2 and not stream.cache.full  # the two readable shards; the corrupt one never
    reference = module(mixed_shards)
    ref_loader = reference.train_dataloader()
    assert [tuple(batch["key"]) for batch in ref_loader] == first
    expected = [tuple(batch["key"]) for batch in ref_loader]  # the second epoch, decoded from the tars
    for tar in (mixed_shards / "00000.tar", mixed_shards / "00001.tar"):  # from now on a tar read would fail
        tar.write_bytes(tar.read_bytes()[:100])
    assert [tuple(batch["key"]) for batch in loader] == expected


def test_a_persistent_loader_worker_keeps_its_cache_across_epochs(mixed_shards: Path) -> None:
    # With loader workers the cache lives in each (persistent) worker process: the second epoch must come from
    # memory there too, with the batches the plain reader gives.
    reference = module(mixed_shards).train_dataloader()
    epochs_ = [list(reference) for _ in range(2)]
    expected = [[tuple(batch["key"]) for batch in epoch] for epoch in epochs_]
    loader = module(mixed_shards, memory_cache_mb=16, num_workers=1).train_dataloader()
    assert [tuple(batch["key"]) for batch in loader] == expected[0]
    for tar in (mixed_shards / "00000.tar", mixed_shards / "00001.tar"):  # a tar read would now fail
        tar.write_bytes(tar.read_bytes()[:100])
    batches = list(loader)
    assert [tuple(batch["key"]) for batch in batches] == expected[1]
    # the same counts as the plain reader: the truncated tars were never opened again, only the corrupt one
    assert batches[-1]["skips"] == epochs_[1][-1]["skips"]


def test_a_budget_too_small_reads_the_tars_and_gives_the_same_batches(mixed_shards: Path) -> None:
    plain_keys, plain_images, _ = epochs(module(mixed_shards), 3)
    loader = module(mixed_shards, memory_cache_mb=0.025).train_dataloader()  # ~17 + 21 kB shards: one fits
    keys, images, _ = epochs(None, 3, loader)
    assert keys == plain_keys and torch.equal(images, plain_images)
    assert len(loader.dataset.cache) == 1 and loader.dataset.cache.full


def test_video_streams_are_never_cached(video_shards: Path) -> None:
    dm = VideoDataModule(data_config(pattern(video_shards, 2), kind="video", num_frames=4, memory_cache_mb=16))
    assert dm.train_dataloader().dataset.cache is None


def test_config_refuses_a_cache_video_cannot_use() -> None:
    with pytest.raises(ConfigError, match="data.memory_cache_mb"):
        validate(load_config("demo/temporal_decoder", ["data.memory_cache_mb=64"]), COMPONENTS)
    with pytest.raises(ConfigError, match="data.memory_cache_mb"):
        validate(load_config("demo/clip", ["data.memory_cache_mb=-1"]), COMPONENTS)
    validate(load_config("demo/temporal_decoder", ["data.memory_cache_mb=64", "data.image_shards=/x/{0..1}.tar"]),
             COMPONENTS)  # the joint image stream can use it

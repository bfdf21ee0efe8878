"""ImageTextDataModule: batches, dirty samples, filters, rank/worker splitting, resume."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from datamodules.image_text import ImageTextDataModule
from datamodules.shard_writer import write_shard
from datamodules.transforms import pixels_to_float
from tests.datamodules.helpers import (
    data_config,
    encode_image,
    image_record,
    pattern,
    solid_jpg,
    write_truncated_shard,
)


def keys_of(loader) -> list[str]:
    return [key for batch in loader for key in batch["key"]]


def test_batch_shapes_and_range(image_shards: Path) -> None:
    dm = ImageTextDataModule(data_config(pattern(image_shards, 3), batch_size=3, epoch_samples=7))
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 == len(dm.train_dataloader())
    batch = batches[0]
    assert batch["image"].shape == (3, 3, 16, 16) and batch["image"].dtype == torch.uint8
    assert batch["clip_image"].shape == (3, 3, 8, 8) and batch["clip_image"].dtype == torch.uint8
    converted = dm.on_after_batch_transfer(dict(batch), 0)  # what training_step receives
    assert converted["image"].dtype == converted["clip_image"].dtype == torch.float32
    assert -1.0 <= converted["image"].min() < 0.0 < converted["image"].max() <= 1.0
    assert len(batch["caption"]) == 3 and all(c.startswith("a ") for c in batch["caption"])
    assert len(batch["key"]) == 3 and batch["worker_id"] == 0
    assert set(batch["skips"]) >= {
        "decode_error",
        "too_small",
        "empty_caption",
        "missing_field",
        "corrupt_shard",
    }
    assert all(type(v) is int for v in batch["skips"].values())


def test_clip_resolution_defaults_to_resolution(image_shards: Path) -> None:
    dm = ImageTextDataModule(data_config(pattern(image_shards, 3), clip_resolution=None))
    assert next(iter(dm.train_dataloader()))["clip_image"].shape == (2, 3, 16, 16)


@pytest.fixture
def dirty_shards(tmp_path: Path) -> Path:
    good = solid_jpg()
    real = encode_image(Image.new("RGB", (64, 64), (10, 200, 10)))
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))  # fully transparent: composited onto white
    palette = Image.new("P", (40, 40), 3)
    palette.info["transparency"] = 7
    shard0 = [
        image_record("000000000", good),
        image_record("000000001", b"\xff\xd8 this is not a jpeg"),  # decode_error
        image_record("000000002", real[: len(real) // 2]),  # truncated jpg: decode_error
        image_record("000000003", solid_jpg(size=8)),  # too_small
        image_record("000000004", good, caption="   "),  # empty_caption
        image_record("000000005", None),  # no image file: missing_field
        image_record("000000006", encode_image(Image.new("CMYK", (40, 40), (0, 255, 255, 0)))),  # kept
        image_record("000000007", encode_image(Image.new("L", (40, 40), 90), "PNG"), ext="png"),  # kept
        image_record("000000008", encode_image(rgba, "PNG"), ext="png"),  # kept
        image_record("000000009", encode_image(palette, "PNG"), ext="png"),  # kept
        image_record("000000010", encode_image(Image.new("RGB", (40, 50), 9), "WEBP"), ext="webp"),  # kept
    ]
    write_shard(tmp_path, 0, shard0, {})
    write_truncated_shard(tmp_path, 1, image_record("000010000", good))  # corrupt_shard
    write_shard(tmp_path, 2, [image_record(f"00002000{i}", good) for i in range(3)], {})
    return tmp_path


def test_dirty_samples_are_skipped_and_counted_exactly(dirty_shards: Path) -> None:
    # validation reads in order, so once the last good sample arrives every bad one has been seen exactly once
    dm = ImageTextDataModule(data_config(pattern(dirty_shards, 3), batch_size=3, val_samples=9))
    batches = list(dm.val_dataloader())
    keys = [key for batch in batches for key in batch["key"]]
    assert keys == [
        "000000000",
        "000000006",
        "000000007",
        "000000008",
        "000000009",
        "000000010",
        "000020000",
        "000020001",
        "000020002",
    ]
    skips = {reason: int(value) for reason, value in batches[-1]["skips"].items()}
    assert skips == {
        "decode_error": 2,
        "too_small": 1,
        "empty_caption": 1,
        "missing_field": 1,
        "filtered": 0,
        "corrupt_shard": 1,
        "below_resolution": 0,
        "upscaled": 0,
    }
    images = pixels_to_float(torch.cat([batch["image"] for batch in batches]))
    assert images.shape == (9, 3, 16, 16) and images.min() >= -1.0 and images.max() <= 1.0
    assert torch.allclose(images[3], torch.ones(3, 16, 16))  # transparent RGBA -> white
    gray = images[2]
    assert torch.allclose(gray[0], gray[1]) and torch.allclose(gray[1], gray[2])  # L -> RGB, channels equal


@pytest.mark.parametrize("policy", ["upscale", "skip"])
def test_images_below_the_resolution_are_upscaled_or_skipped_and_counted(tmp_path: Path, policy: str) -> None:
    # Super-resolution targets: an image smaller than data.resolution (32 here) is upscaled or skipped, per
    # data.small_images, and counted either way; never a crash.
    write_shard(tmp_path, 0, [image_record("000000000", solid_jpg(size=40)),
                              image_record("000000001", solid_jpg(size=20)),
                              image_record("000000002", solid_jpg(size=48))], {})
    dm = ImageTextDataModule(data_config(pattern(tmp_path, 1), resolution=32, batch_size=1,
                                         val_samples=3 if policy == "upscale" else 2,
                                         small_images=policy))
    batches = list(dm.val_dataloader())
    keys = [key for batch in batches for key in batch["key"]]
    skips = batches[-1]["skips"]
    if policy == "upscale":
        assert keys == ["000000000", "000000001", "000000002"]
        assert skips["upscaled"] == 1 and skips["below_resolution"] == 0
        assert all(batch["image"].shape == (1, 3, 32, 32) for batch in batches)
    else:
        assert keys == ["000000000", "000000002"]
        assert skips["below_resolution"] == 1 and skips["upscaled"] == 0


def test_training_survives_dirty_shards(dirty_shards: Path) -> None:
    dm = ImageTextDataModule(data_config(pattern(dirty_shards, 3), batch_size=4, epoch_samples=40))
    batches = list(dm.train_dataloader())
    assert len(batches) == 10
    assert int(batches[-1]["skips"]["corrupt_shard"]) >= 1 and int(batches[-1]["skips"]["decode_error"]) >= 2


def test_filters(tmp_path: Path) -> None:
    records = [
        image_record("000000000", solid_jpg(), pwatermark=0.7, punsafe=0.0),  # filtered
        image_record("000000001", solid_jpg(), pwatermark=0.5, punsafe=0.0),  # filtered (not < 0.5)
        image_record("000000002", solid_jpg(), punsafe=0.0),  # no pwatermark: filtered
        image_record("000000003", solid_jpg(), pwatermark=0.1, punsafe=0.3),  # filtered by punsafe
        image_record("000000004", solid_jpg(), pwatermark=0.1, punsafe=0.1),  # kept
        image_record("000000005", solid_jpg(), pwatermark=0.3, punsafe=0.0),  # kept
    ]
    write_shard(tmp_path, 0, records, {})
    cfg = data_config(str(tmp_path / "00000.tar"), filters=["pwatermark<0.5", "punsafe<=0.1"], val_samples=2)
    batch = next(iter(ImageTextDataModule(cfg).val_dataloader()))
    assert batch["key"] == ["000000004", "000000005"]
    assert int(batch["skips"]["filtered"]) == 4
    unfiltered = data_config(str(tmp_path / "00000.tar"), val_samples=2)
    assert next(iter(ImageTextDataModule(unfiltered).val_dataloader()))["key"] == ["000000000", "000000001"]


def test_bad_filter_fails_at_construction(image_shards: Path) -> None:
    with pytest.raises(ValueError, match="'pwatermark=<0.5'"):
        ImageTextDataModule(data_config(pattern(image_shards, 3), filters=["pwatermark=<0.5"]))


def test_missing_shards_message() -> None:
    with pytest.raises(ValueError, match=r"data.shards is not set: .*recipe=demo/decoder"):
        ImageTextDataModule(data_config(None))
    with pytest.raises(ValueError, match="data.epoch_samples 1 must be >= data.batch_size 2"):
        ImageTextDataModule(data_config("x.tar", epoch_samples=1))


def test_nonexistent_shards_name_the_field(tmp_path: Path) -> None:
    dm = ImageTextDataModule(data_config(f"{tmp_path}/{{00000..00002}}.tar"))
    with pytest.raises(ValueError, match="data.shards="):
        dm.train_dataloader()


def test_demo_data_when_no_shards(tmp_path: Path) -> None:
    dm = ImageTextDataModule(data_config(None, demo=True, demo_samples=6), cache_dir=tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    assert (tmp_path / "demo" / "images-6" / "00000.tar").is_file()
    assert next(iter(dm.train_dataloader()))["image"].shape == (2, 3, 16, 16)


def test_ranks_and_workers_get_disjoint_samples_and_equal_batches(
    image_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 shards over 2 ranks x 2 workers: fewer shards than slots, split within a shard."""
    slots: dict[tuple[int, int], set[str]] = {}
    batch_counts = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        cfg = data_config(pattern(image_shards, 3), num_workers=2, batch_size=2, epoch_samples=34)
        batches = list(ImageTextDataModule(cfg).train_dataloader())
        batch_counts.append(len(batches))
        for batch in batches:
            slots.setdefault((rank, batch["worker_id"]), set()).update(batch["key"])
    assert batch_counts == [17, 17]
    assert len(slots) == 4
    for a, b in [(a, b) for a in slots for b in slots if a < b]:
        assert not slots[a] & slots[b], f"slots {a} and {b} share {slots[a] & slots[b]}"
    assert sum(len(keys) for keys in slots.values()) == 24  # every sample is somebody's


def test_epochs_reshuffle_and_resume_continues(image_shards: Path) -> None:
    cfg = data_config(pattern(image_shards, 3), batch_size=2, epoch_samples=8)
    dm = ImageTextDataModule(cfg)
    loader = dm.train_dataloader()
    epoch1, epoch2 = keys_of(loader), keys_of(loader)
    assert len(epoch1) == 8 and epoch1 != epoch2
    # consume 3 of 4 batches of epoch 3, save, resume in a fresh datamodule
    iterator = iter(loader)
    consumed = [next(iterator)["key"] for _ in range(3)]
    state = dm.state_dict()
    assert state["batches_consumed"] == 11
    resumed = ImageTextDataModule(cfg)
    resumed.load_state_dict(state)
    rest = keys_of(resumed.train_dataloader())
    assert len(rest) == 2  # the remaining batch of the interrupted epoch
    assert rest != consumed[0]  # not a replay of the epoch's first batch
    again = ImageTextDataModule(cfg)
    again.load_state_dict(state)
    assert keys_of(again.train_dataloader()) == rest  # deterministic given the checkpoint
    assert resumed.state_dict()["batches_consumed"] == 12


def test_val_loader_is_deterministic_and_unshuffled(image_shards: Path) -> None:
    cfg = data_config(pattern(image_shards, 3), num_workers=2, val_samples=8)
    dm = ImageTextDataModule(cfg)
    loader = dm.val_dataloader()
    first, second = keys_of(loader), keys_of(loader)
    assert first == second and len(first) == 8
    val_dir_cfg = data_config(
        pattern(image_shards, 3), val_shards=str(image_shards / "00002.tar"), val_samples=4
    )
    assert all(k.startswith("00002") for k in keys_of(ImageTextDataModule(val_dir_cfg).val_dataloader()))
    assert ImageTextDataModule(data_config(pattern(image_shards, 3), val_samples=0)).val_dataloader() == []


def test_pil_modes_do_not_leak_between_samples() -> None:
    """A CMYK jpg round-trips through the decoder as three similar RGB channels in range."""
    from datamodules.image_text import ImageSampleDecoder
    from datamodules.skips import SkipCounter

    decoder = ImageSampleDecoder(16, 8, 16, ())
    cmyk = encode_image(Image.new("CMYK", (20, 20), (0, 0, 0, 0)))  # no ink: white
    item = decoder.decode({"__key__": "k", "jpg": cmyk, "txt": b"white"}, None, SkipCounter(()))
    assert pixels_to_float(item["image"]).min() > 0.9
    assert Image.open(io.BytesIO(cmyk)).mode == "CMYK"


def test_build_datamodule_by_kind(image_shards: Path) -> None:
    from datamodules import VideoDataModule, build_datamodule

    assert isinstance(build_datamodule(data_config(pattern(image_shards, 3))), ImageTextDataModule)
    assert isinstance(build_datamodule(data_config("x.tar", kind="video")), VideoDataModule)
    with pytest.raises(ValueError, match="data.kind must be"):
        build_datamodule(data_config("x.tar", kind="audio"))

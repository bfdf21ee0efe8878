"""The toy-world writer: img2dataset / video2dataset layout, determinism, decodable 30 fps mp4s."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import decord
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datamodules.demo import default_cache_dir, ensure_demo_data, write_image_shards, write_video_shards
from datamodules.sharding import expand_shards

IMAGE_JSON_FIELDS = {
    "caption",
    "url",
    "key",
    "status",
    "error_message",
    "width",
    "height",
    "original_width",
    "original_height",
    "exif",
    "sha256",
    "punsafe",
    "pwatermark",
}
VIDEO_JSON_FIELDS = {"caption", "url", "key", "status", "error_message", "yt_meta_dict", "video_metadata"}


def tar_members(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


def test_image_layout(tmp_path: Path) -> None:
    paths = write_image_shards(tmp_path, num_samples=5, samples_per_shard=3, resolution=32, seed=1)
    assert [p.name for p in paths] == ["00000.tar", "00001.tar"]
    for name in ("00000.parquet", "00001.parquet", "00000_stats.json", "00001_stats.json"):
        assert (tmp_path / name).is_file()
    assert tar_members(paths[1]) == [
        "000010000.jpg",
        "000010000.json",
        "000010000.txt",
        "000010001.jpg",
        "000010001.json",
        "000010001.txt",
    ]
    with tarfile.open(paths[0]) as tar:
        meta = json.loads(tar.extractfile("000000002.json").read())
        caption = tar.extractfile("000000002.txt").read().decode()
        image = Image.open(io.BytesIO(tar.extractfile("000000002.jpg").read()))
    assert set(meta) == IMAGE_JSON_FIELDS
    assert meta["key"] == "000000002" and meta["status"] == "success" and meta["caption"] == caption
    assert image.size == (32, 32) and (meta["width"], meta["height"]) == (32, 32)
    assert caption.startswith(("a ", "an ")) and "background" in caption
    table = pq.read_table(tmp_path / "00000.parquet")
    assert IMAGE_JSON_FIELDS <= set(table.column_names)
    assert table.column("key").to_pylist() == ["000000000", "000000001", "000000002"]
    stats = json.loads((tmp_path / "00001_stats.json").read_text())
    assert stats["count"] == 2 and stats["successes"] == 2


def test_video_layout_and_decoding(tmp_path: Path) -> None:
    paths = write_video_shards(
        tmp_path, num_samples=2, samples_per_shard=2, resolution=32, num_seconds=1.0, fps=30, seed=1
    )
    assert tar_members(paths[0])[:3] == ["000000000.json", "000000000.mp4", "000000000.txt"]
    with tarfile.open(paths[0]) as tar:
        meta = json.loads(tar.extractfile("000000001.json").read())
        mp4 = tar.extractfile("000000001.mp4").read()
    assert set(meta) == VIDEO_JSON_FIELDS
    stream = meta["video_metadata"]["streams"][0]
    assert stream["avg_frame_rate"] == "30/1" and (stream["width"], stream["height"]) == (32, 32)
    assert stream["nb_frames"] == "30" and meta["video_metadata"]["format"]["duration"] == "1.000000"
    reader = decord.VideoReader(io.BytesIO(mp4))
    assert len(reader) == 30 and reader.get_avg_fps() == pytest.approx(30.0)
    frames = reader.get_batch([0, 29]).asnumpy()
    assert frames.shape == (2, 32, 32, 3)
    assert np.abs(frames[0].astype(int) - frames[1].astype(int)).mean() > 1.0  # the shape moved
    assert (tmp_path / "00000.parquet").is_file() and (tmp_path / "00000_stats.json").is_file()


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = write_video_shards(tmp_path / "a", 2, 2, resolution=32, num_seconds=0.5, seed=7)
    b = write_video_shards(tmp_path / "b", 2, 2, resolution=32, num_seconds=0.5, seed=7)
    c = write_video_shards(tmp_path / "c", 2, 2, resolution=32, num_seconds=0.5, seed=8)
    assert a[0].read_bytes() == b[0].read_bytes() != c[0].read_bytes()
    a = write_image_shards(tmp_path / "ia", 4, 2, resolution=32, seed=7)
    b = write_image_shards(tmp_path / "ib", 4, 2, resolution=32, seed=7)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert (tmp_path / "ia/00001.parquet").read_bytes() == (tmp_path / "ib/00001.parquet").read_bytes()


def test_ensure_demo_data_idempotent(tmp_path: Path) -> None:
    paths = ensure_demo_data(tmp_path, num_samples=6, samples_per_shard=4, num_seconds=0.5)
    assert paths.images == f"{tmp_path}/images-6/{{00000..00001}}.tar"
    assert len(expand_shards(paths.videos)) == 2
    stamp = (tmp_path / "images-6" / "00000.tar").stat().st_mtime_ns
    assert ensure_demo_data(tmp_path, num_samples=6, samples_per_shard=4, num_seconds=0.5) == paths
    assert (tmp_path / "images-6" / "00000.tar").stat().st_mtime_ns == stamp  # not rewritten
    other = ensure_demo_data(tmp_path, num_samples=6, samples_per_shard=3, num_seconds=0.5)  # other spec: redo
    assert other.images.endswith("images-6/{00000..00001}.tar") and other.images == paths.images
    assert (tmp_path / "images-6" / "00000.tar").stat().st_mtime_ns != stamp
    bigger = ensure_demo_data(tmp_path, num_samples=9, samples_per_shard=4, kinds=("images",))
    assert bigger.images.endswith("images-9/{00000..00002}.tar") and bigger.videos is None
    assert (tmp_path / "images-6").is_dir()  # sets of other sizes stay
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MAV_TRAIN_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("MAV_TRAIN_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "mav_train"

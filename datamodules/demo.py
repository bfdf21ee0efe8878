"""Built-in toy-world demo data, written as real img2dataset / video2dataset shards.

Deterministic: every sample is drawn from its own generator seeded by ``(seed, kind, sample index)``, so
the same arguments give the same bytes. ``ensure_demo_data`` writes the set once into a cache directory
(atomically: a temporary directory renamed into place) and returns brace patterns for the datamodules.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.mp4 import encode_mp4
from datamodules.shard_writer import ShardRecord, sample_key, write_shard
from datamodules.toy_world import caption_of, draw_scene, random_scene

DEMO_FORMAT_VERSION = 3  # bump when the generator changes, so caches regenerate
IMAGE_STREAM, VIDEO_STREAM = 0, 1


def default_cache_dir() -> Path:
    """``$MAV_TRAIN_CACHE`` or ``~/.cache/mav_train``."""
    return Path(os.environ.get("MAV_TRAIN_CACHE") or Path.home() / ".cache" / "mav_train").expanduser()


def sample_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` of ``stream`` (IMAGE_STREAM or VIDEO_STREAM) for ``seed``."""
    return np.random.default_rng([seed & 0xFFFFFFFF, stream, index])


def _image_record(index: int, key: str, resolution: int, seed: int) -> ShardRecord:
    rng = sample_rng(seed, IMAGE_STREAM, index)
    scene = random_scene(rng, moving=False)
    buffer = io.BytesIO()
    draw_scene(scene, resolution).save(buffer, format="JPEG", quality=95)
    jpg, caption = buffer.getvalue(), caption_of(scene)
    meta = {
        "caption": caption,
        "url": f"https://toy.world/images/{key}.jpg",
        "key": key,
        "status": "success",
        "error_message": None,
        "width": resolution,
        "height": resolution,
        "original_width": resolution,
        "original_height": resolution,
        "exif": "{}",
        "sha256": hashlib.sha256(jpg).hexdigest(),
        "punsafe": round(float(rng.beta(1.0, 20.0)), 6),
        "pwatermark": round(float(rng.beta(1.0, 6.0)), 6),
    }
    return ShardRecord(key=key, files={"jpg": jpg, "txt": caption.encode()}, meta=meta)


def ffprobe_metadata(width: int, height: int, num_frames: int, fps: int, size: int) -> dict[str, Any]:
    """The part of ``ffprobe -show_format -show_streams`` output that video2dataset stores."""
    duration = f"{num_frames / fps:.6f}"
    stream = {
        "index": 0,
        "codec_name": "h264",
        "codec_type": "video",
        "profile": "High",
        "width": width,
        "height": height,
        "pix_fmt": "yuv420p",
        "r_frame_rate": f"{fps}/1",
        "avg_frame_rate": f"{fps}/1",
        "time_base": f"1/{fps * 10}",
        "duration": duration,
        "nb_frames": str(num_frames),
    }
    fmt = {
        "filename": "pipe:",
        "nb_streams": 1,
        "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
        "duration": duration,
        "size": str(size),
        "bit_rate": str(int(size * 8 / max(num_frames / fps, 1e-6))),
    }
    return {"streams": [stream], "format": fmt}


def _video_record(
    index: int, key: str, resolution: int, num_seconds: float, fps: int, seed: int
) -> ShardRecord:
    rng = sample_rng(seed, VIDEO_STREAM, index)
    scene = random_scene(rng, moving=True)
    num_frames = max(1, round(num_seconds * fps))
    frames = [np.asarray(draw_scene(scene, resolution, t / fps)) for t in range(num_frames)]
    mp4, caption = encode_mp4(frames, fps), caption_of(scene)
    meta = {
        "caption": caption,
        "url": f"https://toy.world/videos/{key}.mp4",
        "key": key,
        "status": "success",
        "error_message": None,
        "yt_meta_dict": None,
        "video_metadata": ffprobe_metadata(resolution, resolution, num_frames, fps, len(mp4)),
    }
    return ShardRecord(key=key, files={"mp4": mp4, "txt": caption.encode()}, meta=meta)


def _write_shards(
    out_dir: Path,
    num_samples: int,
    samples_per_shard: int,
    make: Callable[[int, str], ShardRecord],
    stats_fields: dict[str, Any],
) -> list[Path]:
    if num_samples < 1 or samples_per_shard < 1:
        raise ValueError(f"num_samples {num_samples} and samples_per_shard {samples_per_shard} must be >= 1")
    paths = []
    for shard, first in enumerate(range(0, num_samples, samples_per_shard)):
        count = min(samples_per_shard, num_samples - first)
        records = [make(first + i, sample_key(shard, i, samples_per_shard)) for i in range(count)]
        stats = {"count": count, "successes": count, **stats_fields, "status_dict": {"success": count}}
        paths.append(write_shard(Path(out_dir), shard, records, stats))
    return paths


def write_image_shards(
    out_dir: str | Path, num_samples: int, samples_per_shard: int, resolution: int = 64, seed: int = 0
) -> list[Path]:
    """Toy-world images (jpg + txt + json) in img2dataset layout; returns the tar paths."""
    return _write_shards(
        Path(out_dir),
        num_samples,
        samples_per_shard,
        lambda index, key: _image_record(index, key, resolution, seed),
        {"failed_to_download": 0, "failed_to_resize": 0, "duration": 0.0, "start_time": 0.0, "end_time": 0.0},
    )


def write_video_shards(
    out_dir: str | Path,
    num_samples: int,
    samples_per_shard: int,
    resolution: int = 64,
    num_seconds: float = 3.0,
    fps: int = 30,
    seed: int = 0,
) -> list[Path]:
    """Toy-world videos (H.264 mp4 + txt + json with ffprobe metadata) in video2dataset layout."""
    return _write_shards(
        Path(out_dir),
        num_samples,
        samples_per_shard,
        lambda index, key: _video_record(index, key, resolution, num_seconds, fps, seed),
        {
            "failed_to_download": 0,
            "failed_to_subsample": 0,
            "bytes_downloaded": 0,
            "duration": 0.0,
            "start_time": 0.0,
            "end_time": 0.0,
        },
    )


@dataclass(frozen=True)
class DemoSpec:
    """Everything a demo set depends on; stored beside it so a different request regenerates it."""

    num_samples: int = 256
    samples_per_shard: int = 0  # 0: automatic (64, or num_samples / 16 for big sets)
    image_resolution: int = 128
    video_resolution: int = 64
    num_seconds: float = 3.0
    fps: int = 30
    seed: int = 0
    version: int = DEMO_FORMAT_VERSION

    def per_shard(self) -> int:
        if self.samples_per_shard > 0:
            return min(self.samples_per_shard, self.num_samples)
        return min(self.num_samples, max(64, -(-self.num_samples // 16)))


@dataclass(frozen=True)
class DemoPaths:
    """Brace patterns of the demo shards, e.g. ``/cache/images-256/{00000..00003}.tar`` (None: not written)."""

    root: Path
    images: str | None
    videos: str | None


def _pattern(directory: Path, num_shards: int) -> str:
    return str(directory / f"{{00000..{num_shards - 1:05d}}}.tar")


def _ensure_one(target: Path, spec: DemoSpec, write: Callable[[Path], list[Path]]) -> int:
    """Generate ``target`` unless it already holds this spec; returns the number of shards."""
    stamp = target / "demo_spec.json"
    wanted = asdict(spec)
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return len(list(target.glob("*.tar")))
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    scratch.chmod(0o755)  # mkdtemp makes it private; the renamed directory should be readable like any other
    try:
        num_shards = len(write(scratch))
        (scratch / "demo_spec.json").write_text(json.dumps(wanted, indent=2))
        if target.exists():  # stale (another spec): move aside, then swap in
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
            os.replace(target, stale / target.name)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(scratch, target)
        except OSError:  # another process renamed its copy first: keep theirs
            if not (stamp.is_file() and json.loads(stamp.read_text()) == wanted):
                raise
        return num_shards
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def ensure_demo_data(
    cache_dir: str | Path | None = None,
    num_samples: int = 256,
    kinds: tuple[str, ...] = ("images", "videos"),
    **spec_fields: Any,
) -> DemoPaths:
    """Write the toy-world demo sets of ``kinds`` into ``cache_dir/images-N`` and ``cache_dir/videos-N`` (N =
    ``num_samples``) unless already there; sets of different sizes live side by side.

    ``spec_fields`` override :class:`DemoSpec` fields (``samples_per_shard``, resolutions, ``seed``...).
    Idempotent and crash-safe (written to a temporary directory, then renamed into place).
    """
    unknown = sorted(set(kinds) - {"images", "videos"})
    if unknown:
        raise ValueError(f"demo data kinds must be 'images' or 'videos', got {unknown}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "demo"
    spec = DemoSpec(num_samples=num_samples, **spec_fields)
    per_shard = spec.per_shard()
    images = videos = None
    if "images" in kinds:
        target = root / f"images-{num_samples}"
        count = _ensure_one(
            target, spec,
            lambda out: write_image_shards(out, num_samples, per_shard, spec.image_resolution, spec.seed),
        )
        images = _pattern(target, count)
    if "videos" in kinds:
        target = root / f"videos-{num_samples}"
        count = _ensure_one(
            target, spec,
            lambda out: write_video_shards(
                out, num_samples, per_shard, spec.video_resolution, spec.num_seconds, spec.fps, spec.seed
            ),
        )
        videos = _pattern(target, count)
    return DemoPaths(root=root, images=images, videos=videos)

"""Clips per second of the video datamodule against a plain loop calling decord directly on the same clips.

``python -m bench.bench_video_data [--quick]``

Both read the same toy-world shards (written into a temporary directory by
``datamodules.demo.write_video_shards``: H.264 mp4 in video2dataset layout) and produce the same clips: the
recipe's ``data.num_frames`` frames at an fps drawn from the recipe's curriculum (at ``step``) capped at the
native fps, a random start, every frame and the conditioning frame resized and centre-cropped (the plain
loop with ``datamodules.transforms.square_frames`` in float, the datamodule in uint8, converted to float
[-1, 1] after the transfer), stacked into batches of ``data.batch_size``.

- ``plain``: ``tarfile`` over the shards, ``decord.VideoReader(io.BytesIO(mp4), num_threads=1)`` (one decode
  thread, as the datamodule opens it), ``get_batch(indices)`` with the same index rule, in this process.
- ``datamodule, N workers``: ``VideoDataModule.train_dataloader()`` with ``data.num_workers=N``: shard
  splitting, shuffle buffer, json metadata, variable-frame-rate check, skip accounting, collation, with
  workers the transfer to this process (uint8 pixels), and ``datamodule.on_after_batch_transfer`` (the
  conversion to float [-1, 1] that fit applies), so both variants end with the same float clips.

Clips/s are measured between batch arrivals after a warm-up (worker start and shuffle-buffer fill excluded);
runs are interleaved, their order rotating each round; clips/s are medians over the rounds, ratios medians
of the per-round ratios. Targets:
1 worker >= 0.9x the plain loop; 2 workers / 1 worker shows the scaling.
"""

from __future__ import annotations

import argparse
import gc
import io
import itertools
import os
import statistics
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import decord
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from bench.bench_fit_overhead import torch_threads
from datamodules.curriculum import FpsCurriculum
from datamodules.demo import write_video_shards
from datamodules.transforms import square_frames
from datamodules.video import VideoDataModule
from mav_train.config.load import load_config
from mav_train.config.schema import DataConfig

PLAIN = "plain"
TARGET_ONE_WORKER = 0.9  # datamodule with 1 worker / plain loop


@dataclass(frozen=True)
class VideoBenchSettings:
    """The shards to write and how long to time each reader."""

    recipe: str = "demo/temporal_decoder"  # data.* (frames, resolution, batch size, curriculum) from here
    num_videos: int = 64
    videos_per_shard: int = 16
    video_resolution: int = 64  # the demo set's (datamodules.demo.DemoSpec)
    video_seconds: float = 3.0
    video_fps: int = 30
    batches: int = 64  # timed batches per run
    warmup_batches: int = 4  # batches dropped at the start of every run
    repeats: int = 7  # rounds of (plain, datamodule with each worker count), interleaved
    workers: tuple[int, ...] = (0, 1, 2)
    step: int = 0  # the curriculum step the fps is drawn at
    threads: int | None = 1  # torch threads of this process while timing, as in a dataloader worker


QUICK = VideoBenchSettings(num_videos=16, videos_per_shard=8, batches=16, warmup_batches=2, repeats=2)


def variant_name(workers: int) -> str:
    return f"datamodule, {workers} worker{'s' if workers != 1 else ''}"


@dataclass
class RunStats:
    """One run: its clips/s, the clips' mean fps and frame tensor shape ``c t h w``."""

    clips_per_s: float
    mean_fps: float
    clip_shape: tuple[int, ...]


@dataclass
class VideoBenchResult:
    settings: VideoBenchSettings
    data: DictConfig
    runs: dict[str, list[RunStats]] = field(default_factory=dict)

    def clips_per_s(self, variant: str) -> float:
        """Median over the rounds."""
        return statistics.median(run.clips_per_s for run in self.runs[variant])

    def ratio(self, variant: str, baseline: str = PLAIN) -> float:
        """Median over the rounds of the per-round ratio (a round's runs are close in time: drift cancels)."""
        pairs = zip(self.runs[variant], self.runs[baseline], strict=True)
        return statistics.median(run.clips_per_s / base.clips_per_s for run, base in pairs)


def bench_data_config(settings: VideoBenchSettings, shards: Path, workers: int) -> DictConfig:
    """The recipe's data config on ``shards`` with ``workers`` workers and exactly the batches to time."""
    overrides = [f"data.shards={shards}", f"data.num_workers={workers}", "data.val_samples=0",
                 "data.image_batch_size=0"]
    batch_size = load_config(settings.recipe, overrides).data.batch_size
    total = (settings.warmup_batches + settings.batches) * batch_size
    return load_config(settings.recipe, [*overrides, f"data.epoch_samples={total}"]).data


def write_shards(settings: VideoBenchSettings, out_dir: Path) -> list[Path]:
    return write_video_shards(out_dir, settings.num_videos, settings.videos_per_shard,
                              resolution=settings.video_resolution, num_seconds=settings.video_seconds,
                              fps=settings.video_fps)


def mp4_bytes(shards: list[Path]) -> Iterator[bytes]:
    """The mp4 files of the shards in order, cycling forever."""
    for path in itertools.cycle(shards):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".mp4"):
                    yield tar.extractfile(member).read()


def plain_clip(data: bytes, target_fps: float, cfg: DataConfig, clip_resolution: int,
               rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """decord directly: ``num_frames`` frames at ``target_fps`` (capped at the native fps; the largest stride
    that fits when the video is too short), resized and cropped -> (video c t h w, cond frame c h w, fps)."""
    reader = decord.VideoReader(io.BytesIO(data), num_threads=1)
    total, native, count = len(reader), reader.get_avg_fps(), cfg.num_frames
    stride = native / min(target_fps, native)
    if count > 1 and round((count - 1) * stride) > total - 1:
        stride = (total - 1) / (count - 1)
    offsets = np.rint(np.arange(count) * stride).astype(np.int64)
    indices = int(rng.integers(0, total - int(offsets[-1]))) + offsets
    frames = reader.get_batch(indices.tolist()).asnumpy()
    cond = square_frames(frames[:1], clip_resolution)[:, 0]
    return square_frames(frames, cfg.resolution), cond, native / stride


def run_plain(settings: VideoBenchSettings, shards: list[Path], cfg: DataConfig, seed: int) -> RunStats:
    """Clips/s of the plain decord loop over ``warmup_batches + batches`` batches (``cfg`` a plain
    dataclass: reading an OmegaConf node costs microseconds per field, a plain loop would not pay that)."""
    rng = np.random.default_rng(seed)
    curriculum = FpsCurriculum(cfg.curriculum)
    clip_resolution = cfg.clip_resolution or cfg.resolution
    source = mp4_bytes(shards)
    stamps, fps_used, shape = [], [], ()
    for _ in range(settings.warmup_batches + settings.batches):
        clips = [plain_clip(next(source), curriculum.sample(rng, settings.step), cfg, clip_resolution, rng)
                 for _ in range(cfg.batch_size)]
        videos = torch.stack([clip[0] for clip in clips])
        torch.stack([clip[1] for clip in clips])
        fps_used += [clip[2] for clip in clips]
        shape = tuple(videos.shape[1:])
        stamps.append(time.perf_counter())
    return RunStats(clips_rate(stamps, settings, cfg.batch_size), statistics.fmean(fps_used), shape)


def run_datamodule(settings: VideoBenchSettings, cfg: DictConfig) -> RunStats:
    """Clips/s of ``VideoDataModule.train_dataloader()`` over ``warmup_batches + batches`` batches."""
    datamodule = VideoDataModule(cfg)
    datamodule.set_step(settings.step)
    loader = datamodule.train_dataloader()
    stamps, fps_used, shape = [], [], ()
    for raw in loader:
        batch = datamodule.on_after_batch_transfer(raw, 0)  # uint8 -> float [-1, 1], as fit does
        stamps.append(time.perf_counter())
        fps_used += batch["fps"].tolist()
        shape = tuple(batch["video"].shape[1:])
    del loader, datamodule
    gc.collect()  # shut the persistent workers down before the next run
    expected = settings.warmup_batches + settings.batches
    if len(stamps) != expected:
        raise RuntimeError(f"the datamodule gave {len(stamps)} batches, expected {expected}")
    return RunStats(clips_rate(stamps, settings, cfg.batch_size), statistics.fmean(fps_used), shape)


def clips_rate(stamps: list[float], settings: VideoBenchSettings, batch_size: int) -> float:
    """Clips per second between the end of the warm-up and the last batch."""
    if settings.warmup_batches < 1:
        raise ValueError(f"warmup_batches {settings.warmup_batches} must be >= 1")
    start = stamps[settings.warmup_batches - 1]
    return settings.batches * batch_size / (stamps[-1] - start)


def run_video_benchmark(settings: VideoBenchSettings, work_dir: Path | None = None) -> VideoBenchResult:
    """Write the shards, then time every reader ``settings.repeats`` times, interleaved."""
    with tempfile.TemporaryDirectory(prefix="bench_video_") as scratch, torch_threads(settings.threads):
        root = Path(work_dir) if work_dir is not None else Path(scratch)
        shard_dir = root / "videos"
        shards = write_shards(settings, shard_dir)
        configs = {workers: bench_data_config(settings, shard_dir, workers) for workers in settings.workers}
        data = next(iter(configs.values())) if configs else bench_data_config(settings, shard_dir, 0)
        result = VideoBenchResult(settings=settings, data=data)
        plain_cfg = OmegaConf.to_object(data)
        runners = {PLAIN: lambda seed: run_plain(settings, shards, plain_cfg, seed)}
        for workers, cfg in configs.items():
            runners[variant_name(workers)] = lambda seed, cfg=cfg: run_datamodule(settings, cfg)
        names = list(runners)
        for repeat in range(settings.repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                result.runs.setdefault(name, []).append(runners[name](repeat))
    return result


def format_video_report(result: VideoBenchResult) -> str:
    s, data = result.settings, result.data
    first = result.runs[PLAIN][0]
    num_shards = -(-s.num_videos // s.videos_per_shard)
    lines = [
        f"video clips/s: recipe {s.recipe}, {s.num_videos} toy-world videos ({s.video_resolution}px, "
        f"{s.video_seconds:g} s at {s.video_fps} fps, H.264) in {num_shards} shards; clips "
        f"{list(first.clip_shape)} (c t h w), batch {data.batch_size}, fps curriculum at step {s.step}",
        f"{s.batches} timed batches x {s.repeats} interleaved rounds after {s.warmup_batches} warm-up "
        f"batches; cpus {os.cpu_count()}, torch threads {s.threads or torch.get_num_threads()} in this "
        f"process (1 in each worker)",
        f"{'reader':<24}{'clips/s':>9}{'vs plain':>10}  {'mean fps':>8}  clips/s of the rounds",
    ]
    for name, runs in result.runs.items():
        rounds = " ".join(f"{run.clips_per_s:.0f}" for run in runs)
        mean_fps = statistics.fmean(run.mean_fps for run in runs)
        lines.append(f"{name:<24}{result.clips_per_s(name):>9.1f}{result.ratio(name):>10.3f}  "
                     f"{mean_fps:>8.2f}  {rounds}")
    one, two = variant_name(1), variant_name(2)
    if one in result.runs:
        ratio = result.ratio(one)
        verdict = "MET" if ratio >= TARGET_ONE_WORKER else "NOT MET"
        lines.append(f"target: 1 worker / plain >= {TARGET_ONE_WORKER}: {ratio:.3f} {verdict}")
    if one in result.runs and two in result.runs:
        lines.append(f"scaling: 2 workers / 1 worker = {result.ratio(two, one):.2f}x (bounded: this machine "
                     f"has {os.cpu_count()} cores, shared with the main process and other users)")
    return "\n".join(lines)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_video_data",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few videos, batches and rounds (seconds)")
    parser.add_argument("--batches", type=int, help="timed batches per run")
    parser.add_argument("--repeats", type=int, help="interleaved rounds")
    parser.add_argument("--step", type=int, help="curriculum step the fps is drawn at")
    parser.add_argument("--workers", type=int, nargs="+", help="datamodule worker counts (default 0 1 2)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else VideoBenchSettings()
    changes = {"batches": args.batches, "repeats": args.repeats, "step": args.step,
               "workers": tuple(args.workers) if args.workers else None}
    settings = replace(settings, **{name: value for name, value in changes.items() if value is not None})
    print(f"load average (1/5/15 min) before: {load_average()}", flush=True)
    started = time.perf_counter()
    result = run_video_benchmark(settings)
    print(format_video_report(result))
    print(f"load average after: {load_average()}; wall {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

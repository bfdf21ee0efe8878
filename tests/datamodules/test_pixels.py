"""uint8 pixels from the loaders; float [-1, 1] after ``on_after_batch_transfer``, as the float pipeline."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import decord
import lightning as L
import numpy as np
import pytest
import torch
from einops import rearrange
from PIL import Image

from datamodules.image_text import ImageTextDataModule
from datamodules.transforms import (
    batch_pixels_to_float,
    pixels_to_float,
    square_frames,
    square_frames_uint8,
    square_image,
)
from datamodules.video import VideoDataModule
from tests.datamodules.helpers import data_config, pattern

TOLERANCE = 1.0 / 127.5 + 1e-6  # one grey level


def video_config(shards: str, **overrides: object):
    base = dict(kind="video", num_frames=8, resolution=16, clip_resolution=8, batch_size=2, epoch_samples=4,
                val_samples=0)
    base.update(overrides)
    return data_config(shards, **base)


def decoded_frames(shards: Path) -> np.ndarray:
    """All frames (t h w c uint8) of the first toy-world mp4 of the shards."""
    with tarfile.open(shards / "00000.tar") as tar:
        member = next(m for m in tar if m.name.endswith(".mp4"))
        data = tar.extractfile(member).read()
    return decord.VideoReader(io.BytesIO(data), num_threads=1).get_batch(list(range(8))).asnumpy()


def smooth_frames(seed: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Random frames ``t h w c`` with both edges and gradients (the antialiasing filter has work to do)."""
    rng = np.random.default_rng(seed)
    t, h, w = shape
    ramp = np.linspace(0, 255, w)[None, None, :, None] * np.ones((t, h, 1, 3))
    noise = rng.integers(0, 256, (t, h, w, 3))
    return np.clip(0.5 * ramp + 0.5 * noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("shape", "size"), [((5, 45, 60), 16), ((3, 64, 48), 24), ((2, 20, 20), 20)])
def test_uint8_frames_match_the_float_pipeline(shape: tuple[int, int, int], size: int) -> None:
    frames = smooth_frames(0, shape)
    pixels = square_frames_uint8(frames, size)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, shape[0], size, size)
    reference = square_frames(frames, size)
    assert (pixels_to_float(pixels) - reference).abs().max() <= TOLERANCE


def test_pixels_to_float_range_and_errors() -> None:
    out = pixels_to_float(torch.tensor([0, 128, 255], dtype=torch.uint8))
    assert out.dtype == torch.float32 and out.tolist() == pytest.approx([-1.0, 0.5 / 127.5, 1.0], abs=1e-6)
    with pytest.raises(ValueError, match="float32"):
        pixels_to_float(torch.zeros(2))


def test_video_hook_matches_the_float_pipeline_on_decoded_frames(video_shards: Path) -> None:
    """A decoded clip through the uint8 path and the datamodule's hook equals the old float path."""
    dm = VideoDataModule(video_config(pattern(video_shards, 2)))
    frames = decoded_frames(video_shards)
    batch = {
        "video": torch.stack([square_frames_uint8(frames, 16)]),
        "clip_image": torch.stack([square_frames_uint8(frames[:1], 8)[:, 0]]),
        "fps": torch.tensor([30.0]),
        "key": ["k"],
        "skips": {"vfr": 0},
        "worker_id": 0,
    }
    out = dm.on_after_batch_transfer(batch, 0)
    assert out["video"].dtype == out["clip_image"].dtype == torch.float32
    assert (out["video"][0] - square_frames(frames, 16)).abs().max() <= TOLERANCE
    assert (out["clip_image"][0] - square_frames(frames[:1], 8)[:, 0]).abs().max() <= TOLERANCE
    assert out["fps"].tolist() == [30.0] and out["key"] == ["k"] and out["skips"] == {"vfr": 0}
    assert batch_pixels_to_float(out) is out and out["video"].dtype == torch.float32  # idempotent


def test_image_hook_is_exactly_the_float_pipeline() -> None:
    """PIL resizes in uint8 either way: the old ``.float() / 127.5 - 1`` and the hook agree exactly."""
    rgb = Image.fromarray(smooth_frames(1, (1, 30, 40))[0])
    pixels = square_image(rgb, 16)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 16, 16)
    old = torch.from_numpy(np.asarray(rgb.resize((21, 16), Image.Resampling.BICUBIC, reducing_gap=3.0)))
    old = rearrange(old[:, 2:18], "h w c -> c h w").float().div(127.5).sub(1.0)
    out = batch_pixels_to_float({"image": pixels[None], "images_clip": pixels[None], "caption": ["c"]})
    assert torch.equal(out["image"][0], old) and torch.equal(out["images_clip"][0], old)


class DtypeProbe(L.LightningModule):
    """Records the pixel dtypes and ranges ``training_step`` receives."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[torch.dtype, float, float]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        for key in ("video", "clip_image", "image"):
            if key in batch:
                self.seen.append((batch[key].dtype, float(batch[key].min()), float(batch[key].max())))
        return self.weight * 0.0 + self.weight.square()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("kind", ["video", "image_text"])
def test_fit_runs_the_hook(kind: str, video_shards: Path, image_shards: Path, tmp_path: Path) -> None:
    if kind == "video":
        dm = VideoDataModule(video_config(pattern(video_shards, 2)))
    else:
        dm = ImageTextDataModule(data_config(pattern(image_shards, 3), batch_size=2, epoch_samples=4,
                                             val_samples=0))
    probe = DtypeProbe()
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        use_distributed_sampler=False)
    trainer.fit(probe, datamodule=dm)
    assert len(probe.seen) == 4
    assert all(dtype == torch.float32 and -1.0 <= low <= high <= 1.0 for dtype, low, high in probe.seen)

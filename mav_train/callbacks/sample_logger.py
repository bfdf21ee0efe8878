"""Every N steps, sample a few images or videos with the EMA weights; rank zero saves them and logs to W&B.

Sampling runs on rank zero only, except under DeepSpeed ZeRO-3: there each rank holds a shard of every weight
and the forward gathers them with collectives, so every rank samples (the same number of network calls) and
only rank zero writes the result.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from typing_extensions import override

from mav_train.media import save_image_grid, save_video_grid

log = logging.getLogger(__name__)


class SampleLogger(L.Callback):
    """Conditions are taken from the first training batch and kept fixed, so samples are comparable over time."""

    def __init__(self, out_dir: str | Path, every_n_steps: int, num_samples: int, steps: int | None = None,
                 guidance_scale: float | None = None, seed: int = 0):
        self.out_dir = Path(out_dir)
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.seed = seed
        self._batch: dict | None = None

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch: dict, batch_idx: int) -> None:
        if self._batch is None:
            self._batch = {k: (v[: self.num_samples].detach().clone() if torch.is_tensor(v) else
                               (v[: self.num_samples] if isinstance(v, list) else v)) for k, v in batch.items()}
        step = trainer.global_step
        due = self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0
        if due and step != getattr(self, "_last", -1):
            self._last = step
            self.log_samples(trainer, pl_module, step)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        # Only at a normal end of training: a preempted run should spend its last seconds saving, not sampling.
        finished = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        if self.every_n_steps > 0 and finished and self._batch is not None and trainer.global_step != getattr(
                self, "_last", -1):
            self.log_samples(trainer, pl_module, trainer.global_step)

    def log_samples(self, trainer: L.Trainer, pl_module, step: int) -> None:
        if getattr(trainer.strategy, "zero_stage_3", False):
            samples = self._sample(pl_module)
            if trainer.is_global_zero:
                self._save(trainer, samples, step)
        elif trainer.is_global_zero:
            self._save(trainer, self._sample(pl_module), step)

    def _sample(self, pl_module) -> torch.Tensor:
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        was_training = pl_module.training
        pl_module.eval()
        try:
            samples = pl_module.sample_from_batch(self._batch, self.num_samples, generator=generator,
                                                  steps=self.steps, guidance_scale=self.guidance_scale)
        finally:
            pl_module.train(was_training)
        return samples.float().cpu()

    def _save(self, trainer: L.Trainer, samples: torch.Tensor, step: int) -> None:
        if samples.ndim == 5:
            fps = float(self._batch["fps"][0]) if "fps" in self._batch else 8.0
            path = save_video_grid(samples, self.out_dir / f"step{step:07d}.mp4", fps=fps)
            self._to_wandb(trainer, "samples/video", path, step, video=True, fps=fps)
        else:
            path = save_image_grid(samples, self.out_dir / f"step{step:07d}.png")
            self._to_wandb(trainer, "samples/image", path, step, video=False)
        log.info("saved samples to %s", path)

    def _to_wandb(self, trainer: L.Trainer, key: str, path: Path, step: int, video: bool, fps: float = 8.0) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                if video:
                    logger.log_video(key, [str(path)], step=step, fps=[int(round(fps))], format=["mp4"])
                else:
                    logger.log_image(key, [str(path)], step=step)

"""Training throughput in samples per second over all ranks, data loading included, logged every step."""

from __future__ import annotations

import time

import lightning as L
import torch
from typing_extensions import override


class Throughput(L.Callback):
    """Measures the wall time between consecutive batch ends, so waiting on data counts too."""

    def __init__(self, batch_key: str):
        self.batch_key = batch_key
        self._last_end: float | None = None

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        self._last_end = None

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch: dict, batch_idx: int) -> None:
        now = time.perf_counter()
        last, self._last_end = self._last_end, now
        # Embedding batches (the prior on an embedding folder) carry no pixels: count their rows.
        value = batch.get(self.batch_key, batch.get("image_emb"))
        if last is None or not torch.is_tensor(value):
            return
        samples = value.shape[0] * trainer.world_size
        pl_module.log("perf/samples_per_s", samples / max(now - last, 1e-9), on_step=True)

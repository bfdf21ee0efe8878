"""The last step of a run is always in ``last.ckpt``.

``ModelCheckpoint`` saves every ``checkpoint.every_n_steps`` steps; a run whose ``trainer.max_steps`` is not a
multiple of that (``max_steps=1900`` with checkpoints every 1200) would otherwise end with ``last.ckpt`` at the
last multiple and silently lose the steps after it. This callback saves ``last.ckpt`` once more when training ends
normally at any other step. A preempted run is left alone: the preemption callback has just saved that very step.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from typing_extensions import override

from mav_train.callbacks.preemption import Preemption

log = logging.getLogger(__name__)


class FinalCheckpoint(L.Callback):
    def __init__(self, path: str | Path, every_n_steps: int) -> None:
        self.path = Path(path)
        self.every_n_steps = every_n_steps

    def needs_save(self, trainer: L.Trainer) -> bool:
        step = trainer.global_step
        if step == 0:
            return False
        if any(isinstance(cb, Preemption) and cb.saved_step == step for cb in trainer.callbacks):
            return False
        return self.every_n_steps <= 0 or step % self.every_n_steps != 0

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.needs_save(trainer):  # every rank takes part (sharded strategies save collectively)
            trainer.save_checkpoint(self.path)
            if trainer.is_global_zero:
                log.info("saved the final step %d to %s", trainer.global_step, self.path)

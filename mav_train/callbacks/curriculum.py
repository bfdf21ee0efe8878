"""Tell the video datamodule the global step, so its workers draw fps from the curriculum at that step."""

from __future__ import annotations

import lightning as L
from typing_extensions import override


class FpsCurriculumSync(L.Callback):
    """The curriculum's state (its parameters and the step) is saved with the datamodule's state in checkpoints."""

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        datamodule = trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "set_step"):
            datamodule.set_step(trainer.global_step)
            if hasattr(datamodule, "curriculum"):
                alpha, beta = datamodule.curriculum.params_at(trainer.global_step)
                pl_module.log_dict({"data/fps_alpha": float(alpha), "data/fps_beta": float(beta)}, on_step=True)

    # on_train_start, not on_fit_start: a resumed run has its global step (and the datamodule its saved
    # curriculum step) only after on_fit_start.
    @override
    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        datamodule = trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "set_step"):
            datamodule.set_step(trainer.global_step)

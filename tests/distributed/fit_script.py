"""``python -m mav_train fit`` with test-side extras, for the multi-process tests.

usage: python tests/distributed/fit_script.py [--record-keys] [--deepspeed-cpu [--zero3]] recipe=NAME [key=value ...]

Lightning starts the other ranks by running this file again with the same arguments.
  --record-keys    every rank appends the sample keys of each training batch to RUN_DIR/keys/rank<R>.txt
  --deepspeed-cpu  DeepSpeed ZeRO-2 on CPU processes (gloo). Lightning's DeepSpeedStrategy refuses a CPU
                   accelerator; DeepSpeed itself runs there (DESIGN.md §4), so this subclass skips the CUDA
                   check and gives DeepSpeed the local rank as the device rank.
  --zero3          with --deepspeed-cpu: ZeRO stage 3 (parameters sharded across the ranks) instead of 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning as L  # noqa: E402
from lightning.fabric.utilities.seed import reset_seed  # noqa: E402
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy  # noqa: E402


class KeyRecorder(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        path = Path(trainer.default_root_dir) / "keys" / f"rank{trainer.global_rank}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(f"{trainer.global_step} {batch.get('worker_id', -1)} {' '.join(batch['key'])}\n")


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)  # everything but the "only supported on CUDA GPUs" check

    def setup_distributed(self) -> None:
        # As DeepSpeedStrategy's, without the check that device indices (None on a CPU) match local ranks.
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        import deepspeed

        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank), config=self.config, model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad], optimizer=optimizer,
            lr_scheduler=lr_scheduler, dist_init_required=False)
        return engine, ds_optimizer


def main(argv: list[str]) -> int:
    from mav_train.cli.fit import run

    callbacks = [KeyRecorder()] if "--record-keys" in argv else []
    strategy = None
    if "--deepspeed-cpu" in argv:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        batch_size = [int(a.split("=")[1]) for a in argv if a.startswith("data.batch_size=")][-1]
        strategy = CPUDeepSpeedStrategy(stage=3 if "--zero3" in argv else 2, process_group_backend="gloo",
                                        logging_batch_size_per_gpu=batch_size)
    args = [a for a in argv if not a.startswith("--")]
    return run(args, strategy=strategy, extra_callbacks=callbacks)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

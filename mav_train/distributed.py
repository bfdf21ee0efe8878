"""Strategy and cluster environment from the config, through Lightning (no hand-written process management).

``trainer.strategy`` takes Lightning's names: ``auto``, ``ddp``, ``fsdp``, ``deepspeed_stage_2``,
``deepspeed_stage_2_offload``, ``deepspeed_stage_3``, ``deepspeed_stage_3_offload``. Under SLURM (``SLURM_*``
variables set by ``srun``), Lightning's SLURMEnvironment is used with automatic requeue on SIGUSR1.
"""

from __future__ import annotations

import os
import signal

from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy, Strategy
from omegaconf import DictConfig

DEEPSPEED = ("deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload", "deepspeed_stage_3",
             "deepspeed_stage_3_offload")
KNOWN = ("auto", "ddp", "ddp_spawn", "fsdp", "single_device", *DEEPSPEED)


def build_strategy(trainer: DictConfig) -> Strategy | str:
    name = str(trainer.strategy)
    if name not in KNOWN:
        raise ValueError(f"trainer.strategy '{name}' is not one of {', '.join(KNOWN)}")
    if name == "ddp":
        # Frozen spatial layers leave no unused *trainable* parameters, so the fast path is safe.
        return DDPStrategy(find_unused_parameters=False, cluster_environment=cluster_environment())
    return name


def cluster_environment() -> SLURMEnvironment | None:
    """SLURM with auto-requeue on SIGUSR1 when running inside an ``srun`` step, else Lightning's default."""
    if SLURMEnvironment.detect() and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return SLURMEnvironment(auto_requeue=True, requeue_signal=signal.SIGUSR1)
    return None

"""Strategy and cluster environment from the config, through Lightning (no hand-written process management).

``trainer.strategy`` takes Lightning's names, each built here as a Lightning strategy object:

- ``auto``, ``single_device``, ``ddp``, ``ddp_spawn``: data parallel.
- ``fsdp``, ``fsdp_cpu_offload``: ``FSDPStrategy`` with ``use_orig_params`` (D^t trains only some layers) and
  every UNet wrapped on its own, so the EMA copy is sharded exactly like the live network.
- ``deepspeed_stage_1``, ``deepspeed_stage_2``, ``deepspeed_stage_2_offload`` (optimizer state in CPU memory),
  ``deepspeed_stage_3``, ``deepspeed_stage_3_offload`` (optimizer state and parameters in CPU memory).

Under SLURM (``srun`` sets ``SLURM_*``) the cluster environment is Lightning's ``SLURMEnvironment`` with
``auto_requeue=False``: the requeue signal is handled by :class:`mav_train.callbacks.preemption.Preemption`,
which saves at a step boundary on every rank (Lightning's own handler saves from inside the signal handler,
wherever the step happens to be), and the sbatch script (``mav_train/slurm/train.sbatch``) requeues the job after the
training process has exited cleanly.
"""

from __future__ import annotations

import os

from lightning.pytorch.plugins.environments import ClusterEnvironment, SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy, Strategy
from omegaconf import DictConfig, ListConfig

DEEPSPEED = {
    # name: (ZeRO stage, offload optimizer state, offload parameters)
    "deepspeed_stage_1": (1, False, False),
    "deepspeed_stage_2": (2, False, False),
    "deepspeed_stage_2_offload": (2, True, False),
    "deepspeed_stage_3": (3, False, False),
    "deepspeed_stage_3_offload": (3, True, True),
}
FSDP = {"fsdp": False, "fsdp_cpu_offload": True}  # name: CPU offload
PLAIN = ("auto", "single_device", "ddp", "ddp_spawn")
KNOWN = (*PLAIN, *FSDP, *DEEPSPEED)


def check_strategy_name(name: str) -> None:
    if name not in KNOWN:
        raise ValueError(f"trainer.strategy '{name}' is not one of {', '.join(KNOWN)}")


def under_slurm() -> bool:
    """True inside a SLURM job step that Lightning treats as a SLURM cluster (not an interactive shell)."""
    return SLURMEnvironment.detect() and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def cluster_environment() -> ClusterEnvironment | None:
    """SLURM (ranks, addresses from ``SLURM_*``; requeue is the Preemption callback's), else the default."""
    if under_slurm():
        return SLURMEnvironment(auto_requeue=False)
    return None


def unet_wrap_policy():
    """FSDP wraps each UNet (the live network and its EMA copy) as a unit, so both shard identically."""
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from mav_train.nn.unet import UNet

    return ModuleWrapPolicy({UNet})


def world_size_hint(trainer: DictConfig) -> int:
    """Processes the config asks for when it says so explicitly (0 when ``devices`` is ``auto`` / ``-1``)."""
    devices = trainer.devices
    if isinstance(devices, int) and devices > 0:
        return devices * trainer.num_nodes
    if isinstance(devices, str) and devices.isdigit():
        return int(devices) * trainer.num_nodes
    if isinstance(devices, (list, tuple, ListConfig)):
        return len(devices) * trainer.num_nodes
    return 0


def build_strategy(trainer: DictConfig, batch_size: int = 1) -> Strategy | str:
    """``trainer.strategy`` → a Lightning strategy object (or ``auto`` / ``single_device`` / ``ddp_spawn``).

    ``batch_size`` (per device) is DeepSpeed's ``train_micro_batch_size_per_gpu``: Lightning would read it
    from the loader's batch sampler, which a loader of ready-made batches does not have.
    """
    name = str(trainer.strategy)
    check_strategy_name(name)
    if name == "auto" and world_size_hint(trainer) > 1:
        name = "ddp"  # what Lightning would pick, with our DDP settings
    if name == "ddp":
        # Every trainable parameter gets a gradient each step (video components freeze the unused text branch),
        # so DDP need not search the graph for unused ones.
        return DDPStrategy(find_unused_parameters=False)
    if name in FSDP:
        return FSDPStrategy(cpu_offload=FSDP[name], use_orig_params=True, auto_wrap_policy=unet_wrap_policy())
    if name in DEEPSPEED:
        stage, offload_optimizer, offload_parameters = DEEPSPEED[name]
        return DeepSpeedStrategy(stage=stage, offload_optimizer=offload_optimizer,
                                 offload_parameters=offload_parameters, logging_batch_size_per_gpu=batch_size)
    return name


def plugins(strategy: Strategy | str) -> list:
    """Trainer plugins: atomic checkpoint writes with safe reads (:class:`AtomicCheckpointIO`), and the cluster
    environment unless ``strategy`` (an object) already carries one.

    They go in as plugins rather than into each strategy so that string-named strategies get them too.
    DeepSpeed writes its checkpoint directories itself, not through the checkpoint IO plugin.
    """
    from mav_train.checkpoint_io import AtomicCheckpointIO

    out: list = [AtomicCheckpointIO()]
    env = cluster_environment()
    if env is not None and getattr(strategy, "cluster_environment", None) is None:
        out.append(env)
    return out

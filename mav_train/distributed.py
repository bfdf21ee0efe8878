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

import torch
from lightning.pytorch.plugins.environments import ClusterEnvironment, SLURMEnvironment
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
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


class BF16MixedPrecision(MixedPrecision):
    """Lightning's ``bf16-mixed``, except that it clips the gradients of fused AdamW (every component's
    optimiser). Lightning refuses to clip for an optimiser that unscales gradients itself, because under fp16's
    loss scaler they are still scaled when clipping runs; bf16 has no scaler, so they are the true gradients and
    clipping them is what ``trainer.gradient_clip_val`` asks for. Without this every ``bf16-mixed`` recipe stopped
    at its first step. (Under ``16-mixed`` the components use unfused AdamW instead: ``uses_fused_adamw``.)"""

    def __init__(self, device: str):
        super().__init__("bf16-mixed", device)

    def clip_gradients(self, optimizer, clip_val=0.0, gradient_clip_algorithm=None):
        assert self.scaler is None  # bf16: nothing to unscale
        kwargs = {} if gradient_clip_algorithm is None else {"gradient_clip_algorithm": gradient_clip_algorithm}
        Precision.clip_gradients(self, optimizer, clip_val, **kwargs)


def uses_fused_adamw(precision) -> bool:
    """Fused AdamW unscales fp16 gradients inside its step, after Lightning would clip them (Lightning refuses,
    and FSDP's plugin would clip the scaled gradients): under ``16-mixed`` the components take unfused AdamW."""
    return str(precision) not in ("16-mixed", "16")


def precision_plugin(precision, strategy: Strategy | str, accelerator: str) -> Precision | None:
    """``bf16-mixed`` for a plain or DDP strategy: :class:`BF16MixedPrecision` (FSDP brings a precision plugin
    of its own, which clips as it should; DeepSpeed: :func:`deepspeed_precision`). ``None``: Lightning's plugin
    for the flag."""
    if str(precision) != "bf16-mixed" or isinstance(strategy, (DeepSpeedStrategy, FSDPStrategy)):
        return None  # (build_strategy makes every DeepSpeed and FSDP name an object of these classes)
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return BF16MixedPrecision("cuda" if gpu else "cpu")


def deepspeed_precision(precision, strategy: Strategy | str):
    """The Trainer's precision flag under DeepSpeed, where ``bf16-mixed`` becomes DeepSpeed's own torch autocast.

    Lightning maps ``bf16-mixed`` to DeepSpeed's ``bf16`` mode, which casts the whole module to bf16: the
    tensors a component makes inside its step (the diffusion noise, timestep and fps embeddings) are fp32 and
    the first convolution refuses them, and the EMA copy, also in the module, would be kept in bf16, where a
    0.999-decay update is below its rounding step. With ``torch_autocast`` the weights, the optimiser's and the
    EMA stay fp32, the forward runs under ``torch.autocast(bfloat16)`` and linear and convolution gradients are
    reduced in bf16. Any other precision or strategy is returned unchanged."""
    if str(precision) != "bf16-mixed" or not isinstance(strategy, DeepSpeedStrategy):
        return precision
    strategy.config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    return "32-true"


def plugins(strategy: Strategy | str, precision: Precision | None = None) -> list:
    """Trainer plugins: atomic checkpoint writes with safe reads (:class:`AtomicCheckpointIO`), the cluster
    environment unless ``strategy`` (an object) already carries one, and the precision plugin when given.

    They go in as plugins rather than into each strategy so that string-named strategies get them too.
    DeepSpeed writes its checkpoint directories itself, not through the checkpoint IO plugin.
    """
    from mav_train.checkpoint_io import AtomicCheckpointIO

    out: list = [AtomicCheckpointIO()]
    env = cluster_environment()
    if env is not None and getattr(strategy, "cluster_environment", None) is None:
        out.append(env)
    if precision is not None:
        out.append(precision)
    return out

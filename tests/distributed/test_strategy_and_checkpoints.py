"""Strategy objects from the config, the newest-checkpoint rule of resume, and consolidating a plain file."""

from __future__ import annotations

import os

import pytest
import torch
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy

from mav_train.checkpoint_io import AtomicCheckpointIO
from mav_train.checkpoints import consolidate, newest_checkpoint
from mav_train.config.load import load_config
from mav_train.distributed import build_strategy, plugins
from mav_train.training import PREEMPT_CKPT, resume_checkpoint


def trainer_cfg(*overrides: str):
    return load_config("demo/decoder", list(overrides)).trainer


def test_strategy_names_become_lightning_strategies():
    ddp = build_strategy(trainer_cfg("trainer.strategy=ddp"))
    assert isinstance(ddp, DDPStrategy) and not isinstance(ddp, DeepSpeedStrategy)
    assert isinstance(build_strategy(trainer_cfg("trainer.devices=4")), DDPStrategy)  # auto with 4 devices
    assert build_strategy(trainer_cfg()) == "auto"
    fsdp = build_strategy(trainer_cfg("trainer.strategy=fsdp_cpu_offload"))
    assert isinstance(fsdp, FSDPStrategy) and fsdp.cpu_offload.offload_params
    ds = build_strategy(trainer_cfg("trainer.strategy=deepspeed_stage_3_offload"), batch_size=6)
    zero = ds.config["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_optimizer"]["device"] == "cpu"
    assert zero["offload_param"]["device"] == "cpu" and ds.config["train_micro_batch_size_per_gpu"] == 6
    ds2 = build_strategy(trainer_cfg("trainer.strategy=deepspeed_stage_2"))
    assert ds2.config["zero_optimization"]["stage"] == 2 and "offload_optimizer" not in ds2.config[
        "zero_optimization"]
    with pytest.raises(ValueError, match="deepspeed_stage_9"):
        build_strategy(trainer_cfg("trainer.strategy=deepspeed_stage_9"))


def test_slurm_environment_without_lightnings_requeue_handler(monkeypatch):
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    (io,) = plugins("auto")  # atomic checkpoint writes, always
    assert isinstance(io, AtomicCheckpointIO)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "mav-demo-decoder")
    _, env = plugins("auto")
    assert isinstance(env, SLURMEnvironment) and not env.auto_requeue
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive allocation: not a SLURM-launched run
    assert len(plugins("auto")) == 1


def fake_checkpoint(path, step: int) -> None:
    torch.save({"global_step": step, "state_dict": {"network.w": torch.full((2,), float(step))},
                "hyper_parameters": {"config": {}}, "optimizer_states": [{"x": 1}]}, path)


def test_resume_picks_the_checkpoint_with_the_highest_step(tmp_path):
    cfg = load_config("demo/decoder", [f"run_dir={tmp_path}"])
    assert resume_checkpoint(cfg, tmp_path) is None
    fake_checkpoint(tmp_path / "last.ckpt", 4)
    fake_checkpoint(tmp_path / PREEMPT_CKPT, 7)
    fake_checkpoint(tmp_path / "hpc_ckpt_1.ckpt", 5)
    (tmp_path / "hpc_ckpt_2.ckpt").write_bytes(b"half-written")  # unreadable: ignored
    assert resume_checkpoint(cfg, tmp_path) == str(tmp_path / PREEMPT_CKPT)
    fake_checkpoint(tmp_path / "last.ckpt", 7)  # same step, written later: the later one
    assert newest_checkpoint([tmp_path / PREEMPT_CKPT, tmp_path / "last.ckpt"]) == tmp_path / "last.ckpt"
    never = load_config("demo/decoder", [f"run_dir={tmp_path}", "checkpoint.resume=never"])
    assert resume_checkpoint(never, tmp_path) is None


def test_consolidate_a_plain_file_drops_the_optimizer(tmp_path):
    fake_checkpoint(tmp_path / "last.ckpt", 3)
    out = consolidate(tmp_path / "last.ckpt")
    assert out == tmp_path / "last.consolidated.ckpt"
    plain = torch.load(out, weights_only=False)
    assert "optimizer_states" not in plain and plain["global_step"] == 3
    assert torch.equal(plain["state_dict"]["network.w"], torch.full((2,), 3.0))
    with pytest.raises(ValueError, match="neither a checkpoint file"):
        consolidate(tmp_path)

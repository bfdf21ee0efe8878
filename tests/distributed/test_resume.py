"""Preemption and exact resume: SIGUSR1 / SIGTERM save a checkpoint at a step boundary and stop; the rerun
continues with the same step, optimizer, LR schedule, EMA, fps curriculum and data position."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules.factory import build_datamodule
from mav_train.checkpoints import checkpoint_step
from mav_train.components.registry import component_class
from mav_train.config.load import load_config
from mav_train.config.run_dir import with_run_dir
from mav_train.training import PREEMPT_CKPT, build_trainer, resume_checkpoint
from tests.distributed.helpers import TINY, global_step, mav_train, subprocess_env


class SignalAt(L.Callback):
    """Sends ``sig`` to this very process once ``step`` optimizer steps are done (as ``kill`` would)."""

    def __init__(self, step: int, sig: signal.Signals):
        self.step, self.sig = step, sig

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.sig)


class Snapshot(L.Callback):
    """Keys of every training batch, and the full training state at train start (after a resume) and end."""

    def __init__(self):
        self.keys: list[list[str]] = []
        self.start: dict | None = None
        self.end: dict | None = None

    @staticmethod
    def state(trainer: L.Trainer, module) -> dict:
        optimizer = trainer.optimizers[0].state_dict()
        return {
            "global_step": trainer.global_step,
            "optimizer": {k: {n: t.clone() for n, t in v.items()} for k, v in optimizer["state"].items()},
            "scheduler": dict(trainer.lr_scheduler_configs[0].scheduler.state_dict()),
            "network": {k: v.clone() for k, v in module.network.state_dict().items()},
            "ema": {k: v.clone() for k, v in module.ema_network.state_dict().items()},
            "data": dict(trainer.datamodule.state_dict()),
        }

    def on_train_start(self, trainer, pl_module):
        self.start = self.state(trainer, pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.keys.append(list(batch["key"]))

    def on_train_end(self, trainer, pl_module):
        self.end = self.state(trainer, pl_module)


def fit(run_dir: Path, cache: Path, callbacks: list[L.Callback], max_steps: int = 6) -> L.Trainer:
    """What ``python -m mav_train fit`` does, in this process (so the live state can be compared)."""
    overrides = [*TINY, "logger=none", f"run_dir={run_dir}", f"cache_dir={cache}",
                 f"trainer.max_steps={max_steps}", "model.freeze_spatial=false"]
    cfg = with_run_dir(load_config("demo/temporal_decoder", overrides))
    L.seed_everything(0)
    datamodule = build_datamodule(cfg.data, cache_dir=cfg.cache_dir)
    module = component_class(cfg.component)(cfg)
    trainer = build_trainer(cfg, run_dir, extra_callbacks=callbacks)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg, run_dir))
    return trainer


def assert_same(a, b, path: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), path
    else:
        assert a == b, (path, a, b)


@pytest.mark.parametrize("sig", [signal.SIGUSR1])
def test_signal_saves_at_a_step_boundary_and_the_rerun_resumes_exactly(tmp_path, demo_cache, sig):
    run_dir = tmp_path / "run"
    first = Snapshot()
    trainer = fit(run_dir, demo_cache, [SignalAt(2, sig), first])
    # The handler only set a flag; the step in progress finished and the next boundary saved and stopped.
    assert trainer.global_step == 3 and global_step(run_dir / PREEMPT_CKPT) == 3
    assert signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler), "handler not restored"
    # The checkpoint holds the state the run ended with (EMA included: it is updated before checkpoints are).
    saved = torch.load(run_dir / PREEMPT_CKPT, map_location="cpu", weights_only=False)
    assert_same(first.end["ema"], {k[len("ema_network."):]: v for k, v in saved["state_dict"].items()
                                   if k.startswith("ema_network.")})
    assert_same(first.end["network"], {k[len("network."):]: v for k, v in saved["state_dict"].items()
                                       if k.startswith("network.")})
    assert saved["VideoDataModule"]["batches_consumed"] == 3

    second = Snapshot()
    trainer = fit(run_dir, demo_cache, [second])
    assert trainer.global_step == 6
    # Everything the first run ended with is what the second run starts from: step, optimizer moments,
    # LR schedule, live and EMA weights, data position and fps curriculum step.
    # (The curriculum step is the step the next batch is drawn for: the last one trained on plus one.)
    assert first.end["data"].pop("step") == 2 and second.start["data"].pop("step") == 3
    assert_same(first.end, second.start)
    assert second.start["data"]["batches_consumed"] == 3
    assert second.start["scheduler"]["last_epoch"] == 3
    # The data stream continues: the resumed run does not replay the samples the first run began with.
    assert second.keys[0] != first.keys[0]
    assert len(first.keys) + len(second.keys) == 6


def wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"fit exited early ({proc.returncode}):\n{proc.stdout.read()[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out:\n{proc.stdout.read()[-4000:]}")
        time.sleep(0.2)


@pytest.mark.slow
def test_kill_a_local_fit_and_rerun_the_same_command(tmp_path, demo_cache):
    """kill -USR1, rerun, kill -TERM, rerun: each rerun resumes where the last one stopped; the last ends.
    A kill -USR2 before the first stop prints the stacks and changes nothing."""
    run_dir = tmp_path / "run"
    cmd = mav_train("fit", "recipe=demo/temporal_decoder", *TINY, "logger=csv", "trainer.max_steps=16",
                    "checkpoint.every_n_steps=2", f"run_dir={run_dir}")
    env = subprocess_env(demo_cache)
    steps = []
    for sig in (signal.SIGUSR1, signal.SIGTERM):
        before = global_step(run_dir / PREEMPT_CKPT) if (run_dir / PREEMPT_CKPT).exists() else 0
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        # Wait until this process has written a checkpoint of its own (every 2 steps), then signal it.
        last = run_dir / "last.ckpt"
        wait_for(lambda: last.exists() and (checkpoint_step(last) or 0) > before, 120, proc)
        if sig == signal.SIGUSR1:
            proc.send_signal(signal.SIGUSR2)  # where is it? every thread's stack to stderr, and it goes on
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out[-4000:]
        assert f"received {sig.name}" in out, out[-4000:]
        if sig == signal.SIGUSR1:
            assert "most recent call first" in out and "mav_train/cli/fit.py" in out, out[-4000:]
        steps.append(global_step(run_dir / PREEMPT_CKPT))
        assert before < steps[-1] < 16, (steps, out[-3000:])
        if before:
            assert "resuming from" in out, out[-4000:]
    final = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    out = final.stdout + final.stderr
    assert final.returncode == 0, out[-4000:]
    assert "resuming from" in out and "done: step 16" in out, out[-4000:]
